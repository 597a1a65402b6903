"""`rushhour bench burst`'s own modules on small handmade documents: Jain's index and
shares, the /healthz summary, the tables, the JSON and the plots, the generator runner."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from rushhour.bench import _generator, _healthz, _plot, _report
from rushhour.bench._cli import add_arguments, plan_from
from rushhour.bench._fairness import fairness_at, jain_index, max_min_shares, served_by
from rushhour.bench._legs import idle_rss, other_load, overload_fairness
from rushhour.bench._plan import Overload, burst_args, redacted

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def hist(p50: int, p99: int, peak: int, count: int = 100) -> dict[str, Any]:
    return {
        "count": count,
        "mean_us": p50,
        "p50_us": p50,
        "p90_us": p99,
        "p99_us": p99,
        "p999_us": peak,
        "max_us": peak,
    }


def burst_report(clients: int = 2000, *, tenants: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A `rushhour-burst burst --json` document, shaped as the generator writes it."""
    # One entry per second: `served` and `connected` so far, the others per second.
    timeline = [
        {
            "t": t,
            "served": min(clients, 500 * (t + 1)),
            "refused": 60 if t < 5 else 0,
            "retries": 50 if t < 5 else 0,
            "connected": min(clients, 500 * (t + 1)),
            "sent": 500,
            "deliveries": 2500,
            "delivery_p99_us": 3000 + 100 * t,
            "join_p99_us": 5000 if t < 6 else None,
        }
        for t in range(15)
    ]
    return {
        "scenario": "burst",
        "config": {"clients": clients},
        "sessions": {
            "offered": clients,
            "served": clients,
            "refused": 310,
            "retried": 240,
            "failed": 0,
            "resumed": 3,
            "dropped": 0,
            "all_served_s": 4.75,
            "setup_per_s": 421.0,
        },
        "tenants": tenants
        or [{"tenant": "t0", "clients": clients, "served": clients, "refused": 310, "served_at_s": []}],
        "join_latency": hist(4200, 9100, 12000),
        "delivery": hist(1500, 7300, 20500, 50_000),
        "delivery_after_ramp": hist(1200, 3100, 8000, 40_000),
        "chat": {
            "sent": 5000,
            "acked": 5000,
            "deliveries": 25000,
            "deliveries_per_s": 2500.0,
            "lost": 0,
            "duplicated": 0,
            "out_of_order": 0,
        },
        "signals": {"sent": 800, "received": 800, "lost": 0, "duplicated": 0},
        "meetings": {"created": 100, "joined": 500, "join_refused": 0, "failed": 0},
        "timeline": timeline,
        "generator_cpu_s": 3.2,
        "server_cpu_s": 9.1,
        "server_rss_kib_max": 180_000,
        "ok": True,
        "errors": [],
    }


def fanout_report(rate: float) -> dict[str, Any]:
    """A `rushhour-burst fanout --json` document (fields as in benches/results)."""
    return {
        "scenario": "fanout",
        "target": "rushhour",
        "subscribers": 1000,
        "deliveries_per_s": rate,
        "delivery": hist(15000, 38000, 82000, 1000),
        "order": {"subscribers": 1000, "clean": 1000, "gaps": 0, "missing": 0, "repeats": 0, "behind": 0},
        "other_cores": 0.02,
        "ok": True,
    }


