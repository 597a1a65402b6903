//! The server under load, per `--target`: how its subscribers and its publisher
//! connect, and which publisher loop runs.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::nats::{self, NatsPublisher, NatsSubscriber};
use super::peer::{self, Flow};
use super::publisher::{self, Plan, PublisherStats};
use super::redis::{RedisPublisher, RedisSubscriber};
use super::shared::Shared;
use super::subscriber::Subscriber;
use super::REQUEST_TIMEOUT;
use crate::cli::{ClientKind, FanoutArgs, FanoutTarget};
use crate::client::{Conn, ConnError, Target};
use crate::token::Signer;

/// The server, and what its clients need to reach it.
pub(super) enum Server {
    /// rushhour, or a server speaking its protocol.
    Rushhour {
        /// Where, and the upgrade's host and path.
        target: Rc<Target>,
        /// Signs every client's `hello` token.
        signer: Signer,
        /// The `subscribe` frame.
        subscribe: Rc<str>,
    },
    /// nats-server.
    Nats {
        /// Where.
        addr: SocketAddr,
        /// The room as a subject.
        subject: Rc<[u8]>,
    },
    /// redis-server.
    Redis {
        /// Where.
        addr: SocketAddr,
        /// The room as a channel.
        channel: Rc<[u8]>,
    },
}

/// The publisher's connection, once set up.
pub(super) enum Publisher {
    /// Sends answered by replies.
    Rushhour(Conn),
    /// `PUB`s paced by `PING`/`PONG`.
    Nats(NatsPublisher),
    /// `PUBLISH`es answered one by one.
    Redis(RedisPublisher),
}

impl Server {
    /// The server `args` name (blocking DNS: call it before the load); `signer` is for
    /// rushhour's tokens.
    ///
    /// # Errors
    /// A message when the URL does not suit the target, or the room the server.
    pub fn new(args: &FanoutArgs, signer: Signer) -> Result<Self, String> {
        if args.target != FanoutTarget::Rushhour && args.client != ClientKind::Raw {
            return Err("--client applies to --target rushhour only".into());
        }
        let url = &args.connect.url;
        let room: Rc<[u8]> = args.room.as_bytes().into();
        Ok(match args.target {
            FanoutTarget::Rushhour => Self::Rushhour {
                target: Rc::new(Target::parse(url)?),
                signer,
                subscribe: format!(
                    r#"{{"op":"subscribe","id":1,"room":{}}}"#,
                    serde_json::Value::from(args.room.as_str())
                )
                .into(),
            },
            FanoutTarget::Nats => {
                nats::check_subject(&args.room)?;
                Self::Nats {
                    addr: crate::nats::parse_url(url)?,
                    subject: room,
                }
            }
            FanoutTarget::Redis => {
                if room.is_empty() {
                    return Err("--room must not be empty".into());
                }
                Self::Redis {
                    addr: crate::redis::parse_url(url)?,
                    channel: room,
                }
            }
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Self::Rushhour { target, .. } => target.addr,
            Self::Nats { addr, .. } | Self::Redis { addr, .. } => *addr,
        }
    }

    /// Starts subscriber `index` on this thread: set-up (through `gate`), then reads.
    pub fn spawn_subscriber(
        &self,
        index: usize,
        shared: &Rc<Shared>,
        source: Option<IpAddr>,
        gate: &Rc<Semaphore>,
        client: ClientKind,
    ) -> JoinHandle<()> {
        let (shared, gate) = (Rc::clone(shared), Rc::clone(gate));
        match self {
            Self::Rushhour {
                target,
                signer,
                subscribe,
            } => {
                let hello = format!(
                    r#"{{"op":"hello","token":"{}"}}"#,
                    signer.token(&format!("sub-{index}"))
                );
                let sub = Subscriber {
                    index,
                    shared,
                    target: Rc::clone(target),
                    source,
                    gate,
                    hello,
                    subscribe: Rc::clone(subscribe),
                };
                match client {
                    ClientKind::Raw => tokio::task::spawn_local(sub.run_raw()),
                    ClientKind::Tungstenite => tokio::task::spawn_local(sub.run_tungstenite()),
                }
            }
            Self::Nats { addr, subject } => {
                let setup = NatsSubscriber::connect(*addr, source, index, Rc::clone(subject));
                tokio::task::spawn_local(peer::subscribe(shared, index, gate, setup))
            }
            Self::Redis { addr, channel } => {
                let setup = RedisSubscriber::connect(*addr, source, Rc::clone(channel));
                tokio::task::spawn_local(peer::subscribe(shared, index, gate, setup))
            }
        }
    }

    /// Connects the publisher from `source` (rushhour: and says `hello`).
    ///
    /// # Errors
    /// A message with the connection's error.
    pub async fn publisher(&self, source: Option<IpAddr>) -> Result<Publisher, String> {
        let failed = |e: ConnError| format!("publisher: {e}");
        Ok(match self {
            Self::Rushhour { target, signer, .. } => {
                let hello = format!(r#"{{"op":"hello","token":"{}"}}"#, signer.token("pub"));
                let mut conn = Conn::connect(target, source, u64::MAX)
                    .await
                    .map_err(failed)?;
                conn.request(&hello, "welcome", None, REQUEST_TIMEOUT)
                    .await
                    .map_err(|e| format!("publisher hello: {e}"))?;
                Publisher::Rushhour(conn)
            }
            Self::Nats { addr, subject } => Publisher::Nats(
                NatsPublisher::connect(*addr, source, Rc::clone(subject))
                    .await
                    .map_err(failed)?,
            ),
            Self::Redis { addr, channel } => Publisher::Redis(
                RedisPublisher::connect(*addr, source, Rc::clone(channel))
                    .await
                    .map_err(failed)?,
            ),
        })
    }
}

impl Publisher {
    /// Runs the publisher to the end of `plan`.
    ///
    /// # Errors
    /// The connection's error, with the stats so far.
    pub async fn run(
        self,
        plan: Plan,
        shared: Rc<Shared>,
    ) -> Result<PublisherStats, (ConnError, PublisherStats)> {
        match self {
            Self::Rushhour(conn) => publisher::run(conn, plan, shared).await,
            Self::Nats(wire) => {
                let flow = Flow {
                    batch: plan.window,
                    batches: nats::WINDOWS_IN_FLIGHT,
                };
                peer::publish(wire, flow, &plan, &shared).await
            }
            Self::Redis(wire) => {
                let flow = Flow {
                    batch: 1,
                    batches: plan.window,
                };
                peer::publish(wire, flow, &plan, &shared).await
            }
        }
    }
}
