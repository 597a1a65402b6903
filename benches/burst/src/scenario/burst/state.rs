//! A client's state that outlives its connections, kept outside its task so that the
//! thread can read it after the task ends (or is cut short), and what the report needs
//! of it at the end.

use super::chat::Chat;
use super::meeting::Meeting;
use super::room::RoomCheck;
use super::signals::Inbox;

/// One client, across connections.
#[derive(Clone, Debug, Default)]
pub struct ClientState {
    /// The session token of the last welcome, for `resume`.
    pub session: Option<String>,
    /// µs from the start to its first welcome.
    pub served_at_us: Option<u64>,
    /// Whether a session is open now.
    pub connected: bool,
    /// Refusals it met.
    pub refusals: u32,
    /// Why it gave up, if it did.
    pub gave_up: Option<String>,
    /// Its team room's check.
    pub room: RoomCheck,
    /// Its chat.
    pub chat: Chat,
    /// Its meeting, if it has one.
    pub meeting: Option<Meeting>,
}

/// What the report needs of one client.
#[derive(Clone, Debug)]
pub struct ClientOutcome {
    /// The client.
    pub index: usize,
    /// µs from the start to its first welcome.
    pub served_at_us: Option<u64>,
    /// Whether it held a session when the run stopped.
    pub connected: bool,
    /// Refusals it met.
    pub refusals: u32,
    /// Its team room's check.
    pub room: RoomCheck,
    /// Chat sends never answered.
    pub unanswered: usize,
    /// Its meeting's seat, if it has one: whether it joined, what it received, and
    /// per peer the signals it abandoned.
    pub meeting: Option<SeatOutcome>,
}

/// A participant's part of the report.
#[derive(Clone, Debug)]
pub struct SeatOutcome {
    /// The meeting.
    pub index: usize,
    /// Whether it ever joined.
    pub joined: bool,
    /// The check of the signals it received.
    pub inbox: Inbox,
    /// `(peer client, signals abandoned to it)`.
    pub abandoned: Vec<(usize, u64)>,
}

impl ClientState {
    /// The report's view of client `index`.
    pub fn outcome(&self, index: usize) -> ClientOutcome {
        ClientOutcome {
            index,
            served_at_us: self.served_at_us,
            connected: self.connected,
            refusals: self.refusals,
            room: self.room.clone(),
            unanswered: self.chat.unanswered(),
            meeting: self.meeting.as_ref().map(|m| SeatOutcome {
                index: m.index,
                joined: m.joined,
                inbox: m.inbox.clone(),
                abandoned: m.peers.iter().map(|p| (p.client, p.abandoned)).collect(),
            }),
        }
    }
}
