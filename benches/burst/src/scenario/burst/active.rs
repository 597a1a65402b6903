//! A client with a session: subscribe to its team room (with `since`), then one loop
//! — write what is due (chat sends, retries, receipts, meeting requests, signals),
//! flush, wait for the socket, a wake-up or a timer, and handle every frame of the
//! read with one clock read. Frames are routed by a scan of `op`, the hot one (`msg`)
//! by a prefix compare; only rare meeting frames are parsed as JSON.

use std::future::pending;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::super::micros_since;
use super::backoff::retry_after_in_frame;
use super::chat::{self, ChatCtx};
use super::room::Seen;
use super::shard::{Local, Phase, Slot};
use super::state::ClientState;
use super::tally::Counts;
use super::wire::{Req, Requests, Wire};
use crate::client::scan::{self, push_u64, Key};
use crate::client::{Conn, ConnError};

/// Longest sleep with nothing due: a bound, so that a missed wake-up costs little.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Wait before retrying when a refusal names no `retry_after_ms`.
const DEFAULT_RETRY: Duration = Duration::from_millis(100);
/// `"last_seq"`: where live messages start, in a subscribe reply.
static LAST_SEQ: LazyLock<Key> = LazyLock::new(|| Key::new("last_seq"));

/// How a session ended.
pub enum End {
    /// The run is over.
    Stop,
    /// The connection was lost.
    Lost(ConnError),
}

/// The meeting id channel of a participant who is not the host.
pub type MeetingId = Option<watch::Receiver<Option<Arc<str>>>>;

/// When the frames of one read arrived.
struct Arrival {
    /// µs since the start.
    now_us: u64,
    /// Whether the ramp is over.
    after_ramp: bool,
}

