"""The report of a `rushhour bench burst` run: markdown tables and the JSON document.

Everything here reads the combined document the run writes (`burst.json`), so a
table can be redrawn from a saved run. The document:

```
{"benchmark": "burst", "started", "wall_s", "config", "machine", "git", "versions",
 "legs": {NAME: {"runs": [RUN, ...], ...derived figures} | {"skipped": REASON}},
 "notes": [...], "ok"}
RUN = {"name", "server": {"name", "command", "pid", "url", "version"} | null,
       "generator": {"command", "returncode", "error", "wall_s", "report"},
       "server_proc": {"rss_max_kib", "cpu_s", "cores", ...}, "server_timeline": [...],
       "healthz": {"summary": {...}, "polls": [...]} | null, "ok"}
```

`report` is the generator's own JSON, kept raw.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Burst-shaped legs, in table column order, with their column titles.
BURST_COLUMNS = (("morning", "morning"), ("setup", "setup"), ("idle", "idle"))
OVERLOAD_TITLES = {"admission on": "overload, admission on", "admission off": "overload, admission off"}


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ms(us: Any) -> str:
    if us is None:
        return "-"
    ms = us / 1000
    return f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def _lat(hist: dict[str, Any] | None) -> str:
    """p50 / p99 / max of a generator histogram, in ms."""
    if not hist or not hist.get("count"):
        return "-"
    return f"{_ms(hist.get('p50_us'))} / {_ms(hist.get('p99_us'))} / {_ms(hist.get('max_us'))} ms"


def _mib(kib: Any) -> str:
    return "-" if kib is None else f"{kib / 1024:,.1f} MiB"


def _cpu(proc: dict[str, Any] | None, report: dict[str, Any] | None) -> str:
    """Mean cores over the run and CPU seconds: our /proc sampler first, the generator's
    `server_cpu_s` as the fallback (a server given by `--url` without `--server-pid`)."""
    if proc and proc.get("cores") is not None:
        return f"{proc['cores']:.2f} cores ({proc['cpu_s']:.1f} s)"
    if report and report.get("server_cpu_s") is not None:
        return f"{report['server_cpu_s']:.1f} s"
    return "-"


def burst_runs(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(column title, run) of every run of the `burst` scenario, in table order."""
    legs = doc.get("legs", {})
    for leg, title in BURST_COLUMNS:
        for run in legs.get(leg, {}).get("runs", []):
            yield title, run
    for run in legs.get("overload", {}).get("runs", []):
        yield OVERLOAD_TITLES.get(run.get("name", ""), f"overload, {run.get('name')}"), run


def _report(run: dict[str, Any]) -> dict[str, Any]:
    report = (run.get("generator") or {}).get("report")
    return report if isinstance(report, dict) else {}


def _burst_rows(run: dict[str, Any]) -> list[str]:
    r = _report(run)
    s = r.get("sessions", {})
    chat = r.get("chat", {})
    signals = r.get("signals", {})
    meetings = r.get("meetings", {})
    all_served = s.get("all_served_s")
    proc = run.get("server_proc") or {}
    rss = proc.get("rss_max_kib") or r.get("server_rss_kib_max")
    if run.get("generator", {}).get("error") and not r:
        return ["failed"] + ["-"] * (len(BURST_ROW_TITLES) - 1)
    return [
        _num(s.get("offered")),
        f"{_num(s.get('served'))} / {_num(s.get('refused'))} / {_num(s.get('retried'))}",
        f"{_num(s.get('failed'))} / {_num(s.get('dropped'))} / {_num(s.get('resumed'))}",
        "never" if s and all_served is None else (f"{all_served:.2f} s" if all_served is not None else "-"),
        _num(s.get("setup_per_s")),
        f"{_num(meetings.get('joined'))} / {_num(meetings.get('join_refused'))}" if meetings else "-",
        _lat(r.get("join_latency")),
        _lat(r.get("delivery")),
        _lat(r.get("delivery_after_ramp")),
        _num(chat.get("deliveries_per_s")),
        f"{_num(chat.get('lost'))} / {_num(chat.get('duplicated'))}" if chat else "-",
        f"{_num(signals.get('lost'))} / {_num(signals.get('duplicated'))}" if signals else "-",
        f"{_mib(rss)}",
        _cpu(proc, r),
        _other(r, proc),
        _healthz_short(run),
    ]


