"""The plots of a `rushhour bench burst` run (matplotlib, the Agg backend: no display).

- `burst.png`: the morning leg over time: sessions served (cumulative) and refusals/s;
  delivery and join p99; the server's RSS and CPU as sampled from /proc.
- `overload.png`: admission on and off side by side: offered logins and sessions
  served (cumulative), refusals/s, Jain's indices over time, `/healthz` answers.

The generator's `timeline` has one entry per second, `t` covering `[t, t+1)`: `served`
is the running total at its end, `refused`, `retries`, `sent` and `deliveries` count
that second's events (so they are per-second rates as they stand), and `*_p99_us` are
that second's percentiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from rushhour.bench._fairness import fairness_series

#: Figure width and height per subplot, in inches; 100 dpi keeps the file small.
WIDTH, ROW_HEIGHT, DPI = 10.0, 2.6, 100
RUN_COLOURS = {"admission on": "tab:blue", "admission off": "tab:orange"}
STATUS_MARKERS = {"200": "o", "503": "s", "None": "x"}


def cumulative(timeline: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """A running total (`served`) at the end of each second, from (0, 0)."""
    xs, ys = [0.0], [0.0]
    for p in timeline:
        xs.append(float(p.get("t", 0)) + 1.0)
        ys.append(float(p.get(key) or 0))
    return xs, ys


def per_second(timeline: Sequence[dict[str, Any]], key: str, scale: float = 1.0) -> tuple[list[float], list[float]]:
    """One second's count or percentile (`refused`, `delivery_p99_us`) at the middle of
    its second, times `scale`; seconds without a value are left out."""
    pts = [(float(p.get("t", 0)) + 0.5, p[key] * scale) for p in timeline if p.get(key) is not None]
    return [t for t, _ in pts], [v for _, v in pts]


def _report(run: dict[str, Any]) -> dict[str, Any]:
    report = (run.get("generator") or {}).get("report")
    return report if isinstance(report, dict) else {}


def _main_run(doc: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    legs = doc.get("legs", {})
    for leg in ("morning", "setup", "idle"):
        for run in legs.get(leg, {}).get("runs", []):
            if _report(run).get("timeline"):
                return leg, run
    return None


def plot_burst(doc: dict[str, Any], path: Path) -> Path | None:
    """Draws `burst.png` from the first burst-shaped run with a timeline (the morning
    leg when it ran); None when there is none."""
    found = _main_run(doc)
    if found is None:
        return None
    leg, run = found
    timeline = _report(run)["timeline"]
    fig, axes = plt.subplots(3, 1, figsize=(WIDTH, 3 * ROW_HEIGHT), sharex=True, dpi=DPI)
    try:
        ax = axes[0]
        ax.plot(*cumulative(timeline, "served"), color="tab:blue", label="sessions served (cumulative)")
        ax.set_ylabel("sessions")
        right = ax.twinx()
        right.plot(*per_second(timeline, "refused"), color="tab:red", alpha=0.7, label="refusals/s")
        right.set_ylim(bottom=0)
        right.set_ylabel("refusals/s")
        _legend(ax, right)
        ax.set_title(f"rushhour bench burst: {leg} leg")

        ax = axes[1]
        for key, label, colour in (
            ("delivery_p99_us", "delivery p99", "tab:purple"),
            ("join_p99_us", "join p99", "tab:brown"),
        ):
            xs, ys = per_second(timeline, key, 1e-3)
            if xs:
                ax.plot(xs, ys, "o-", markersize=3, label=label, color=colour)
        ax.set_ylabel("ms")
        ax.legend(loc="upper right", fontsize="small")

        ax = axes[2]
        samples = run.get("server_timeline") or []
        if samples:
            ax.plot([s["t"] for s in samples], [s["rss_kib"] / 1024 for s in samples], color="tab:green", label="RSS")
            ax.set_ylabel("server RSS (MiB)")
            right = ax.twinx()
            cores = [(s["t"], s["cores"]) for s in samples if s.get("cores") is not None]
            right.plot([t for t, _ in cores], [c for _, c in cores], color="tab:gray", alpha=0.7, label="CPU")
            right.set_ylabel("server CPU (cores)")
            _legend(ax, right)
        else:
            ax.text(0.5, 0.5, "server not sampled (--url without --server-pid)", ha="center", transform=ax.transAxes)
        ax.set_xlabel("seconds since the generator started")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def plot_overload(doc: dict[str, Any], path: Path) -> Path | None:
    """Draws `overload.png` (admission on and off); None when the leg did not run."""
    leg = doc.get("legs", {}).get("overload", {})
    runs = [r for r in leg.get("runs", []) if _report(r)]
    if not runs:
        return None
    plan = (doc.get("config") or {}).get("overload") or {}
    fig, axes = plt.subplots(4, 1, figsize=(WIDTH, 4 * ROW_HEIGHT), sharex=True, dpi=DPI)
    try:
        end = 0.0
        slowest: list[float] = []
        for run in runs:
            name, report = run.get("name", "?"), _report(run)
            colour = RUN_COLOURS.get(name, "tab:gray")
            timeline = report.get("timeline") or []
            ts, served = cumulative(timeline, "served")
            end = max(end, ts[-1])
            axes[0].plot(ts, served, color=colour, label=f"served, {name}")
            axes[1].plot(*per_second(timeline, "refused"), color=colour, label=name)
            series = fairness_series(report.get("tenants") or [], end)
            times = [p["t"] for p in series]
            axes[2].plot(times, [p["jain"] for p in series], "-", color=colour, label=f"served ÷ demand, {name}")
            axes[2].plot(times, [p["jain_max_min"] for p in series], ":", color=colour, label=f"vs max-min, {name}")
            polls = ((run.get("healthz") or {}).get("polls")) or []
            slowest += [p["ms"] for p in polls]
            for status in sorted({str(p["status"]) for p in polls}):
                pts = [p for p in polls if str(p["status"]) == status]
                axes[3].scatter(
                    [p["t"] for p in pts],
                    [p["ms"] for p in pts],
                    s=10,
                    marker=STATUS_MARKERS.get(status, "x"),
                    color=colour,
                    label=f"{'no answer' if status == 'None' else status}, {name}",
                )
        clients, ramp = plan.get("clients"), plan.get("ramp")
        if clients:
            xs = [0.0, float(ramp or 0.0), max(end, float(ramp or 0.0))]
            axes[0].plot(
                xs, [0.0, float(clients), float(clients)], "--", color="black", zorder=3, label="logins offered"
            )
        axes[0].set_ylabel("sessions")
        axes[0].set_title(
            f"overload: logins offered at {plan.get('factor', '?')}x the admission limit "
            f"({plan.get('session_rate', '?')}/s), {plan.get('tenants', '?')} tenants"
        )
        axes[1].set_ylabel("refusals/s")
        axes[1].set_ylim(bottom=0)
        axes[2].set_ylabel("Jain's index")
        axes[2].set_ylim(0, 1.05)
        axes[3].set_ylabel("/healthz answer (ms)")
        axes[3].set_yscale("symlog", linthresh=10)
        axes[3].set_ylim(0, max([10.0, *slowest]) * 2)
        axes[3].set_xlabel("seconds since the generator started")
        for ax in axes:
            ax.legend(loc="best", fontsize="x-small")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def _legend(left: Any, right: Any) -> None:
    handles, labels = left.get_legend_handles_labels()
    more, more_labels = right.get_legend_handles_labels()
    left.legend(handles + more, labels + more_labels, loc="upper left", fontsize="small")


def plot(doc: dict[str, Any], out: Path) -> list[Path]:
    """Every plot the run has data for, written into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    drawn = [plot_burst(doc, out / "burst.png"), plot_overload(doc, out / "overload.png")]
    return [p for p in drawn if p is not None]
