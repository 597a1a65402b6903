"""The legs of `rushhour bench burst`: each starts its own servers, runs the generator
against them while sampling them, and returns its part of the report document.

Every leg gets a fresh server (a fresh data directory, a fresh process), so one leg's
connections, memory and log never weigh on the next.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rushhour.bench import _generator
from rushhour.bench._fairness import fairness_at
from rushhour.bench._healthz import HealthzPoller, summarize
from rushhour.bench._machine import source_root, version_of
from rushhour.bench._plan import (
    PEERS,
    UNLIMITED_SENDS,
    Plan,
    burst_args,
    burst_timeout,
    fanout_args,
    fanout_timeout,
    redacted,
)
from rushhour.bench._servers import (
    Sampler,
    Server,
    find_nats_server,
    find_redis_server,
    read_proc,
    start_naive,
    start_nats,
    start_redis,
    start_rushhour,
)

#: Seconds a fresh server is left alone before its idle memory is read (imports and
#: first allocations settle), and samples taken over that time.
SETTLE_S, SETTLE_SAMPLES = 0.6, 4
#: Share of the idle clients that must be connected for an RSS sample to count as
#: "with them" (counted from the server's open file descriptors).
IDLE_CONNECTED_SHARE = 0.95
#: Seconds the setup leg keeps its sessions after they are all served.
SETUP_HOLD_S = 2.0


@dataclass
class Context:
    """What every leg shares.

    Attributes:
        plan: The run's configuration.
        generator: The `rushhour-burst` binary.
        work: Temporary folder (data directories, server logs while they run).
        logs: Where server logs are kept after a leg (in the output folder).
        say: Prints a line of progress.
    """

    plan: Plan
    generator: Path
    work: Path
    logs: Path
    say: Callable[[str], None]


@contextlib.contextmanager
def _kept(ctx: Context, server: Server, leg: str, info: dict[str, Any]) -> Iterator[None]:
    """Stops `server` after the block (by PID), keeps its log, records its exit status."""
    try:
        yield
    finally:
        info["exit_status"] = server.stop()
        ctx.logs.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            shutil.copyfile(server.log_path, ctx.logs / f"{leg}-{info['name']}.log")


def _info(name: str, server: Server, version: str | None = None) -> dict[str, Any]:
    return {"name": name, "command": redacted(server.command), "pid": server.pid, "url": server.url, "version": version}


@contextlib.contextmanager
def rushhour(ctx: Context, leg: str, extra: list[str]) -> Iterator[tuple[dict[str, Any], str, int | None]]:
    """A fresh `rushhour serve` for one leg, or the `--url` server: (info, url, pid)."""
    plan = ctx.plan
    if plan.url is not None:
        yield {"name": "rushhour", "command": None, "pid": plan.server_pid, "url": plan.url}, plan.url, plan.server_pid
        return
    work = ctx.work / leg
    work.mkdir(parents=True, exist_ok=True)
    server = start_rushhour(work, plan.secret, extra)
    info = _info("rushhour", server)
    ctx.say(f"   rushhour pid {server.pid} on {server.url}: {' '.join(extra) or 'default flags'}")
    with _kept(ctx, server, leg, info):
        yield info, server.url, server.pid


def measure(
    ctx: Context,
    leg: str,
    name: str,
    server: dict[str, Any],
    args: list[str],
    json_path: Path,
    timeout: float,
    *,
    healthz: bool = False,
) -> dict[str, Any]:
    """Runs the generator once against `server` (`args` writing its report to
    `json_path`), sampling the server's RSS/CPU from /proc (and polling its `/healthz`);
    returns the run's part of the document."""
    origin = time.monotonic()
    pid = server.get("pid")
    with contextlib.ExitStack() as stack:
        sampler = stack.enter_context(Sampler(pid, origin)) if pid else None
        poller = stack.enter_context(HealthzPoller(server["url"], origin)) if healthz and server.get("url") else None
        status = _status_line(sampler, timeout)
        gen = _generator.run([str(ctx.generator), *args], json_path, timeout, status=status, origin=origin)
    gen.command = redacted(gen.command)
    report = gen.report or {}
    ok = gen.returncode == 0 and report.get("ok") is True
    if not ok:
        ctx.say(f"   {leg} / {name}: check failed: {gen.error or report.get('errors') or gen.returncode}")
    proc = sampler.summary() if sampler else None
    if proc is not None:
        proc["other_cores"] = other_load(proc, report.get("generator_cpu_s"), gen.wall_s)
    return {
        "name": name,
        "server": server,
        "generator": gen.as_json(),
        "server_proc": proc,
        "server_timeline": sampler.timeline() if sampler else [],
        "healthz": {"summary": summarize(poller.polls), "polls": poller.polls} if poller else None,
        "ok": ok,
    }


