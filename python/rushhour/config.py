"""Server configuration: every `rushhour serve` flag, each also `RUSHHOUR_<NAME>` in the environment."""

from __future__ import annotations

import argparse
import os
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

FSYNC_POLICIES = ("always", "batch", "never")
ADMISSION_MODES = ("on", "off")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: Smallest outbound queue: room for a few of the largest messages (64 KiB bodies).
MIN_QUEUE_BYTES = 256 << 10


@dataclass(frozen=True)
class Config:
    """What a server runs with. Defaults are the protocol's.

    Attributes:
        host: Address to listen on.
        port: TCP port; 0 picks any free port.
        data_dir: Folder of the durable log; None keeps messages in memory only (embedding, tests).
        secret: HS256 key of session tokens; None generates a random one per start.
        api_key: Bearer key of `POST /api/v1/publish`; None disables the endpoint.
        dev: Enables `POST /api/v1/dev-token` and `/ws/echo`.
        allowed_origins: Browser origins allowed at the handshake; empty allows all.
        max_queue_bytes: Outbound bytes queued per connection before close 4008.
        fsync: Log fsync policy (`always`, `batch`, `never`).
        repair: Start even if a sealed log segment is damaged, cutting it at the damage.
        retention: Age after which messages are dropped (`30d`, `12h`, `45m`, `90s` or
            seconds); `0` keeps them until `room_max_messages`.
        room_max_messages: Messages retained per room; older ones are dropped.
        segment_bytes: Size at which a log segment is sealed and a new one started.
        seat_grace_ms: How long a dropped meeting participant's seat is held.
        receipt_interval_ms: Coalescing interval of receipt and presence pushes.
        receipt_push_max_members: Largest room that gets receipt and presence pushes.
        idle_timeout_ms: A connection silent this long is closed.
        heartbeat_ms: Interval of server pings, announced in `welcome`.
        hello_timeout_ms: Time allowed for the first frame (`hello`).
        max_frame_bytes: Largest inbound frame or message.
        max_body_bytes: Largest message body, encoded.
        max_subscriptions: Room subscriptions per connection.
        max_rooms: Rooms in the whole server (rooms are kept for good: this bounds them);
            a new room past it is refused `forbidden`.
        max_rooms_per_tenant: Rooms per tenant, so one tenant cannot take them all.
        send_rate: Sends per second per connection.
        send_burst: Send burst per connection.
        max_bad_frames: Non-JSON or binary frames tolerated per connection.
        memory_retention: Newest messages kept per room in memory for replay; older ones
            are read from the log on disk.
        session_rate: Fresh sessions (`hello` without a resume) admitted per second.
        session_burst: Fresh sessions admitted at once before `session_rate` applies.
        admission: `on` refuses hellos over the limits (`overloaded`, close 1013);
            `off` admits every hello (contrast runs).
        meeting_join_rate: Meeting joins per second per tenant (over it: `overloaded`), so
            that one big tenant cannot take every join of the server.
        meeting_join_burst: Meeting joins a tenant may make at once: half the server's,
            room for a large company's 9:00 stand-ups.
        meeting_server_join_rate: Meeting joins per second for the whole server.
        meeting_server_join_burst: Meeting joins the server takes at once (a 9:00 start
            of 1,500 meetings of 5, with room to spare).
        bad_token_rate: Hellos with a token that fails verification, per second per
            source address; past `bad_token_burst` that address's hellos are closed 1013
            before any work until its bucket refills.
        bad_token_burst: Failed hellos a source address may make at once.
        max_meetings: Meetings the server keeps (meetings nobody joined are kept a day:
            this bounds them); a new one past it is refused `forbidden`.
        max_meetings_per_tenant: Meetings per tenant, so one tenant cannot take them all.
        max_meetings_per_user: Meetings per user (by their creator), so one user cannot
            take their tenant's.
        max_sessions_per_user: Resumable session tokens kept per user; past it that
            user's oldest is forgotten (never another user's).
        max_sessions_per_tenant: Resumable session tokens kept per tenant; past it that
            tenant's oldest is forgotten.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    data_dir: Path | None = Path("rushhour-data")
    secret: str | None = None
    api_key: str | None = None
    dev: bool = False
    allowed_origins: tuple[str, ...] = ()
    max_queue_bytes: int = 4 << 20
    fsync: str = "batch"
    repair: bool = False
    retention: str = "0"
    room_max_messages: int = 1_000_000
    segment_bytes: int = 64 << 20
    seat_grace_ms: int = 60_000
    receipt_interval_ms: int = 250
    receipt_push_max_members: int = 256
    idle_timeout_ms: int = 60_000
    heartbeat_ms: int = 25_000
    hello_timeout_ms: int = 10_000
    max_frame_bytes: int = 1 << 20
    max_body_bytes: int = 64 << 10
    max_subscriptions: int = 256
    max_rooms: int = 1_000_000
    max_rooms_per_tenant: int = 100_000
    send_rate: float = 5_000.0
    send_burst: float = 10_000.0
    max_bad_frames: int = 10
    memory_retention: int = 10_000
    session_rate: float = 5_000.0
    session_burst: float = 10_000.0
    admission: str = "on"
    meeting_join_rate: float = 2_500.0
    meeting_join_burst: float = 5_000.0
    meeting_server_join_rate: float = 5_000.0
    meeting_server_join_burst: float = 10_000.0
    bad_token_rate: float = 10.0
    bad_token_burst: float = 50.0
    max_meetings: int = 100_000
    max_meetings_per_tenant: int = 10_000
    max_meetings_per_user: int = 100
    max_sessions_per_user: int = 32
    max_sessions_per_tenant: int = 50_000
    _generated_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)

    def __post_init__(self) -> None:
        if self.fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}")
        if self.admission not in ADMISSION_MODES:
            raise ValueError(f"admission must be one of {', '.join(ADMISSION_MODES)}")
        for rate, burst in (
            ("session_rate", "session_burst"),
            ("meeting_join_rate", "meeting_join_burst"),
            ("meeting_server_join_rate", "meeting_server_join_burst"),
            ("bad_token_rate", "bad_token_burst"),
        ):
            if getattr(self, rate) <= 0 or getattr(self, burst) < 1:
                raise ValueError(f"{rate} must be > 0 and {burst} at least 1")
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be 0-65535")
        if self.max_queue_bytes < MIN_QUEUE_BYTES:
            raise ValueError(f"max_queue_bytes must be at least {MIN_QUEUE_BYTES}")
        for name in (
            "room_max_messages",
            "max_rooms",
            "max_rooms_per_tenant",
            "max_meetings",
            "max_meetings_per_tenant",
            "max_meetings_per_user",
            "max_sessions_per_user",
            "max_sessions_per_tenant",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("receipt_interval_ms", "heartbeat_ms", "idle_timeout_ms", "hello_timeout_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.seat_grace_ms < 0 or self.receipt_push_max_members < 0:
            raise ValueError("seat_grace_ms and receipt_push_max_members must not be negative")
        self.retention_ms  # noqa: B018 - validates the duration

    @property
    def retention_ms(self) -> int:
        """`retention` in milliseconds; 0 when messages are kept regardless of age."""
        text = self.retention.strip().lower()
        unit = _DURATION_UNITS.get(text[-1:], 0)
        number = text[:-1] if unit else text
        try:
            value = float(number) * (unit or 1)
        except ValueError:
            raise ValueError(f"retention must be like 30d, 12h, 45m, 90s or seconds, not {self.retention!r}") from None
        if value < 0:
            raise ValueError("retention must not be negative")
        return int(value * 1000)

    @property
    def signing_secret(self) -> str:
        """The HS256 key in force: the configured one, else one random per start."""
        return self.secret if self.secret is not None else self._generated_secret


def _parse_bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds one flag per field; each flag's default comes from `RUSHHOUR_<NAME>`."""
    for f in fields(Config):
        if f.name.startswith("_"):
            continue
        flag = "--" + f.name.replace("_", "-")
        env = os.environ.get("RUSHHOUR_" + f.name.upper())
        kwargs: dict[str, Any] = {"dest": f.name, "help": f"(env RUSHHOUR_{f.name.upper()})"}
        if f.type in ("bool", bool):
            kwargs.update(action="store_true", default=_parse_bool(env) if env is not None else False)
        else:
            kwargs.update(default=env)
            if f.name == "fsync":
                kwargs["choices"] = FSYNC_POLICIES
            elif f.name == "admission":
                kwargs["choices"] = ADMISSION_MODES
        parser.add_argument(flag, **kwargs)


def from_namespace(ns: argparse.Namespace) -> Config:
    """Builds a Config from parsed flags, converting each to its field's type."""
    values: dict[str, Any] = {}
    defaults = Config()
    for f in fields(Config):
        raw = getattr(ns, f.name, None)
        if f.name.startswith("_") or raw is None:
            continue
        default = getattr(defaults, f.name)
        if f.name == "allowed_origins":
            values[f.name] = tuple(o.strip() for o in str(raw).split(",") if o.strip())
        elif f.name in ("secret", "api_key"):
            values[f.name] = str(raw)
        elif isinstance(default, bool):
            values[f.name] = raw if isinstance(raw, bool) else _parse_bool(str(raw))
        elif isinstance(default, int):
            values[f.name] = int(raw)
        elif isinstance(default, float):
            values[f.name] = float(raw)
        elif f.name == "data_dir":
            values[f.name] = Path(raw)
        else:
            values[f.name] = raw
    return Config(**values)
