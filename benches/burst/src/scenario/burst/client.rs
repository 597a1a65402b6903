//! One client's life: arrive at its time on the ramp, connect and say `hello` (with
//! `resume` once it has a session), and on a refusal wait what the server asked (or
//! back off with full jitter) and try again; once welcomed, serve the session until
//! the stop, reconnecting if it is lost. Bounded by `--max-attempts` and the stop.

use std::rc::Rc;
use std::time::Instant;

use super::super::{micros_since, source_for};
use super::active::{self, End};
use super::backoff::Backoff;
use super::rng::Rng;
use super::session::{self, Attempt};
use super::shard::{Local, Phase, Slot};

/// Runs client `li` of its thread.
pub async fn run(local: Rc<Local>, li: usize) {
    let slot = &local.slots[li];
    let g = &*local.g;
    let s = &g.settings;
    let i = slot.index;
    let mut rng = Rng::new(s.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut backoff = Backoff::new(s.backoff_base, s.backoff_cap);
    let mut ids = g
        .plan
        .meeting_of(i)
        .filter(|&(_, seat)| seat != 0)
        .map(|(m, _)| g.meeting_ids[m].subscribe());
    let cid_prefix = format!("{}-{i}-", g.run_tag);
    let token = g.signers[g.plan.tenant_of(i)].token(&format!("u{i}"));
    let source = source_for(&s.sources, i);
    if !pause(&local, slot, g.at(s.arrival(g.plan.rank(i)))).await {
        return;
    }
    for attempt in 0..s.max_attempts {
        if local.phase.get() == Phase::Stop {
            return;
        }
        let now_us = micros_since(g.epoch, Instant::now());
        {
            let mut c = local.counts.borrow_mut();
            c.first_attempt_us = Some(c.first_attempt_us.map_or(now_us, |t| t.min(now_us)));
            if attempt > 0 {
                c.retried += 1;
                c.timeline.second(now_us / 1_000_000).retries += 1;
            }
        }
        let hello = hello_frame(&token, slot.state.borrow().session.as_deref());
        let seed = (i as u64) << 20 | u64::from(attempt);
        let wait = match session::open(&g.target, source, seed, &hello, s.connect_timeout).await {
            Attempt::Welcome {
                mut conn,
                session,
                resumed,
            } => {
                welcomed(&local, slot, session, resumed);
                backoff.reset();
                let end = active::serve(&local, slot, &mut conn, &mut ids, &cid_prefix).await;
                match end {
                    End::Stop => return,
                    End::Lost(e) => lost(&local, slot, &e.label()),
                }
                backoff.next(&mut rng)
            }
            Attempt::Refused {
                why,
                retry_after,
                queue_pos,
            } => {
                slot.state.borrow_mut().refusals += 1;
                let mut c = local.counts.borrow_mut();
                c.refusal(why);
                c.timeline.second(now_us / 1_000_000).refused += 1;
                c.queue_pos_max = c.queue_pos_max.max(queue_pos.unwrap_or(0));
                backoff.wait(retry_after, &mut rng)
            }
            Attempt::Fatal(e) => {
                local.counts.borrow_mut().note(format!("client {i}: {e}"));
                slot.state.borrow_mut().gave_up = Some(e);
                return;
            }
        };
        local.retrying.set(local.retrying.get() + 1);
        let go_on = pause(&local, slot, Instant::now() + wait).await;
        local.retrying.set(local.retrying.get() - 1);
        if !go_on {
            return;
        }
    }
    let why = format!("no session after {} attempts", s.max_attempts);
    local.counts.borrow_mut().note(format!("client {i}: {why}"));
    slot.state.borrow_mut().gave_up = Some(why);
}

/// Waits until `until` (wake-ups meanwhile are ignored); `false` if the run stopped.
async fn pause(local: &Local, slot: &Slot, until: Instant) -> bool {
    // Bounded: each turn either ends the wait or consumes a wake-up, and wake-ups come
    // from the scheduler (only to connected clients) or the stop.
    for _ in 0..1000 {
        if local.phase.get() == Phase::Stop {
            return false;
        }
        if Instant::now() >= until {
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep_until(until.into()) => {}
            () = slot.wake.notified() => {}
        }
    }
    local.phase.get() != Phase::Stop
}

/// Counts a welcome.
fn welcomed(local: &Local, slot: &Slot, session: String, resumed: bool) {
    let now_us = micros_since(local.g.epoch, Instant::now());
    let mut st = slot.state.borrow_mut();
    let mut c = local.counts.borrow_mut();
    let second = now_us / 1_000_000;
    if st.served_at_us.is_none() {
        st.served_at_us = Some(now_us);
        c.served += 1;
        c.timeline.second(second).served += 1;
        c.last_served_us = c.last_served_us.max(Some(now_us));
    }
    if resumed {
        c.resumed += 1;
    }
    c.timeline.second(second).connected_delta += 1;
    st.session = Some(session);
    st.connected = true;
    slot.ready.set(true);
    local.connected.set(local.connected.get() + 1);
}

/// Counts a lost session (by close code or kind: the report's `dropped_by`, not an
/// error — reconnecting is part of the test); what awaited an answer waits for the
/// next connection.
fn lost(local: &Local, slot: &Slot, label: &str) {
    let now = Instant::now();
    let now_us = micros_since(local.g.epoch, now);
    let mut st = slot.state.borrow_mut();
    let mut c = local.counts.borrow_mut();
    c.dropped += 1;
    *c.dropped_by.entry(label.to_owned()).or_default() += 1;
    c.timeline.second(now_us / 1_000_000).connected_delta -= 1;
    st.connected = false;
    slot.ready.set(false);
    local.connected.set(local.connected.get() - 1);
    st.chat.connection_lost(now);
    if let Some(m) = st.meeting.as_mut() {
        m.connection_lost(&local.meet_ctx(slot.index, m.index));
    }
}

/// The `hello` frame: the token, and the session to resume if there is one.
fn hello_frame(token: &str, session: Option<&str>) -> String {
    match session {
        Some(s) => format!(r#"{{"op":"hello","token":"{token}","resume":"{s}"}}"#),
        None => format!(r#"{{"op":"hello","token":"{token}"}}"#),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_resumes_once_there_is_a_session() {
        let fresh: serde_json::Value = serde_json::from_str(&hello_frame("a.b.c", None)).unwrap();
        assert_eq!(fresh, serde_json::json!({"op": "hello", "token": "a.b.c"}));
        let again: serde_json::Value =
            serde_json::from_str(&hello_frame("a.b.c", Some("s-9"))).unwrap();
        assert_eq!(again["resume"], "s-9");
    }
}