def other_load(proc: dict[str, Any], generator_cpu_s: float | None, wall_s: float) -> float | None:
    """Cores kept busy by neither the server nor the generator during a run: a run on a
    machine busy with other work is not comparable with a quiet one."""
    machine, server = proc.get("machine_cores"), proc.get("cores")
    if machine is None or server is None or generator_cpu_s is None or wall_s <= 0:
        return None
    return round(max(0.0, float(machine) - float(server) - generator_cpu_s / wall_s), 3)


def _status_line(sampler: Sampler | None, bound: float) -> Callable[[float], str]:
    def status(t: float) -> str:
        text = f"   … {t:5.1f} s"
        samples = sampler.samples if sampler else []
        if len(samples) >= 2:
            a, b = samples[-2], samples[-1]
            cores = (b.cpu_s - a.cpu_s) / (b.t - a.t) if b.t > a.t else 0.0
            fds = f", {b.fds:,} fds" if b.fds is not None else ""
            text += f"  server {cores:.2f} cores, {b.rss_kib / 1024:,.0f} MiB RSS{fds}"
        return text + f"  (bound {bound:.0f} s)"

    return status


def _progress(ctx: Context) -> bool:
    """Whether this generator prints a progress line when asked (`burst --progress`)."""
    return "--progress" in _generator.flags(ctx.generator, "burst")


def _burst(
    ctx: Context,
    url: str,
    pid: int | None,
    json_path: Path,
    *,
    clients: int,
    duration: float,
    ramp: float = 0,
    meetings: int = 0,
    rate: float = 0,
    tenants: int | None = None,
    tenant_skew: float | None = None,
) -> list[str]:
    """A leg's `burst` arguments against `url`: the plan's secret, participants and
    sources, the server's PID, the progress line when the generator has it."""
    p = ctx.plan
    return burst_args(
        url,
        p.secret,
        clients=clients,
        ramp=ramp,
        meetings=meetings,
        participants=p.participants,
        rate=rate,
        duration=duration,
        sources=p.sources,
        server_pid=pid,
        progress=_progress(ctx),
        json_path=json_path,
        tenants=tenants,
        tenant_skew=tenant_skew,
    )


def morning(ctx: Context) -> dict[str, Any]:
    """Clients logging in over the ramp, meetings, chat at a fixed rate."""
    p = ctx.plan
    with rushhour(ctx, "morning", p.serve_args()) as (info, url, pid):
        args = _burst(
            ctx,
            url,
            pid,
            ctx.work / "morning.json",
            clients=p.clients,
            ramp=p.ramp,
            meetings=p.meetings,
            rate=p.rate,
            duration=p.duration,
            tenants=p.tenants,
            tenant_skew=p.tenant_skew,
        )
        timeout = burst_timeout(p.ramp, p.duration)
        run = measure(ctx, "morning", "morning", info, args, ctx.work / "morning.json", timeout, healthz=True)
    return {"runs": [run]}


