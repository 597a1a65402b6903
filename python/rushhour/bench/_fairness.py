"""Fairness across tenants: who got served, against what each asked for.

Two yardsticks over the same per-tenant counts at one instant:

- **proportional**: Jain's index of `served share / demand share` per tenant. 1.0 when
  every tenant got the same fraction of its logins in; it drops when big tenants get
  proportionally more (or less) than small ones.
- **max-min**: Jain's index of `served / max-min fair share`, where the fair share
  splits the sessions served so far equally among tenants, none getting more than it
  asked (water-filling). 1.0 when the server gave each tenant an equal turn, which is
  what its per-tenant admission buckets aim at; under overload that is *not*
  proportional, so the two indices tell different stories and both are reported.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from typing import Any


def jain_index(values: Sequence[float]) -> float | None:
    """Jain's fairness index, `(Σx)² / (n·Σx²)`: 1.0 when all equal, `1/n` when one
    value holds everything. None when empty or all zero (undefined)."""
    if not values:
        return None
    total = sum(values)
    squares = sum(x * x for x in values)
    if squares <= 0:
        return None
    return total * total / (len(values) * squares)


def max_min_shares(demands: Sequence[float], capacity: float) -> list[float]:
    """Splits `capacity` among `demands` max-min fairly: equal parts, none above its
    demand, what a small demand leaves over going to the others."""
    alloc = [0.0] * len(demands)
    remaining = max(0.0, capacity)
    order = sorted(range(len(demands)), key=lambda i: demands[i])
    for rank, i in enumerate(order):
        give = min(float(demands[i]), remaining / (len(order) - rank))
        alloc[i] = give
        remaining -= give
    return alloc


def served_by(times: Sequence[float], at_s: float) -> int:
    """How many of the (sorted or not) serve times are at or before `at_s`."""
    ordered = times if _is_sorted(times) else sorted(times)
    return bisect.bisect_right(ordered, at_s)


def _is_sorted(xs: Sequence[float]) -> bool:
    return all(a <= b for a, b in itertools.pairwise(xs))


def fairness_at(tenants: Sequence[dict[str, Any]], at_s: float | None) -> dict[str, Any]:
    """Per-tenant demand and served shares at `at_s` (None: at the end), with both
    Jain indices (module doc). `tenants` are the generator's `tenants` entries."""
    rows: list[dict[str, Any]] = []
    demands = [float(t.get("clients", 0)) for t in tenants]
    served = []
    for t in tenants:
        times = t.get("served_at_s") or []
        served.append(float(served_by(times, at_s) if at_s is not None else t.get("served", len(times))))
    total_demand, total_served = sum(demands), sum(served)
    fair = max_min_shares(demands, total_served)
    ratios: list[float] = []
    fair_ratios: list[float] = []
    for t, demand, got, share in zip(tenants, demands, served, fair, strict=True):
        demand_share = demand / total_demand if total_demand else None
        served_share = got / total_served if total_served else None
        ratio = served_share / demand_share if served_share is not None and demand_share else None
        fair_ratio = got / share if share > 0 else None
        if ratio is not None:
            ratios.append(ratio)
        if fair_ratio is not None:
            fair_ratios.append(fair_ratio)
        rows.append(
            {
                "tenant": t.get("tenant"),
                "clients": int(demand),
                "served": int(got),
                "demand_share": demand_share,
                "served_share": served_share,
                "ratio": ratio,
                "max_min_share": share / total_served if total_served else None,
                "ratio_max_min": fair_ratio,
            }
        )
    return {
        "at_s": at_s,
        "served": int(total_served),
        "offered": int(total_demand),
        "tenants": rows,
        "jain": jain_index(ratios) if len(ratios) == len(rows) else None,
        "jain_max_min": jain_index(fair_ratios) if len(fair_ratios) == len(rows) else None,
    }


def fairness_series(tenants: Sequence[dict[str, Any]], until_s: float, step_s: float = 0.5) -> list[dict[str, Any]]:
    """Both Jain indices every `step_s` from the first step to `until_s` (for the plot)."""
    points: list[dict[str, Any]] = []
    steps = int(until_s / step_s) if step_s > 0 else 0
    for k in range(1, min(steps, 10_000) + 1):
        f = fairness_at(tenants, k * step_s)
        points.append(
            {"t": round(k * step_s, 3), "served": f["served"], "jain": f["jain"], "jain_max_min": f["jain_max_min"]}
        )
    return points