BURST_ROW_TITLES = (
    "sessions offered",
    "served / refused / retried",
    "failed / dropped / resumed",
    "time until all served",
    "sessions set up per s",
    "meeting joins ok / refused",
    "join latency p50 / p99 / max",
    "delivery latency p50 / p99 / max",
    "delivery latency after the ramp",
    "deliveries/s",
    "chat lost / duplicated",
    "signals lost / duplicated",
    "server RSS max",
    "server CPU",
    "other load",
    "/healthz answered, p99",
)


def sessions_table(doc: dict[str, Any]) -> str:
    """One column per burst-shaped run (morning, setup, idle, overload on/off)."""
    runs = list(burst_runs(doc))
    if not runs:
        return ""
    columns = [_burst_rows(run) for _, run in runs]
    lines = [
        "| | " + " | ".join(title for title, _ in runs) + " |",
        "| --- |" + " ---: |" * len(runs),
    ]
    for i, title in enumerate(BURST_ROW_TITLES):
        lines.append(f"| {title} | " + " | ".join(col[i] for col in columns) + " |")
    lines.append("| checks | " + " | ".join(_verdict(run) for _, run in runs) + " |")
    return "\n".join(lines) + "\n"


def _verdict(run: dict[str, Any]) -> str:
    if run.get("ok"):
        return "ok"
    error = (run.get("generator") or {}).get("error")
    errors = _report(run).get("errors") or []
    why = error.splitlines()[0] if error else (str(errors[0]) if errors else "failed")
    return f"FAILED: {why}".replace("|", "/")