def run_of(name: str, report: dict[str, Any], *, healthz: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    samples = [
        {"t": i * 0.2, "rss_kib": 100_000 + 1000 * i, "cpu_s": 0.1 * i, "cores": 0.5, "fds": 20 + 100 * i}
        for i in range(20)
    ]
    return {
        "name": name,
        "server": {"name": "rushhour", "command": ["rushhour", "serve"], "pid": 1, "url": "ws://127.0.0.1:1/ws"},
        "generator": {"command": ["rushhour-burst"], "returncode": 0, "error": None, "wall_s": 12.0, "report": report},
        "server_proc": {"rss_max_kib": 119_000, "cpu_s": 1.9, "cores": 0.5, "rss_start_kib": 100_000},
        "server_timeline": samples,
        "healthz": {"summary": _healthz.summarize(healthz), "polls": healthz} if healthz is not None else None,
        "ok": True,
    }


def overload_tenants(fair: bool) -> list[dict[str, Any]]:
    """Three tenants of 600, 300 and 100 clients; 300 served by 2 s: fairly (100 each)
    or in proportion to demand (180, 90, 30)."""
    served = [100, 100, 100] if fair else [180, 90, 30]
    out = []
    for i, (clients, early) in enumerate(zip([600, 300, 100], served, strict=True)):
        times = [1.0 + j / early for j in range(early)] + [3.0 + j / clients for j in range(clients - early)]
        out.append({"tenant": f"t{i}", "clients": clients, "served": clients, "refused": 5, "served_at_s": times})
    return out


def sample_doc() -> dict[str, Any]:
    polls = [{"t": i * 0.15, "status": 503 if 3 < i < 8 else 200, "ms": 1.5, "error": None} for i in range(20)]
    polls[10] = {"t": 1.5, "status": None, "ms": 1000.0, "error": "TimeoutError"}
    overload_runs = [
        run_of("admission on", burst_report(1000, tenants=overload_tenants(True)), healthz=polls),
        run_of("admission off", burst_report(1000, tenants=overload_tenants(False)), healthz=polls[:5]),
    ]
    return {
        "benchmark": "burst",
        "started": "2026-11-27T09:00:00+00:00",
        "wall_s": 98.7,
        "config": {"overload": {"clients": 1000, "ramp": 2.0, "factor": 5.0, "session_rate": 100.0, "tenants": 3}},
        "machine": {"cpus": 2, "cpu": "Test CPU", "kernel": "6.1"},
        "git": {"commit": "abc1234", "dirty": False},
        "legs": {
            "morning": {"runs": [run_of("morning", burst_report())]},
            "fanout": {
                "runs": [run_of("rushhour", fanout_report(2_000_000.0)), run_of("naive", fanout_report(25_000.0))],
                "skipped_peers": [{"peer": "redis", "reason": "redis-server not found"}],
            },
            "idle": {
                "runs": [run_of("idle", burst_report(500))],
                "clients": 500,
                "rss_before_kib": 60_000,
                "rss_with_kib": 80_000,
                "kib_per_connection": 40.0,
            },
            "overload": {"runs": overload_runs, **overload_fairness(overload_runs, 2.0)},
            "setup": {"skipped": "not asked"},
        },
        "notes": [],
        "ok": True,
    }


# -- Jain's index and shares -----------------------------------------------------------


def test_jain_index_known_values() -> None:
    assert jain_index([1, 1, 1, 1]) == pytest.approx(1.0)
    assert jain_index([1, 0, 0, 0]) == pytest.approx(0.25)
    assert jain_index([1, 2]) == pytest.approx(9 / 10)
    assert jain_index([3, 1, 1, 1]) == pytest.approx(36 / 48)
    assert jain_index([5.0]) == pytest.approx(1.0)
    # Scale does not matter; empty or all-zero input is undefined.
    assert jain_index([10, 20]) == pytest.approx(jain_index([1, 2]) or math.nan)
    assert jain_index([]) is None
    assert jain_index([0, 0]) is None


def test_max_min_shares_fill_small_demands_first() -> None:
    assert max_min_shares([1, 5, 10], 9) == pytest.approx([1, 4, 4])
    assert max_min_shares([1, 5, 10], 100) == pytest.approx([1, 5, 10])
    assert max_min_shares([4, 4], 0) == [0.0, 0.0]


def test_fairness_of_equal_turns_and_of_proportional_service() -> None:
    fair = fairness_at(overload_tenants(True), 2.0)
    assert fair["served"] == 300 and fair["offered"] == 1000
    assert [t["served"] for t in fair["tenants"]] == [100, 100, 100]
    assert fair["jain_max_min"] == pytest.approx(1.0)
    # Shares 1/3 each against demands 0.6, 0.3, 0.1: ratios 5/9, 10/9, 10/3.
    ratios = [5 / 9, 10 / 9, 10 / 3]
    assert [t["ratio"] for t in fair["tenants"]] == pytest.approx(ratios)
    assert fair["jain"] == pytest.approx(sum(ratios) ** 2 / (3 * sum(r * r for r in ratios)))

    proportional = fairness_at(overload_tenants(False), 2.0)
    assert proportional["jain"] == pytest.approx(1.0)
    assert proportional["jain_max_min"] < 1.0
    # At the end everyone is in: both views agree on 1.0.
    final = fairness_at(overload_tenants(True), None)
    assert final["jain"] == pytest.approx(1.0)


def test_fairness_with_nothing_served_is_undefined() -> None:
    tenants = [{"tenant": "a", "clients": 5, "served_at_s": [3.0]}, {"tenant": "b", "clients": 1, "served_at_s": []}]
    nothing = fairness_at(tenants, 1.0)
    assert nothing["served"] == 0 and nothing["jain"] is None and nothing["jain_max_min"] is None
    assert served_by([3.0, 1.0, 2.0], 2.0) == 2


# -- /healthz, idle memory, plan ------------------------------------------------------


def test_healthz_summary_counts_statuses_and_the_longest_gap() -> None:
    polls = [
        {"t": 0.0, "status": 200, "ms": 1.0, "error": None},
        {"t": 0.15, "status": 503, "ms": 3.0, "error": None},
        {"t": 0.3, "status": None, "ms": 1000.0, "error": "TimeoutError"},
        {"t": 1.3, "status": 200, "ms": 2.0, "error": None},
    ]
    summary = _healthz.summarize(polls)
    assert summary["polls"] == 4 and summary["answered"] == 3 and not summary["kept_answering"]
    assert summary["statuses"] == {"200": 2, "503": 1, "none": 1}
    assert summary["max_ms"] == 3.0
    assert summary["longest_gap_s"] == pytest.approx(1.302 - 0.153)
    assert _healthz.summarize(polls[:2])["kept_answering"]
    assert _healthz.healthz_address("ws://127.0.0.1:8765/ws") == ("127.0.0.1", 8765)


def test_idle_rss_takes_the_samples_with_the_clients_connected() -> None:
    timeline = [
        {"t": 0.0, "rss_kib": 50_000, "fds": 20},
        {"t": 0.2, "rss_kib": 70_000, "fds": 520},
        {"t": 0.4, "rss_kib": 90_000, "fds": 1010},
        {"t": 0.6, "rss_kib": 91_000, "fds": 1020},
        {"t": 0.8, "rss_kib": 92_000, "fds": 1020},
        {"t": 1.0, "rss_kib": 60_000, "fds": 20},
    ]
    assert idle_rss(timeline, 20, 1000) == 91_000
    assert idle_rss([{"t": 0, "rss_kib": 7, "fds": 25}], 20, 1000) is None  # never all connected
    assert idle_rss([{"t": 0, "rss_kib": 7, "fds": None}], 20, 1000) == 7  # fds unreadable
    assert idle_rss([], 20, 1000) is None


def test_other_load_is_what_neither_process_used() -> None:
    proc = {"machine_cores": 1.9, "cores": 0.8}
    assert other_load(proc, 3.0, 10.0) == pytest.approx(0.8)
    assert other_load({"machine_cores": 0.5, "cores": 0.4}, 3.0, 10.0) == 0.0
    assert other_load({"machine_cores": None, "cores": 0.4}, 3.0, 10.0) is None


def test_overload_offers_factor_times_the_limit() -> None:
    ov = Overload(session_rate=100, session_burst=20, factor=5, ramp=4, tenants=10)
    assert ov.clients == 2000
    # After the ramp, the logins still waiting need (2000 - 20 - 400) / 100 s to be served.
    assert ov.duration >= (2000 - 20 - 400) / 100


def test_burst_args_carry_every_flag() -> None:
    args = burst_args(
        "ws://127.0.0.1:1/ws",
        "s",
        clients=10,
        ramp=0,
        meetings=0,
        participants=3,
        rate=0,
        duration=2.5,
        sources=("127.0.0.2",),
        server_pid=42,
        json_path=Path("/tmp/x.json"),
        tenants=10,
        tenant_skew=1.2,
    )
    pairs = dict(zip(args[1::2], args[2::2], strict=False))
    assert args[0] == "burst"
    assert pairs["--ramp"] == "0" and pairs["--duration"] == "2.5" and pairs["--server-pid"] == "42"
    assert pairs["--tenants"] == "10" and pairs["--tenant-skew"] == "1.2" and pairs["--json"] == "/tmp/x.json"


def test_secrets_stay_out_of_the_report() -> None:
    assert redacted(["serve", "--secret", "s3cret", "--port", "0"]) == [
        "serve",
        "--secret",
        "<redacted>",
        "--port",
        "0",
    ]
    assert redacted(["--secret"]) == ["--secret"]


def parse(*argv: str) -> Any:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", "burst", *argv])


def test_flags_become_a_plan(tmp_path: Path) -> None:
    plan = plan_from(parse("--legs", "all", "--peer", "nats", "--peer", "none", "--out", str(tmp_path)))
    assert plan.legs == ("morning", "fanout", "idle", "overload", "setup")
    assert plan.peers == ("nats",)
    assert plan.out == tmp_path and plan.secret
    assert plan_from(parse()).peers is None
    with pytest.raises(ValueError, match="--secret"):
        plan_from(parse("--url", "ws://127.0.0.1:1/ws"))
    with pytest.raises(SystemExit):
        parse("--legs", "lunch")


# -- tables, JSON, plots --------------------------------------------------------------


def test_table_shows_the_figures() -> None:
    text = _report.table(sample_doc())
    for expected in (
        "| sessions offered | 2,000 |",
        "2,000 / 310 / 240",
        "4.75 s",
        "4.20 / 9.10 / 12.0 ms",  # join p50 / p99 / max
        "1.50 / 7.30 / 20.5 ms",  # delivery
        "| deliveries/s | 2,500 |",
        "| chat lost / duplicated | 0 / 0 |",
        "116.2 MiB",  # server RSS max, from the /proc sampler
        "0.50 cores (1.9 s)",
        "| 500 | 58.6 MiB | 78.1 MiB | 40.0 |",  # idle
        "| naive | 25,000 | 0.0125× | 80× |",
        "Jain's index, served share ÷ demand share",
        "redis skipped: redis-server not found",
        "setup leg skipped: not asked",
        "commit abc1234",
    ):
        assert expected in text, expected
    # Every markdown table is rectangular.
    for block in text.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if rows:
            assert len({row.count(" | ") for row in rows}) == 1, block


def test_overload_table_reports_both_runs() -> None:
    text = _report.overload_table(sample_doc())
    assert "served share (admission on)" in text and "served share (admission off)" in text
    jain_row = next(line for line in text.splitlines() if "served share ÷ demand share |" in line)
    cells = [c.strip() for c in jain_row.strip("|").split("|")]
    assert cells[-1] == "1.000"  # admission off served in proportion
    assert float(cells[-3]) < 0.8  # admission on gave equal turns
    assert "19/20 (200×15, 503×4, none×1)" in text


def test_a_failed_run_is_reported_not_hidden() -> None:
    doc = sample_doc()
    run = doc["legs"]["morning"]["runs"][0]
    run.update(ok=False, generator={"error": "rushhour-burst exited with 2 and wrote no report", "report": None})
    text = _report.sessions_table(doc)
    assert "FAILED: rushhour-burst exited with 2" in text


def test_write_and_plot(tmp_path: Path) -> None:
    doc = sample_doc()
    json_path, md_path = _report.write(doc, tmp_path)
    assert json.loads(json_path.read_text()) == doc
    assert md_path.read_text() == _report.table(doc)
    drawn = _plot.plot(doc, tmp_path)
    assert [p.name for p in drawn] == ["burst.png", "overload.png"]
    for path in drawn:
        assert path.read_bytes()[:8] == PNG_SIGNATURE
    # Without the overload leg, only burst.png.
    del doc["legs"]["overload"]
    assert [p.name for p in _plot.plot(doc, tmp_path / "again")] == ["burst.png"]


def test_timeline_seconds_become_points() -> None:
    timeline = [
        {"t": 0, "served": 10, "refused": 4, "delivery_p99_us": None},
        {"t": 1, "served": 30, "refused": 0, "delivery_p99_us": 2500},
    ]
    # The running total at the end of each second; per-second values in its middle.
    assert _plot.cumulative(timeline, "served") == ([0.0, 1.0, 2.0], [0.0, 10.0, 30.0])
    assert _plot.per_second(timeline, "refused") == ([0.5, 1.5], [4, 0])
    assert _plot.per_second(timeline, "delivery_p99_us", 1e-3) == ([1.5], [2.5])


# -- the generator runner, on a stand-in process --------------------------------------


def test_generator_run_shows_lines_and_reads_the_json(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    script = (
        f"import json; print('progress 1'); print('progress 2'); json.dump({{'ok': True}}, open({str(out)!r}, 'w'))"
    )
    seen: list[str] = []
    done = _generator.run([sys.executable, "-c", script], out, 30, echo=seen.append)
    assert done.returncode == 0 and done.report == {"ok": True} and done.error is None
    assert seen == ["progress 1", "progress 2"]


def test_generator_run_is_bounded(tmp_path: Path) -> None:
    seen: list[str] = []
    done = _generator.run(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        tmp_path / "none.json",
        0.5,
        echo=seen.append,
        status=lambda t: f"status {t:.0f}",
    )
    assert done.returncode is None and done.report is None
    assert done.error is not None and "bound" in done.error
    assert done.wall_s < 30


def test_generator_without_report_says_why(tmp_path: Path) -> None:
    done = _generator.run(
        [sys.executable, "-c", "import sys; print('cannot start'); sys.exit(2)"], tmp_path / "x.json", 30, echo=None
    )
    assert done.returncode == 2 and done.report is None
    assert done.error is not None and "cannot start" in done.error