def setup(ctx: Context) -> dict[str, Any]:
    """Every client at once (`--ramp 0`): sessions set up per second."""
    p = ctx.plan
    with rushhour(ctx, "setup", p.serve_args()) as (info, url, pid):
        args = _burst(ctx, url, pid, ctx.work / "setup.json", clients=p.setup_clients, duration=SETUP_HOLD_S)
        timeout = burst_timeout(0, SETUP_HOLD_S)
        run = measure(ctx, "setup", "setup", info, args, ctx.work / "setup.json", timeout, healthz=True)
    return {"runs": [run], "clients": p.setup_clients}


def idle(ctx: Context) -> dict[str, Any]:
    """Idle sessions (hello + subscribe, nothing else): server memory per connection."""
    p = ctx.plan
    # The server's own admission limits: refusals would only slow the clients' arrival.
    with rushhour(ctx, "idle", []) as (info, url, pid):
        before = _settled(pid)
        args = _burst(ctx, url, pid, ctx.work / "idle.json", clients=p.idle_clients, duration=p.idle_hold)
        run = measure(ctx, "idle", "idle", info, args, ctx.work / "idle.json", burst_timeout(0, p.idle_hold))
    leg: dict[str, Any] = {"runs": [run], "clients": p.idle_clients, "rss_before_kib": None, "rss_with_kib": None}
    leg["kib_per_connection"] = None
    if before is not None and run["generator"]["report"] is not None:
        rss_before, fds_before = before
        with_them = idle_rss(run["server_timeline"], fds_before, p.idle_clients)
        leg.update(rss_before_kib=rss_before, rss_with_kib=with_them)
        if with_them is not None:
            leg["kib_per_connection"] = round((with_them - rss_before) / p.idle_clients, 2)
    return leg


def _settled(pid: int | None) -> tuple[int, int | None] | None:
    """(RSS KiB, open fds) of a server left alone for SETTLE_S: the median of a few looks."""
    if pid is None:
        return None
    looks = []
    for _ in range(SETTLE_SAMPLES):
        time.sleep(SETTLE_S / SETTLE_SAMPLES)
        found = read_proc(pid)
        if found is not None:
            looks.append(found)
    if not looks:
        return None
    return int(statistics.median(x[0] for x in looks)), looks[-1][2]


def idle_rss(timeline: list[dict[str, Any]], fds_before: int | None, clients: int) -> int | None:
    """The server's RSS while (nearly) all idle clients were connected: the median of
    the samples with at least IDLE_CONNECTED_SHARE of them open (counted in fds), None
    when no sample had them; the largest sample when fds were not readable."""
    if not timeline:
        return None
    if fds_before is not None and all(s.get("fds") is not None for s in timeline):
        need = fds_before + IDLE_CONNECTED_SHARE * clients
        held = [s["rss_kib"] for s in timeline if s["fds"] >= need]
        return int(statistics.median(held)) if held else None
    return int(max(s["rss_kib"] for s in timeline))


def fanout(ctx: Context) -> dict[str, Any]:
    """One publisher, many subscribers of one room, against rushhour and each peer."""
    p = ctx.plan
    has_target = "--target" in _generator.flags(ctx.generator, "fanout")
    runs: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    with rushhour(ctx, "fanout", list(UNLIMITED_SENDS)) as (info, url, pid):
        json_path = ctx.work / "fanout-rushhour.json"
        args = fanout_args(p, "rushhour" if has_target else None, url, pid, json_path)
        runs.append(measure(ctx, "fanout", "rushhour", info, args, json_path, fanout_timeout(p)))
    for peer in p.peers if p.peers is not None else PEERS:
        ctx.say(f"   -- {peer}")
        try:
            runs.append(_peer_run(ctx, peer, has_target))
        except (FileNotFoundError, _Skip) as e:
            ctx.say(f"   {peer} skipped: {e}")
            skipped.append({"peer": peer, "reason": str(e)})
        except (OSError, RuntimeError) as e:
            ctx.say(f"   {peer} failed to start: {e}")
            runs.append({"name": peer, "server": None, "generator": {"error": str(e)}, "ok": False})
    return {"runs": runs, "skipped_peers": skipped}


