//! What the threads share: the plan and settings (read-only), and the few facts that
//! cross threads — each room's last acknowledged seq, each signal pair's accepted
//! count, each meeting's id, the requests still owed an answer — as atomics, plus one
//! progress snapshot per thread for the progress line.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::plan::Plan;
use super::settings::Settings;
use crate::client::Target;
use crate::stats::Histogram;
use crate::token::Signer;

/// Shared by every thread of a run.
pub struct Global {
    /// The flags, checked.
    pub settings: Settings,
    /// The layout.
    pub plan: Plan,
    /// The server.
    pub target: Target,
    /// One token signer per tenant.
    pub signers: Vec<Signer>,
    /// Makes `cid`s, rooms and meeting keys unique to this run.
    pub run_tag: String,
    /// The start: every time in the report counts from here.
    pub epoch: Instant,
    /// Per room: the highest seq acknowledged to a sender.
    pub room_final: Box<[AtomicU64]>,
    /// Per (meeting, sender seat, receiver seat): signals the server accepted.
    pub signal_sent: Box<[AtomicU64]>,
    /// Per meeting: its id once the host created it.
    pub meeting_ids: Box<[watch::Sender<Option<Arc<str>>>]>,
    /// Sends, creates, joins and signals owed an answer (the drain waits for 0).
    pub pending: AtomicI64,
    /// Per thread: its clients still waiting for something, as of its last drain poll
    /// (`u64::MAX` before its first).
    pub unsettled: Box<[AtomicU64]>,
    /// Per thread: the latest progress snapshot.
    pub progress: Box<[Mutex<Progress>]>,
}

/// What a thread reports once a second for the progress line.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// Clients served so far.
    pub served: u64,
    /// Refusals so far.
    pub refused: u64,
    /// Clients waiting to retry now.
    pub retrying: u64,
    /// Sessions open now.
    pub connected: u64,
    /// Chat messages sent so far.
    pub sent: u64,
    /// Deliveries so far.
    pub deliveries: u64,
    /// Meeting joins so far.
    pub joined: u64,
    /// Delivery latencies since the monitor last took them.
    pub recent: Histogram,
}

impl Global {
    /// Shared state for `plan` under `settings`, starting at `epoch`.
    pub fn new(
        settings: Settings,
        plan: Plan,
        target: Target,
        signers: Vec<Signer>,
        run_tag: String,
        epoch: Instant,
    ) -> Self {
        let atomics = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        Self {
            room_final: atomics(plan.rooms.len()),
            signal_sent: atomics(plan.pairs()),
            meeting_ids: (0..plan.meetings.len())
                .map(|_| watch::Sender::new(None))
                .collect(),
            pending: AtomicI64::new(0),
            unsettled: (0..settings.threads)
                .map(|_| AtomicU64::new(u64::MAX))
                .collect(),
            progress: (0..settings.threads).map(|_| Mutex::default()).collect(),
            settings,
            plan,
            target,
            signers,
            run_tag,
            epoch,
        }
    }

    /// The instant `d` after the start.
    pub fn at(&self, d: Duration) -> Instant {
        self.epoch + d
    }

    /// Thread `shard`'s progress snapshot (a panicked thread's is still readable).
    pub fn progress(&self, shard: usize) -> MutexGuard<'_, Progress> {
        self.progress[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
