"""The request methods of the Receipts, Presence and Meetings sections, as a base of
`Client`: each builds one frame and runs it through `Client._call`, which holds the
connection, retry and reconnect logic.
"""

from __future__ import annotations

from typing import Any

from rushhour.client._meetings import Seats
from rushhour.client._requests import ReplyHook


class SectionMethods:
    """Receipts, presence and meetings requests; `Client` provides `_call` and `_seats`."""

    _seats: Seats

    async def _call(
        self,
        frame: dict[str, Any],
        *,
        retry: bool,
        on_reply: ReplyHook | None = None,
        retry_refused: bool | None = None,
    ) -> dict[str, Any]:
        raise NotImplementedError

    async def ack(self, room: str, seq: int) -> dict[str, Any]:
        """Marks a room delivered up to `seq` (cursors never move back).

        Returns:
            The cursors after the move: `delivered_seq`, `read_seq`.
        """
        return await self._call({"op": "ack", "room": room, "seq": seq}, retry=True)

    async def read(self, room: str, seq: int) -> dict[str, Any]:
        """Marks a room read (and delivered) up to `seq`; returns the cursors after."""
        return await self._call({"op": "read", "room": room, "seq": seq}, retry=True)

    async def receipts(self, room: str, seq: int) -> dict[str, Any]:
        """How many members have `seq` delivered and read: `members`, `delivered`, `read`."""
        return await self._call({"op": "receipts", "room": room, "seq": seq}, retry=True)

    async def read_by(self, room: str, seq: int, *, unread: bool = False, limit: int = 100) -> list[str]:
        """Every member that has read `seq` (or, with `unread`, has not), in user order;
        fetches page after page."""
        users: list[str] = []
        after: str | None = None
        while True:
            frame: dict[str, Any] = {"op": "unread_by" if unread else "read_by", "room": room, "seq": seq}
            frame.update(limit=limit, **({"after": after} if after is not None else {}))
            reply = await self._call(frame, retry=True)
            users.extend(reply.get("users", []))
            after = reply.get("next")
            if after is None:
                return users

    async def unread(self) -> dict[str, dict[str, int]]:
        """Every room the user is a member of: `last_seq`, `read_seq`, `unread`."""
        reply = await self._call({"op": "unread"}, retry=True)
        rooms: dict[str, dict[str, int]] = reply.get("rooms", {})
        return rooms

    async def presence(self, room: str) -> dict[str, Any]:
        """Who of the room's members is online: `online` (sorted, at most 1,000) and `count`."""
        return await self._call({"op": "presence", "room": room}, retry=True)

    # ----- meetings -----

    async def create_meeting(
        self,
        title: str = "",
        *,
        key: str | None = None,
        max_participants: int | None = None,
        mode: str | None = None,
    ) -> dict[str, Any]:
        """Creates a meeting; the caller is its host (its first join takes the host seat).

        Args:
            title: Shown to participants (at most 256 chars).
            key: Makes creating idempotent: creating again with the same key returns
                the running meeting of that key. With a key, a create interrupted by a
                drop is sent again; without one it raises `ConnectionClosed` (a second
                meeting could be made).
            max_participants: Seats at most (server default: 100, or 10,000 in
                broadcast mode).
            mode: `interactive` (the default) or `broadcast` (webinars).

        Returns:
            The reply: `meeting`, `host`, `created`.

        Raises:
            ServerError: e.g. `bad_request`, `overloaded`.
        """
        frame: dict[str, Any] = {"op": "meeting.create", "title": title}
        for name, value in (("key", key), ("max_participants", max_participants), ("mode", mode)):
            if value is not None:
                frame[name] = value
        return await self._call(frame, retry=key is not None)

    async def join_meeting(self, meeting: str, seat: str | None = None) -> dict[str, Any]:
        """Joins a meeting and keeps the seat: after a reconnect the client rejoins it by
        itself with the seat token (`Rejoined` event, or an `error` event with the
        `meeting` if the seat was refused, e.g. expired or removed).

        A join refused as `overloaded` (the server's join rate) is sent again after
        `retry_after_ms`. A join without `seat` interrupted by a drop raises
        `ConnectionClosed` (sent again it would take a second seat); with `seat` it is
        sent again.

        Args:
            meeting: The meeting id.
            seat: A seat token from an earlier join (another client or a stored one):
                takes that seat back, with the same participant id and role.

        Returns:
            The reply: `participant`, `seat`, `role`, `roster`, `epoch`, `mode`.

        Raises:
            ServerError: `not_found`, `forbidden`, `conflict` (full) ...
        """
        frame: dict[str, Any] = {"op": "meeting.join", "meeting": meeting}
        if seat is not None:
            frame["seat"] = seat

        def on_reply(reply: dict[str, Any]) -> None:
            if reply.get("op") == "reply":
                self._seats.joined(reply)

        return await self._call(frame, retry=seat is not None, on_reply=on_reply, retry_refused=True)

    async def leave_meeting(self, meeting: str) -> None:
        """Leaves a meeting for good (the others get `left`; the seat token stops working).

        The client stops rejoining it at once. Interrupted by a drop, it raises
        `ConnectionClosed`; the seat then ends when the server's grace time is over.

        Raises:
            ServerError: `not_found` (not in the meeting on this connection).
        """
        self._seats.forget(meeting)
        await self._call({"op": "meeting.leave", "meeting": meeting}, retry=False)

    async def signal(self, meeting: str, to: str, data: Any) -> None:
        """Relays `data` (SDP, an ICE candidate, any JSON up to 64 KiB) to participant
        `to`, who gets `Event("signal", {..., "from": <our participant id>})`.

        Signals to one receiver arrive in order; to a participant that is reconnecting
        they are held and delivered on its rejoin. Not sent again after a drop (it may
        have been relayed): it then raises `ConnectionClosed`. Signals made while the
        client is reconnecting wait, and go out after its seats are taken back.

        Raises:
            ServerError: `forbidden` (no seat here), `not_found`, `too_large`,
                `overloaded` (the receiver's held signals are full: retry after
                `retry_after_ms`).
        """
        await self._call({"op": "signal", "meeting": meeting, "to": to, "data": data}, retry=False)

    async def mute(self, meeting: str, participant: str, muted: bool = True) -> None:
        """Mutes (or unmutes) a participant: host or tenant admin, or oneself.

        Raises:
            ServerError: `forbidden`, `not_found`.
        """
        frame = {"op": "meeting.mute", "meeting": meeting, "participant": participant, "muted": muted}
        await self._call(frame, retry=True)  # setting a state twice changes nothing

    async def remove(self, meeting: str, participant: str) -> None:
        """Removes a participant for the rest of the meeting (host or tenant admin).

        Raises:
            ServerError: `forbidden`, `not_found`, `bad_request` (oneself).
        """
        await self._call({"op": "meeting.remove", "meeting": meeting, "participant": participant}, retry=False)

    async def transfer_host(self, meeting: str, participant: str) -> None:
        """Makes `participant` the host (host or tenant admin); the others get `host_changed`.

        Raises:
            ServerError: `forbidden`, `not_found`.
        """
        frame = {"op": "meeting.transfer_host", "meeting": meeting, "participant": participant}
        await self._call(frame, retry=False)

    async def end_meeting(self, meeting: str) -> None:
        """Ends the meeting for everyone (host or tenant admin): event `ended`.

        Raises:
            ServerError: `forbidden`, `not_found`.
        """
        await self._call({"op": "meeting.end", "meeting": meeting}, retry=False)

    @property
    def meetings(self) -> dict[str, str]:
        """Meeting id → participant id of every seat the client holds (and rejoins)."""
        return self._seats.snapshot()
