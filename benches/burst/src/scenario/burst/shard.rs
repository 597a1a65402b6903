//! One generator thread: a current-thread runtime and a `LocalSet` over its share of
//! the clients (every `threads`-th). It spawns their tasks, hands out chat sends at the
//! configured rate to connected clients in turn, publishes progress once a second,
//! drains after the load, stops everyone and collects what they saw.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::chat::ChatCtx;
use super::client;
use super::global::Global;
use super::meeting::{MeetCtx, Meeting};
use super::rng::Rng;
use super::state::{ClientOutcome, ClientState};
use super::tally::Counts;
use crate::stats::Histogram;

/// How often the chat scheduler hands out sends.
const TICK: Duration = Duration::from_millis(10);
/// How often the drain checks whether everyone caught up.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// How long clients get to close after the stop before their tasks are cut short.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Sends handed to one client and not started yet, at most.
const MAX_QUEUED_SENDS: u32 = 4;
/// Clients looked at to place one send; past that the send is skipped (when few
/// clients are connected, scanning them all for every send would cost more than the
/// load).
const PLACE_PROBES: usize = 64;

/// Where the run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Logins, meetings, chat.
    Load,
    /// No new chat or steady signals; waiting for answers, deliveries and late logins.
    Drain,
    /// Closing.
    Stop,
}

/// One client as its thread sees it.
pub struct Slot {
    /// The client's number.
    pub index: usize,
    /// Wakes its task: a send to make, or the stop.
    pub wake: Notify,
    /// Sends handed to it and not started yet.
    pub pending_sends: Cell<u32>,
    /// Whether it holds a session (the scheduler only hands sends to those).
    pub ready: Cell<bool>,
    /// Its state across connections.
    pub state: RefCell<ClientState>,
}

/// A thread's shared state (one thread: `Cell`s).
pub struct Local {
    /// What all threads share.
    pub g: Arc<Global>,
    /// This thread's number.
    pub shard: usize,
    /// Its clients.
    pub slots: Vec<Slot>,
    /// Its counts.
    pub counts: RefCell<Counts>,
    /// Delivery latencies since the last progress snapshot.
    pub recent: RefCell<Histogram>,
    /// Where the run is.
    pub phase: Cell<Phase>,
    /// Clients waiting to retry now.
    pub retrying: Cell<u64>,
    /// Sessions open now.
    pub connected: Cell<u64>,
    /// `body_bytes` of padding for chat bodies.
    pub pad: String,
}

/// What a thread hands back.
#[derive(Debug, Default)]
pub struct ShardOutcome {
    /// Its counts.
    pub counts: Counts,
    /// Its clients.
    pub clients: Vec<ClientOutcome>,
    /// Why it could not run, if it could not.
    pub error: Option<String>,
}

impl Local {
    fn new(g: Arc<Global>, shard: usize) -> Self {
        let s = &g.settings;
        let slots = (shard..s.clients)
            .step_by(s.threads)
            .map(|i| Slot {
                index: i,
                wake: Notify::new(),
                pending_sends: Cell::new(0),
                ready: Cell::new(false),
                state: RefCell::new(ClientState {
                    meeting: g.plan.meeting_of(i).map(|(m, seat)| Meeting::new(m, seat)),
                    ..ClientState::default()
                }),
            })
            .collect();
        Self {
            pad: "x".repeat(s.body_bytes),
            shard,
            slots,
            counts: RefCell::default(),
            recent: RefCell::default(),
            phase: Cell::new(Phase::Load),
            retrying: Cell::new(0),
            connected: Cell::new(0),
            g,
        }
    }

    /// What client `client`'s chat needs (`cid_prefix` is its own).
    pub fn chat_ctx<'a>(&'a self, client: usize, cid_prefix: &'a str) -> ChatCtx<'a> {
        let g = &*self.g;
        let room = g.plan.room_of(client);
        ChatCtx {
            room_json: &g.plan.rooms[room].json,
            cid_prefix,
            pad: &self.pad,
            epoch: g.epoch,
            pending: &g.pending,
            room_final: &g.room_final[room],
        }
    }

    /// What the meeting of client `client` (in meeting `m`) needs.
    pub fn meet_ctx(&self, client: usize, m: usize) -> MeetCtx<'_> {
        let g = &*self.g;
        let s = &g.settings;
        MeetCtx {
            plan: &g.plan,
            client,
            epoch: g.epoch,
            meetings_at: g.at(s.meetings_at),
            load_end: g.at(s.load_end),
            signal_period: (s.signal_rate > 0.0)
                .then(|| Duration::from_secs_f64(1.0 / s.signal_rate)),
            pending: &g.pending,
            signal_sent: &g.signal_sent,
            ids: &g.meeting_ids[m],
        }
    }

    /// Copies this thread's progress into its snapshot.
    fn publish_progress(&self) {
        let c = self.counts.borrow();
        let mut p = self.g.progress(self.shard);
        p.served = c.served;
        p.refused = c.refused;
        p.retrying = self.retrying.get();
        p.connected = self.connected.get();
        p.sent = c.sent;
        p.deliveries = c.deliveries;
        p.joined = c.joined;
        p.recent.merge(&self.recent.take());
    }

    /// Whether a client has nothing left to wait for.
    fn settled(&self, slot: &Slot) -> bool {
        let st = slot.state.borrow();
        if st.gave_up.is_some() {
            return true;
        }
        let room = self.g.plan.room_of(slot.index);
        let room_final = self.g.room_final[room].load(Ordering::Relaxed);
        if !st.connected || st.room.last() < room_final || st.chat.unanswered() > 0 {
            return false;
        }
        st.meeting
            .as_ref()
            .is_none_or(|m| m.settled(&self.meet_ctx(slot.index, m.index)))
    }
}