def fanout_table(doc: dict[str, Any]) -> str:
    """Fan-out deliveries/s per server, with ratios to rushhour."""
    runs = doc.get("legs", {}).get("fanout", {}).get("runs", [])
    if not runs:
        return ""
    base = next(
        (_report(r).get("deliveries_per_s") for r in runs if r.get("name") == "rushhour" and _report(r)),
        None,
    )
    lines = [
        "| server | deliveries/s | vs rushhour | rushhour is | publish→delivery p50 / p99 / max | server CPU | "
        "server RSS max | other load | order | checks |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for run in runs:
        r = _report(run)
        rate = r.get("deliveries_per_s")
        ratio = rate / base if rate and base else None
        order = r.get("order") or {}
        order_text = f"{_num(order.get('clean'))}/{_num(order.get('subscribers'))} clean" if order else "-"
        proc = run.get("server_proc") or {}
        lines.append(
            f"| {run.get('name')} | {_num(rate)} | {'-' if ratio is None else f'{ratio:.3g}×'} | "
            f"{'-' if not ratio else f'{1 / ratio:.3g}×'} | {_lat(r.get('delivery'))} | "
            f"{_cpu(proc, r)} | {_mib(proc.get('rss_max_kib'))} | {_other(r, proc)} | {order_text} | {_verdict(run)} |"
        )
    return "\n".join(lines) + "\n"


def _other(report: dict[str, Any], proc: dict[str, Any] | None = None) -> str:
    """Cores kept busy by neither the generator nor the server (the generator's own
    figure, else ours from /proc/stat): a run with much of it is not comparable with a
    quiet one."""
    other = report.get("other_cores")
    if other is None and proc:
        other = proc.get("other_cores")
    return "-" if other is None else f"{other:.2f} cores"


def idle_table(doc: dict[str, Any]) -> str:
    """Server memory before and with the idle sessions, per connection."""
    leg = doc.get("legs", {}).get("idle", {})
    if not leg.get("runs"):
        return ""
    return (
        "| idle sessions | server RSS before | with them | KiB per connection |\n"
        "| ---: | ---: | ---: | ---: |\n"
        f"| {_num(leg.get('clients'))} | {_mib(leg.get('rss_before_kib'))} | {_mib(leg.get('rss_with_kib'))} | "
        f"{_num(leg.get('kib_per_connection'), 1)} |\n"
    )


def overload_table(doc: dict[str, Any]) -> str:
    """Per-tenant demand and served shares with admission on and off, Jain's indices
    and whether `/healthz` kept answering."""
    leg = doc.get("legs", {}).get("overload", {})
    fairness = leg.get("fairness") or {}
    names = [n for n in ("admission on", "admission off") if n in fairness]
    if not names:
        return ""
    at = leg.get("fairness_at_s")
    head = ["tenant", "clients", "demand share"]
    for n in names:
        head += [f"served share ({n})", f"served ÷ demand ({n})"]
    lines = [
        f"Shares of the sessions served in the first {_num(at, 1)} s (the offered ramp):",
        "",
        _row(head),
        "| --- |" + " ---: |" * (len(head) - 1),
    ]
    for i, t in enumerate(fairness[names[0]]["tenants"]):
        cells = [str(t["tenant"]), _num(t["clients"]), _pct(t["demand_share"])]
        for n in names:
            row = fairness[n]["tenants"][i]
            cells += [_pct(row["served_share"]), _num(row["ratio"], 2)]
        lines.append(_row(cells))
    for title, key in (
        ("Jain's index, served share ÷ demand share", "jain"),
        ("Jain's index, served ÷ max-min fair share", "jain_max_min"),
    ):
        cells = [title, "", ""]
        for n in names:
            cells += ["", _num(fairness[n][key], 3)]
        lines.append(_row(cells))
    runs = {r.get("name"): r for r in leg.get("runs", [])}
    cells = ["/healthz answered", "", ""]
    for n in names:
        cells += ["", _healthz_cell(runs.get(n))]
    lines.append(_row(cells))
    return "\n".join(lines) + "\n"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _healthz_short(run: dict[str, Any]) -> str:
    summary = (run.get("healthz") or {}).get("summary")
    if not summary:
        return "-"
    return f"{summary['answered']}/{summary['polls']}, {_num(summary['p99_ms'], 1)} ms"


def _healthz_cell(run: dict[str, Any] | None) -> str:
    summary = ((run or {}).get("healthz") or {}).get("summary")
    if not summary:
        return "-"
    statuses = ", ".join(f"{k}×{v}" for k, v in sorted(summary["statuses"].items()))
    return (
        f"{summary['answered']}/{summary['polls']} ({statuses}); p99 {_num(summary['p99_ms'], 1)} ms, "
        f"max {_num(summary['max_ms'], 1)} ms, longest gap {summary['longest_gap_s']:.2f} s"
    )


def table(doc: dict[str, Any]) -> str:
    """All the tables of a run, as markdown."""
    parts = []
    machine = doc.get("machine", {})
    commit = (doc.get("git") or {}).get("commit")
    parts.append(
        f"rushhour bench burst: {machine.get('cpus')} cores ({machine.get('cpu')}), kernel {machine.get('kernel')}, "
        f"commit {commit or 'unknown'}, {_num(doc.get('wall_s'), 1)} s in all\n"
    )
    for title, text in (
        ("Sessions, meetings and chat", sessions_table(doc)),
        ("Idle memory", idle_table(doc)),
        ("Fan-out: one publisher, many subscribers", fanout_table(doc)),
        ("Overload: admission on and off", overload_table(doc)),
    ):
        if text:
            parts.append(f"## {title}\n\n{text}")
    skipped = [(name, leg["skipped"]) for name, leg in doc.get("legs", {}).items() if leg.get("skipped")]
    notes = [f"{name} leg skipped: {why}" for name, why in skipped]
    for name, leg in doc.get("legs", {}).items():
        if leg.get("error"):
            notes.append(f"{name} leg failed: {leg['error']}")
        notes += [f"{s['peer']} skipped: {s['reason']}" for s in leg.get("skipped_peers", [])]
    notes += list(doc.get("notes", []))
    if notes:
        parts.append("\n".join(f"- {n}" for n in notes) + "\n")
    return "\n".join(parts)


def write(doc: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Writes `burst.json` (everything) and `report.md` (the tables) into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "burst.json"
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    md_path = out / "report.md"
    md_path.write_text(table(doc))
    return json_path, md_path
