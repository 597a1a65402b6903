//! The fan-out subscriber: connect, `hello`, `subscribe`, then read deliveries until
//! the scenario aborts the task.

use std::net::IpAddr;
use std::rc::Rc;
use std::time::Instant;

use tokio::sync::Semaphore;

use super::{Shared, REQUEST_TIMEOUT};
use crate::client::tungstenite::TungConn;
use crate::client::{Conn, ConnError, Target};

/// One subscriber's task.
pub(super) struct Subscriber {
    /// Its place in `Shared::checks`.
    pub index: usize,
    /// Counters and checks shared with the scenario.
    pub shared: Rc<Shared>,
    /// The server.
    pub target: Rc<Target>,
    /// Local address to bind, if any.
    pub source: Option<IpAddr>,
    /// Bounds the connections being set up at once.
    pub gate: Rc<Semaphore>,
    /// Its `hello` frame (with its own token).
    pub hello: String,
    /// The `subscribe` frame.
    pub subscribe: Rc<str>,
}

impl Subscriber {
    /// Counts the end of set-up, good or bad, and wakes the scenario.
    fn set_up(&self, outcome: Result<(), ConnError>) {
        if let Err(e) = outcome {
            self.shared
                .setup_failed
                .set(self.shared.setup_failed.get() + 1);
            self.shared
                .note_error(format!("subscriber {}: {e}", self.index));
        } else {
            self.shared.ready.set(self.shared.ready.get() + 1);
        }
        self.shared.progress.notify_one();
    }

    /// Counts a connection lost during the run (not during teardown).
    fn lost(&self, e: &ConnError) {
        self.shared.ended[self.index].set(true);
        if !self.shared.stopping.get() {
            self.shared.lost.set(self.shared.lost.get() + 1);
            *self
                .shared
                .lost_by
                .borrow_mut()
                .entry(e.label())
                .or_default() += 1;
            self.shared
                .note_error(format!("subscriber {}: {e}", self.index));
        }
    }

    /// Runs on the hand-rolled client.
    pub async fn run_raw(self) {
        let setup = async {
            let _permit = self.gate.acquire().await.expect("the gate is never closed");
            let seed = self.index as u64 + 1;
            let mut conn = Conn::connect(&self.target, self.source, seed).await?;
            conn.request(&self.hello, "welcome", None, REQUEST_TIMEOUT)
                .await?;
            conn.request(&self.subscribe, "reply", Some(1), REQUEST_TIMEOUT)
                .await?;
            Ok(conn)
        };
        let mut conn = match setup.await {
            Ok(conn) => conn,
            Err(e) => {
                self.set_up(Err(e));
                return;
            }
        };
        self.set_up(Ok(()));
        let check = &self.shared.checks[self.index];
        let outcome: Result<(), ConnError> = async {
            loop {
                conn.fill().await?;
                let at = self.shared.arrival(Instant::now());
                let mut check = check.borrow_mut();
                while let Some(msg) = conn.next_message()? {
                    self.shared.on_message(&mut check, msg.payload, at);
                }
            }
        }
        .await;
        if let Err(e) = outcome {
            let _ = conn.flush().await;
            self.lost(&e);
        }
    }

    /// Runs on tokio-tungstenite, for comparison.
    pub async fn run_tungstenite(self) {
        let setup = async {
            let _permit = self.gate.acquire().await.expect("the gate is never closed");
            let mut conn = TungConn::connect(&self.target, self.source).await?;
            conn.request(&self.hello, "welcome", None, REQUEST_TIMEOUT)
                .await?;
            conn.request(&self.subscribe, "reply", Some(1), REQUEST_TIMEOUT)
                .await?;
            Ok(conn)
        };
        let mut conn = match setup.await {
            Ok(conn) => conn,
            Err(e) => {
                self.set_up(Err(e));
                return;
            }
        };
        self.set_up(Ok(()));
        let check = &self.shared.checks[self.index];
        loop {
            match conn.next_data().await {
                Ok(msg) => {
                    let at = self.shared.arrival(Instant::now());
                    self.shared
                        .on_message(&mut check.borrow_mut(), &msg.into_data(), at);
                }
                Err(e) => break self.lost(&e),
            }
        }
    }
}