class _Skip(Exception):
    """A peer that cannot run here; the message says why."""


def _peer_run(ctx: Context, peer: str, has_target: bool) -> dict[str, Any]:
    p = ctx.plan
    work = ctx.work / f"fanout-{peer}"
    work.mkdir(parents=True, exist_ok=True)
    json_path = ctx.work / f"fanout-{peer}.json"
    if peer == "naive":
        root = source_root()
        script = root / "benches" / "naive_peer.py" if root is not None else None
        if script is None or not script.is_file():
            raise _Skip("benches/naive_peer.py is not here (it comes with the source tree)")
        server, version, target = start_naive(work, script), "naive_peer.py (trio-websocket)", "rushhour"
    elif peer in ("nats", "redis"):
        if not has_target:
            raise _Skip("this rushhour-burst has no `fanout --target` yet (rebuild it)")
        if peer == "nats":
            binary = find_nats_server(p.nats_server)
            server, target = start_nats(work, binary), "nats"
        else:
            binary = find_redis_server(p.redis_server)
            server, target = start_redis(work, binary), "redis"
        version = version_of([str(binary), "--version"])
    else:
        raise _Skip(f"unknown peer {peer!r}")
    info = _info(peer, server, version)
    ctx.say(f"   {peer} pid {server.pid} on {server.url}")
    with _kept(ctx, server, "fanout", info):
        args = fanout_args(p, target if has_target else None, server.url, server.pid, json_path)
        return measure(ctx, "fanout", peer, info, args, json_path, fanout_timeout(p))


def overload(ctx: Context) -> dict[str, Any]:
    """Logins at `factor` × the admission limit from tenants of very different sizes,
    with admission on, then off: per-tenant shares, Jain's indices, `/healthz`."""
    p, ov = ctx.plan, ctx.plan.overload
    if p.url is not None:
        return {"skipped": "needs servers it starts itself (admission on and off); not with --url"}
    runs = []
    for mode in ("on", "off"):
        ctx.say(f"   -- admission {mode}")
        extra = [
            "--admission",
            mode,
            "--session-rate",
            f"{ov.session_rate:g}",
            "--session-burst",
            f"{ov.session_burst:g}",
        ]
        leg = f"overload-{mode}"
        json_path = ctx.work / f"{leg}.json"
        timeout = burst_timeout(ov.ramp, ov.duration)
        with rushhour(ctx, leg, extra) as (info, url, pid):
            args = _burst(
                ctx,
                url,
                pid,
                json_path,
                clients=ov.clients,
                ramp=ov.ramp,
                duration=ov.duration,
                tenants=ov.tenants,
                tenant_skew=ov.tenant_skew,
            )
            runs.append(measure(ctx, leg, f"admission {mode}", info, args, json_path, timeout, healthz=True))
    return {"runs": runs, **overload_fairness(runs, ov.ramp)}


def overload_fairness(runs: list[dict[str, Any]], at_s: float) -> dict[str, Any]:
    """Per-run fairness at the end of the offered ramp (all demand in, most of it still
    waiting under admission) and at the end of the run."""
    fairness: dict[str, Any] = {}
    final: dict[str, Any] = {}
    for run in runs:
        tenants = ((run.get("generator") or {}).get("report") or {}).get("tenants")
        if tenants:
            fairness[run["name"]] = fairness_at(tenants, at_s)
            final[run["name"]] = fairness_at(tenants, None)
    return {"fairness_at_s": at_s, "fairness": fairness, "fairness_final": final}


RUNNERS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "morning": morning,
    "fanout": fanout,
    "idle": idle,
    "overload": overload,
    "setup": setup,
}
#: Legs that need the generator's `burst` scenario.
NEEDS_BURST = frozenset({"morning", "idle", "overload", "setup"})