/// Serves one session until the stop or the connection's loss.
pub async fn serve(
    local: &Local,
    slot: &Slot,
    conn: &mut Conn,
    ids: &mut MeetingId,
    cid_prefix: &str,
) -> End {
    let g = &*local.g;
    let ramp_end = g.at(g.settings.ramp);
    let cx = local.chat_ctx(slot.index, cid_prefix);
    let mut reqs = Requests::default();
    let mut buf = Vec::with_capacity(256);
    {
        let mut st = slot.state.borrow_mut();
        st.room.connecting();
        let since = st.room.since();
        let mut w = Wire {
            sink: &mut *conn,
            reqs: &mut reqs,
            buf: &mut buf,
        };
        w.request(Req::Subscribe, |b, id| {
            write_subscribe(b, id, cx.room_json, since)
        });
    }
    // One clock read per wake-up: the time frames arrived is also the time of the
    // work that follows them.
    let mut now = Instant::now();
    // One timer and one wake-up registration for the session, not one per frame: the
    // timer wheel and the waiter list were a tenth of the generator's CPU.
    let sleep = tokio::time::sleep_until(now.into());
    tokio::pin!(sleep);
    let notified = slot.wake.notified();
    tokio::pin!(notified);
    let lost = loop {
        let wake = {
            let mut st = slot.state.borrow_mut();
            let mut c = local.counts.borrow_mut();
            let mut w = Wire {
                sink: &mut *conn,
                reqs: &mut reqs,
                buf: &mut buf,
            };
            work(local, slot, &cx, &mut st, &mut c, &mut w, ids, now)
        };
        if let Err(e) = conn.flush().await {
            break ConnError::Io(e);
        }
        if local.phase.get() == Phase::Stop {
            conn.queue_close(1000);
            let _ = conn.flush().await;
            return End::Stop;
        }
        let waiting_id = slot
            .state
            .borrow()
            .meeting
            .as_ref()
            .is_some_and(|m| m.needs_id());
        // Re-armed only to fire earlier (or once it fired): an early wake-up just
        // finds nothing due.
        let deadline = sleep.deadline().into_std();
        if wake < deadline || deadline <= now {
            sleep.as_mut().reset(wake.into());
        }
        tokio::select! {
            biased; // in this order, without drawing a random start on every wake-up
            read = conn.fill() => if let Err(e) = read { break e },
            () = &mut notified => notified.set(slot.wake.notified()),
            () = &mut sleep => {}
            () = id_changed(ids, waiting_id) => {}
        }
        now = Instant::now();
        let at = Arrival {
            now_us: micros_since(g.epoch, now),
            after_ramp: now >= ramp_end,
        };
        let mut st = slot.state.borrow_mut();
        let mut c = local.counts.borrow_mut();
        let end = loop {
            match conn.next_message() {
                Ok(Some(msg)) => on_frame(
                    local,
                    slot.index,
                    &cx,
                    &mut st,
                    &mut c,
                    &mut reqs,
                    msg.payload,
                    &at,
                    now,
                ),
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        if let Some(e) = end {
            break e;
        }
    };
    // A close frame is echoed before the socket goes.
    let _ = conn.flush().await;
    End::Lost(lost)
}

/// Resolves when the host published the meeting's id (never when not waiting for it).
async fn id_changed(ids: &mut MeetingId, waiting: bool) {
    match ids {
        Some(rx) if waiting => {
            if rx.changed().await.is_err() {
                pending::<()>().await;
            }
        }
        _ => pending().await,
    }
}

/// Writes what is due at `now`; returns when to wake up next.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
fn work(
    local: &Local,
    slot: &Slot,
    cx: &ChatCtx,
    st: &mut ClientState,
    c: &mut Counts,
    w: &mut Wire<Conn>,
    ids: &mut MeetingId,
    now: Instant,
) -> Instant {
    let s = &local.g.settings;
    let load = local.phase.get() == Phase::Load;
    for _ in 0..slot.pending_sends.replace(0) {
        if load && st.chat.can_send() {
            st.chat.send_new(cx, w, now, c);
        } else {
            c.send_skipped += 1;
        }
    }
    st.chat.retry_due(cx, w, now, c);
    if st.room.subscribed {
        st.chat
            .receipts(cx, w, st.room.last(), now, s.read_interval);
    }
    let mut wake = now + MAX_SLEEP;
    if let Some(m) = st.meeting.as_mut() {
        if m.needs_id() {
            if let Some(id) = ids.as_mut().and_then(|rx| rx.borrow_and_update().clone()) {
                m.learn_id(id);
            }
        }
        let mx = local.meet_ctx(slot.index, m.index);
        m.work(&mx, w, now);
        if let Some(t) = m.next_due(&mx) {
            wake = wake.min(t);
        }
    }
    if let Some(t) = st.chat.next_due() {
        wake = wake.min(t);
    }
    wake.max(now)
}

/// Handles one frame.
#[allow(clippy::too_many_arguments)] // the hot path: plain references, no bundling
fn on_frame(
    local: &Local,
    client: usize,
    cx: &ChatCtx,
    st: &mut ClientState,
    c: &mut Counts,
    reqs: &mut Requests,
    p: &[u8],
    at: &Arrival,
    now: Instant,
) {
    if let Some(seq) = scan::msg_seq_fast(p) {
        return on_msg(local, client, st, c, p, seq, at);
    }
    match scan::op(p) {
        Some(b"msg") => match scan::u64_value(p, &scan::SEQ) {
            Some(seq) => on_msg(local, client, st, c, p, seq, at),
            None => c.note(format!(
                "client {client}: msg without seq: {}",
                String::from_utf8_lossy(p)
            )),
        },
        Some(b"reply") => {
            let Some(req) =
                scan::u64_value(p, &scan::ID).and_then(|id| reqs.take(id).map(|r| (id, r)))
            else {
                return;
            };
            on_reply(local, client, cx, st, c, req, p, now);
        }
        Some(b"error") => {
            let req = scan::u64_value(p, &scan::ID).and_then(|id| reqs.take(id).map(|r| (id, r)));
            on_error(local, client, cx, st, c, req, p, now);
        }
        Some(b"signal") => {
            if let Some(m) = st.meeting.as_mut() {
                m.on_signal(p);
            }
        }
        Some(b"meeting.event") => {
            if let Some(m) = st.meeting.as_mut() {
                m.on_event(&local.meet_ctx(client, m.index), p);
            }
        }
        // Receipts and presence pushes: the server's business, not checked here.
        _ => {}
    }
}

/// A message of the team room.
fn on_msg(
    local: &Local,
    client: usize,
    st: &mut ClientState,
    c: &mut Counts,
    p: &[u8],
    seq: u64,
    at: &Arrival,
) {
    let seen = st.room.observe(seq);
    match seen {
        Seen::Next | Seen::Gap => {
            c.deliveries += 1;
            let second = c.timeline.second(at.now_us / 1_000_000);
            second.deliveries += 1;
            if st.room.is_live(seq) {
                if let Some(stamp) = chat::stamp(p, local.pad.len()) {
                    let us = at.now_us.saturating_sub(stamp);
                    second.record_delivery(us);
                    c.delivery.record(us);
                    if at.after_ramp {
                        c.delivery_after_ramp.record(us);
                    }
                    local.recent.borrow_mut().record(us);
                }
            } else {
                c.replayed += 1;
            }
            if seen == Seen::Gap {
                c.note(format!(
                    "client {client}: seq {seq} after {} gaps",
                    st.room.gap_events
                ));
            }
        }
        Seen::Repeat => c.note(format!(
            "client {client}: seq {seq} again or late (last {})",
            st.room.last()
        )),
        Seen::Dropped => c.resync_dropped += 1,
    }
}

#[allow(clippy::too_many_arguments)]
fn on_reply(
    local: &Local,
    client: usize,
    cx: &ChatCtx,
    st: &mut ClientState,
    c: &mut Counts,
    (id, req): (u64, Req),
    p: &[u8],
    now: Instant,
) {
    match req {
        Req::Subscribe => st
            .room
            .subscribed(scan::u64_value(p, &LAST_SEQ).unwrap_or(0)),
        Req::Send => {
            st.chat.on_reply(cx, id, p, now, c);
        }
        Req::Create | Req::Join | Req::Signal(_) => {
            let Some(m) = st.meeting.as_mut() else { return };
            let mx = local.meet_ctx(client, m.index);
            match req {
                Req::Create => m.on_created(&mx, p, c),
                Req::Join => m.on_joined(&mx, p, now, c),
                Req::Signal(k) => m.on_signal_answer(&mx, k, Ok(()), now, c),
                _ => {}
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn on_error(
    local: &Local,
    client: usize,
    cx: &ChatCtx,
    st: &mut ClientState,
    c: &mut Counts,
    req: Option<(u64, Req)>,
    p: &[u8],
    now: Instant,
) {
    let retry = (scan::str_value_is(p, &scan::CODE, b"overloaded")
        || scan::str_value_is(p, &scan::CODE, b"rate_limited"))
    .then(|| retry_after_in_frame(p).unwrap_or(DEFAULT_RETRY));
    let text = || format!("client {client}: {}", String::from_utf8_lossy(p));
    match req {
        None => {
            c.stray_errors += 1;
            c.note(text());
        }
        Some((_, Req::Subscribe)) => c.note(text()),
        Some((id, Req::Send)) => match retry {
            Some(wait) => {
                st.chat.on_refused(id, wait, now);
            }
            None => {
                c.note(text());
                st.chat.on_failed(cx, id, c);
            }
        },
        Some((_, req)) => {
            let Some(m) = st.meeting.as_mut() else { return };
            let mx = local.meet_ctx(client, m.index);
            match (req, retry) {
                (Req::Signal(k), Some(wait)) => m.on_signal_answer(&mx, k, Err(Some(wait)), now, c),
                (Req::Signal(k), None) => {
                    c.note(text());
                    m.on_signal_answer(&mx, k, Err(None), now, c);
                }
                (req, Some(wait)) => m.on_refused(req, wait, now, c),
                (_, None) => m.on_failed(&mx, p, c),
            }
        }
    }
}

fn write_subscribe(out: &mut Vec<u8>, id: u64, room_json: &str, since: u64) {
    out.extend_from_slice(br#"{"op":"subscribe","id":"#);
    push_u64(out, id);
    out.extend_from_slice(br#","room":"#);
    out.extend_from_slice(room_json.as_bytes());
    out.extend_from_slice(br#","since":"#);
    push_u64(out, since);
    out.push(b'}');
}
