//! Fan-out: one shared frame into many connection queues, with the side effects collected.
//!
//! The broker runs under its lock; waking the writer and tearing down overflowed
//! connections happen once per call, not once per recipient, so a message to 10,000
//! subscribers costs 10,000 reference-count increments and queue pushes, nothing more.

use std::sync::Arc;

use bytes::Bytes;

use crate::ids::ConnId;
use crate::outbound::{Outbound, Priority, Push};

/// The effects of one broker call on the outbound side.
#[derive(Debug)]
pub struct Outbox {
    /// Queues that now have frames and are not yet in the writer's ready list.
    pub ready: Vec<Arc<Outbound>>,
    /// Queues to write ahead of the writer's round (see [`Outbox::expedite`]); each is
    /// in `ready` or the writer's ready list too.
    pub urgent: Vec<Arc<Outbound>>,
    /// Connections whose queue overflowed during this call (now closing with 4008).
    pub overflowed: Vec<ConnId>,
    /// Deliveries made (frames queued), for the metrics.
    pub delivered: u64,
    /// Ambient frames (receipt, presence pushes) left out of filling queues.
    pub shed: u64,
    now_ms: u64,
    close_timeout_ms: u64,
}

impl Outbox {
    /// An empty outbox for a call made at `now_ms` (monotonic).
    pub fn new(now_ms: u64, close_timeout_ms: u64) -> Self {
        Outbox {
            ready: Vec::new(),
            urgent: Vec::new(),
            overflowed: Vec::new(),
            delivered: 0,
            shed: 0,
            now_ms,
            close_timeout_ms,
        }
    }

    /// Queues `frame` for `out`.
    pub fn push(&mut self, out: &Arc<Outbound>, frame: Bytes) -> Push {
        self.push_with(out, frame, Priority::Normal)
    }

    /// Queues `frame` for `out` by its priority.
    pub fn push_with(&mut self, out: &Arc<Outbound>, frame: Bytes, priority: Priority) -> Push {
        let result = out
            .lock()
            .push_with(frame, priority, self.now_ms, self.close_timeout_ms);
        if result == Push::Queued {
            self.delivered += 1;
        }
        self.settle(out, result);
        result
    }

    /// Queues the same frame for every queue of `outs`.
    pub fn fan_out(&mut self, outs: &[Arc<Outbound>], frame: &Bytes) {
        self.fan_out_with(outs, frame, Priority::Normal);
    }

    /// Queues the same frame for every queue of `outs`, by its priority.
    pub fn fan_out_with(&mut self, outs: &[Arc<Outbound>], frame: &Bytes, priority: Priority) {
        self.fan_out_all(outs, std::slice::from_ref(frame), priority);
    }

    /// Queues `frames`, in order, for every queue of `outs`, locking each queue once.
    pub fn fan_out_all(&mut self, outs: &[Arc<Outbound>], frames: &[Bytes], priority: Priority) {
        for out in outs {
            let mut q = out.lock();
            let (mut queued, mut stopped) = (false, None);
            for frame in frames {
                match q.push_with(frame.clone(), priority, self.now_ms, self.close_timeout_ms) {
                    Push::Queued => {
                        self.delivered += 1;
                        queued = true;
                    }
                    // Overflowed, closing or shed: the rest would be too.
                    other => {
                        stopped = Some(other);
                        break;
                    }
                }
            }
            drop(q);
            if queued {
                self.schedule(out);
            }
            if let Some(result) = stopped {
                self.settle(out, result);
            }
        }
    }

    /// Accounts for a push and lists the queue for the writer when it has something new
    /// to write (a frame, or the close frame of an overflow).
    fn settle(&mut self, out: &Arc<Outbound>, result: Push) {
        match result {
            Push::Queued => self.schedule(out),
            Push::Overflowed => {
                self.overflowed.push(out.conn);
                self.schedule(out);
            }
            Push::Shed => self.shed += 1,
            Push::Dropped => {}
        }
    }

    /// Lists `out` for the writer unless it is listed already.
    pub fn schedule(&mut self, out: &Arc<Outbound>) {
        if out.claim_schedule() {
            self.ready.push(out.clone());
        }
    }

    /// Has the writer write `out` ahead of its round: for a meeting frame for one
    /// connection (a join's answer), which are few. Signals and events fanned out to a
    /// meeting are not: they come by the ten thousand a second, and written one by one
    /// they would cost the writer the batching that keeps it ahead of the chat.
    pub fn expedite(&mut self, out: &Arc<Outbound>) {
        if out.claim_urgent() {
            self.urgent.push(out.clone());
        }
    }

    /// Deadline for a close started now.
    pub fn close_deadline(&self) -> u64 {
        self.now_ms + self.close_timeout_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::State;

    fn queues(n: u64) -> Vec<Arc<Outbound>> {
        (0..n)
            .map(|i| Arc::new(Outbound::new(ConnId(i), None, 1 << 20)))
            .collect()
    }

    #[test]
    fn one_frame_many_queues_scheduled_once() {
        let outs = queues(3);
        let mut ob = Outbox::new(0, 30_000);
        let frame = Bytes::from_static(b"\x81\x02hi");
        ob.fan_out(&outs, &frame);
        ob.fan_out(&outs, &frame);
        assert_eq!(ob.ready.len(), 3);
        assert_eq!(ob.delivered, 6);
        assert!(ob.urgent.is_empty());
        assert!(outs.iter().all(|o| o.lock().bytes() > 0));
    }

    #[test]
    fn an_expedited_queue_is_listed_once_more() {
        let outs = queues(2);
        let mut ob = Outbox::new(0, 30_000);
        ob.fan_out(&outs, &Bytes::from_static(b"\x81\x02hi"));
        ob.expedite(&outs[1]);
        ob.expedite(&outs[1]);
        assert_eq!(ob.ready.len(), 2);
        assert_eq!(ob.urgent.len(), 1);
        assert_eq!(ob.urgent[0].conn, ConnId(1));
    }

    #[test]
    fn frames_fanned_out_together_keep_their_order_up_to_an_overflow() {
        let roomy = Arc::new(Outbound::new(ConnId(1), None, 1 << 20));
        let tight = Arc::new(Outbound::new(ConnId(2), None, 120));
        let mut ob = Outbox::new(0, 30_000);
        let frames: Vec<Bytes> = (b'a'..=b'c').map(|c| Bytes::from(vec![c; 60])).collect();
        ob.fan_out_all(&[roomy.clone(), tight.clone()], &frames, Priority::Normal);
        let (q, mut got) = (roomy.lock(), Vec::new());
        q.unwritten(8, &mut got);
        assert_eq!(got, frames.iter().map(|f| &f[..]).collect::<Vec<_>>());
        drop(q);
        assert_eq!(ob.delivered, 4, "three to one, the first to the other");
        assert_eq!(ob.overflowed, vec![ConnId(2)]);
        assert_eq!(ob.ready.len(), 2);
        assert!(matches!(tight.lock().state(), State::Closing { .. }));
    }

    #[test]
    fn overflow_is_reported() {
        let out = Arc::new(Outbound::new(ConnId(9), None, 100));
        let mut ob = Outbox::new(0, 30_000);
        let frame = Bytes::from(vec![0u8; 60]);
        assert_eq!(ob.push(&out, frame.clone()), Push::Overflowed);
        assert_eq!(ob.push(&out, frame), Push::Dropped);
        assert_eq!(ob.overflowed, vec![ConnId(9)]);
    }
}
