"""The client's meeting seats, sans-IO: which seat it holds in each meeting, so that it
can take them back after a reconnect, and which events end a seat.

Nothing here touches a socket: the client feeds join replies and `meeting.event` frames
in, and asks for the seats to rejoin on a new connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Events that end this client's own seat: rejoining after them would fail (`ended`,
#: `removed`) or fence out the connection that now holds it (`replaced`: the newest
#: holder wins, so taking it back would make the two take turns forever).
SEAT_ENDING_EVENTS = frozenset({"ended", "removed", "replaced"})


@dataclass(frozen=True)
class SeatRecord:
    """A seat this client holds.

    Attributes:
        meeting: The meeting id.
        participant: The participant id, the same across rejoins.
        token: The newest seat token (every join hands out a fresh one).
    """

    meeting: str
    participant: str
    token: str


class Seats:
    """The seats of this client, one per meeting at most (a connection holds one).

    ### Invariants
    - A seat is here from its join reply until the client leaves, is removed, is
      fenced out, the meeting ends, or a rejoin is refused: exactly the seats worth
      rejoining.
    """

    def __init__(self) -> None:
        self._seats: dict[str, SeatRecord] = {}

    def joined(self, reply: dict[str, Any]) -> SeatRecord | None:
        """A `meeting.join` reply (without `op` and `id`, or the whole frame) arrived.

        Returns:
            The seat now held, or None if the reply lacks its fields.
        """
        meeting, participant, token = reply.get("meeting"), reply.get("participant"), reply.get("seat")
        if not (isinstance(meeting, str) and isinstance(participant, str) and isinstance(token, str)):
            return None
        seat = self._seats[meeting] = SeatRecord(meeting, participant, token)
        return seat

    def get(self, meeting: str) -> SeatRecord | None:
        """The seat held in `meeting`, if any."""
        return self._seats.get(meeting)

    def forget(self, meeting: str, participant: str | None = None) -> None:
        """Drops the seat of `meeting` (only if it is `participant`'s, when given: a newer
        seat of the same meeting stays)."""
        seat = self._seats.get(meeting)
        if seat is not None and (participant is None or seat.participant == participant):
            del self._seats[meeting]

    def event(self, frame: dict[str, Any]) -> None:
        """A `meeting.event` arrived: forgets the seat it ends, if it is ours."""
        meeting, name = frame.get("meeting"), frame.get("event")
        if not isinstance(meeting, str) or name not in SEAT_ENDING_EVENTS:
            return
        if name == "ended":
            self.forget(meeting)
            return
        subject = frame.get("participant")
        pid = subject.get("participant") if isinstance(subject, dict) else None
        if isinstance(pid, str):
            self.forget(meeting, pid)

    def rejoins(self) -> list[SeatRecord]:
        """Every seat to take back on a new connection, in join order."""
        return list(self._seats.values())

    def snapshot(self) -> dict[str, str]:
        """Meeting id → participant id of every seat held."""
        return {m: s.participant for m, s in self._seats.items()}
