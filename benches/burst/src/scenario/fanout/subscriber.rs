//! The rushhour fan-out subscriber: connect, `hello`, `subscribe`, then read
//! deliveries until the scenario aborts the task.

use std::net::IpAddr;
use std::rc::Rc;
use std::time::Instant;

use tokio::sync::Semaphore;

use super::shared::Shared;
use super::REQUEST_TIMEOUT;
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
                self.shared.set_up(self.index, Err(e));
                return;
            }
        };
        self.shared.set_up(self.index, Ok(()));
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
            self.shared.lost(self.index, &e);
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
                self.shared.set_up(self.index, Err(e));
                return;
            }
        };
        self.shared.set_up(self.index, Ok(()));
        let check = &self.shared.checks[self.index];
        loop {
            match conn.next_data().await {
                Ok(msg) => {
                    let at = self.shared.arrival(Instant::now());
                    self.shared
                        .on_message(&mut check.borrow_mut(), &msg.into_data(), at);
                }
                Err(e) => break self.shared.lost(self.index, &e),
            }
        }
    }
}