/// Runs thread `shard` of the run to its end.
pub fn run(g: Arc<Global>, shard: usize) -> ShardOutcome {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return ShardOutcome {
                error: Some(format!("thread {shard}: cannot start a runtime: {e}")),
                ..ShardOutcome::default()
            }
        }
    };
    tokio::task::LocalSet::new().block_on(&runtime, drive(g, shard))
}

async fn drive(g: Arc<Global>, shard: usize) -> ShardOutcome {
    let local = Rc::new(Local::new(g, shard));
    let tasks: Vec<JoinHandle<()>> = (0..local.slots.len())
        .map(|li| tokio::task::spawn_local(client::run(Rc::clone(&local), li)))
        .collect();
    load(&local).await;
    local.phase.set(Phase::Drain);
    drain(&local).await;
    local.phase.set(Phase::Stop);
    for slot in &local.slots {
        slot.wake.notify_one();
    }
    let cut = tokio::time::Instant::now() + STOP_GRACE;
    for mut task in tasks {
        if tokio::time::timeout_at(cut, &mut task).await.is_err() {
            task.abort();
        }
    }
    local.publish_progress();
    ShardOutcome {
        counts: local.counts.take(),
        clients: local
            .slots
            .iter()
            .map(|s| s.state.borrow().outcome(s.index))
            .collect(),
        error: None,
    }
}

/// Until the load ends: hands out chat sends at this thread's share of the rate and
/// publishes progress every second.
async fn load(local: &Local) {
    let g = &*local.g;
    let s = &g.settings;
    let chat_start = g.at(s.chat_at);
    let end = g.at(s.load_end);
    let share = s.rate * local.slots.len() as f64 / s.clients as f64;
    let mut order: Vec<usize> = (0..local.slots.len()).collect();
    Rng::new(s.seed ^ 0x5eed ^ local.shard as u64).shuffle(&mut order);
    let mut cursor = 0;
    let mut issued = 0u64;
    let mut next_progress = next_second(g.epoch, Instant::now());
    loop {
        let now = Instant::now();
        publish_due(local, now, &mut next_progress);
        if now >= end {
            return;
        }
        if share > 0.0 && now >= chat_start {
            let due = (share * (now - chat_start).as_secs_f64()) as u64;
            while issued < due {
                issued += 1;
                if !place_send(local, &order, &mut cursor) {
                    local.counts.borrow_mut().send_skipped += 1;
                }
            }
        }
        let wake = (now + TICK).min(next_progress).min(end);
        tokio::time::sleep_until(wake.into()).await;
    }
}

/// The next whole second from `epoch` after `now`: progress is published on those, so
/// that the monitor reads every thread's snapshot of the same second.
fn next_second(epoch: Instant, now: Instant) -> Instant {
    epoch + Duration::from_secs(now.saturating_duration_since(epoch).as_secs() + 1)
}

/// Publishes this thread's progress once the second `next` has come.
fn publish_due(local: &Local, now: Instant, next: &mut Instant) {
    if now >= *next {
        local.publish_progress();
        *next += Duration::from_secs(1);
    }
}

/// Hands one send to the next connected client in turn; `false` when none took it.
fn place_send(local: &Local, order: &[usize], cursor: &mut usize) -> bool {
    for _ in 0..PLACE_PROBES.min(order.len()) {
        let slot = &local.slots[order[*cursor % order.len()]];
        *cursor += 1;
        if slot.ready.get() && slot.pending_sends.get() < MAX_QUEUED_SENDS {
            slot.pending_sends.set(slot.pending_sends.get() + 1);
            slot.wake.notify_one();
            return true;
        }
    }
    false
}

/// After the load: until nothing is owed an answer anywhere and every client of every
/// thread has everything it should, or the drain time is up. Each thread publishes how
/// many of its clients are not settled; a thread stops only when all say none (a
/// thread that stopped early would close connections others still signal to).
async fn drain(local: &Local) {
    let g = &*local.g;
    let deadline = g.at(g.settings.load_end + g.settings.drain);
    let mut next_progress = next_second(g.epoch, Instant::now());
    loop {
        let now = Instant::now();
        publish_due(local, now, &mut next_progress);
        if now >= deadline {
            return;
        }
        let unsettled = local.slots.iter().filter(|s| !local.settled(s)).count();
        g.unsettled[local.shard].store(unsettled as u64, Ordering::Relaxed);
        let everyone = g.unsettled.iter().all(|n| n.load(Ordering::Relaxed) == 0);
        if everyone && g.pending.load(Ordering::Relaxed) <= 0 {
            return;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}
