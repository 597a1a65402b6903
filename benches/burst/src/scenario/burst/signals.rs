//! Signals between meeting participants, and their check: each sender numbers its
//! signals to each receiver 0, 1, 2 … in `data` (`{"f":<sender>,"n":<count>,"k":…}`),
//! and each receiver checks, per sender, that every number arrives once and in order.
//!
//! A sender keeps one signal in flight per receiver and numbers a signal only once the
//! server accepted it (its reply), so a refused signal retried later cannot overtake
//! the next one: the numbers a receiver must see are exactly `0..accepted`.

use std::sync::LazyLock;

use crate::client::scan::{self, push_u64, Key};

/// `"data"`: a signal's payload, the last key of a relayed `signal` frame.
static DATA: LazyLock<Key> = LazyLock::new(|| Key::new("data"));
/// `"f"`: the sender's client number inside `data`.
static FROM: LazyLock<Key> = LazyLock::new(|| Key::new("f"));
/// `"n"`: the signal's number from that sender to this receiver.
static NUMBER: LazyLock<Key> = LazyLock::new(|| Key::new("n"));

/// A receiver's check of one sender's signals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairCheck {
    /// Numbers received once, in order or after a skip.
    pub received: u64,
    /// The number expected next.
    pub next: u64,
    /// Numbers seen again (or late).
    pub duplicates: u64,
    /// Numbers skipped (never seen before a later one).
    pub skipped: u64,
}

impl PairCheck {
    /// Checks signal number `n`.
    pub fn observe(&mut self, n: u64) {
        if n < self.next {
            self.duplicates += 1;
            return;
        }
        self.skipped += n - self.next;
        self.received += 1;
        self.next = n + 1;
    }
}

/// A receiver's checks, by sender client (a meeting has few participants: a list).
#[derive(Clone, Debug, Default)]
pub struct Inbox {
    /// `(sender client, check)`.
    pub from: Vec<(usize, PairCheck)>,
}

impl Inbox {
    /// Checks signal `n` from `sender`.
    pub fn observe(&mut self, sender: usize, n: u64) {
        match self.from.iter_mut().find(|(s, _)| *s == sender) {
            Some((_, check)) => check.observe(n),
            None => {
                let mut check = PairCheck::default();
                check.observe(n);
                self.from.push((sender, check));
            }
        }
    }

    /// Signals received from `sender`.
    pub fn received_from(&self, sender: usize) -> u64 {
        self.from
            .iter()
            .find(|(s, _)| *s == sender)
            .map_or(0, |(_, c)| c.received)
    }
}

/// The sender and number of a relayed `signal` frame, from its `data`.
pub fn parse(frame: &[u8]) -> Option<(usize, u64)> {
    let data = scan::value(frame, &DATA)?;
    let from = scan::u64_value(data, &FROM)?;
    let n = scan::u64_value(data, &NUMBER)?;
    Some((usize::try_from(from).ok()?, n))
}

/// What a signal carries besides its numbers: the first to a peer is the offer (from
/// the participant who joined later) or the answer, the rest ICE candidates.
pub fn kind(n: u64, offering: bool) -> &'static str {
    match (n, offering) {
        (0, true) => "offer",
        (0, false) => "answer",
        _ => "candidate",
    }
}

/// Writes a `signal` request into `out` (cleared first).
pub fn write(out: &mut Vec<u8>, id: u64, meeting: &str, to: &str, from: usize, n: u64, kind: &str) {
    out.clear();
    out.extend_from_slice(br#"{"op":"signal","id":"#);
    push_u64(out, id);
    out.extend_from_slice(br#","meeting":""#);
    out.extend_from_slice(meeting.as_bytes());
    out.extend_from_slice(br#"","to":""#);
    out.extend_from_slice(to.as_bytes());
    out.extend_from_slice(br#"","data":{"f":"#);
    push_u64(out, from as u64);
    out.extend_from_slice(br#","n":"#);
    push_u64(out, n);
    out.extend_from_slice(br#","k":""#);
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(br#""}}"#);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_check_counts_order_skips_and_duplicates() {
        let mut c = PairCheck::default();
        for n in [0, 1, 2] {
            c.observe(n);
        }
        assert_eq!((c.received, c.next, c.skipped, c.duplicates), (3, 3, 0, 0));
        c.observe(2);
        c.observe(5);
        c.observe(3);
        assert_eq!((c.received, c.next, c.skipped, c.duplicates), (4, 6, 2, 2));
    }

    #[test]
    fn inbox_keys_by_sender() {
        let mut inbox = Inbox::default();
        inbox.observe(7, 0);
        inbox.observe(9, 0);
        inbox.observe(7, 1);
        assert_eq!(inbox.received_from(7), 2);
        assert_eq!(inbox.received_from(9), 1);
        assert_eq!(inbox.received_from(8), 0);
    }

    #[test]
    fn written_signals_parse_back_as_relayed() {
        let mut out = Vec::new();
        write(&mut out, 12, "m-abc", "p-x_y", 1234, 56, kind(0, true));
        let sent: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(sent["op"], "signal");
        assert_eq!(sent["id"], 12);
        assert_eq!(sent["to"], "p-x_y");
        assert_eq!(
            sent["data"],
            serde_json::json!({"f": 1234, "n": 56, "k": "offer"})
        );
        // The server relays `data` re-encoded compactly, last.
        let relayed = format!(
            r#"{{"op":"signal","meeting":"m-abc","from":"p-q","data":{}}}"#,
            sent["data"]
        );
        assert_eq!(parse(relayed.as_bytes()), Some((1234, 56)));
        assert_eq!(parse(br#"{"op":"signal","data":{"k":"x"}}"#), None);
        assert_eq!(kind(0, false), "answer");
        assert_eq!(kind(3, true), "candidate");
    }
}
