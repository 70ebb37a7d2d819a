"""The peer comparison (`--peers`): each of the kernel gateway's figures against the
server's figure from the same run, as how many times better ours is, beside the
performance issue's target where it sets one."""

from __future__ import annotations

from dataclasses import dataclass

from .figures import (
    COLD_CREATE,
    QUERY_RT,
    STREAM_RT,
    Figure,
    Plan,
    kernel_unique,
    query_load,
    until_print,
)
from .kernel_gateway import (
    CLIENTS,
    PLAIN_RT,
    START,
    TUNED_RT,
    idle_kernels,
    idle_uss,
    load_name,
)
from .peer_env import GATEWAY_VERSION

PEER = f"Jupyter Kernel Gateway {GATEWAY_VERSION}"


@dataclass(frozen=True)
class Pair:
    what: str
    ours: str  # figure names
    theirs: str
    rate: bool = False  # compare requests per second (more is better); else p50 (less is)
    target: float | None = None  # ours at least this many times better

    def value(self, figure: Figure) -> float | None:
        return figure.rate if self.rate else figure.stats["p50"]


def pairs(plan: Plan) -> list[Pair]:
    return [
        Pair("python3 kernel start until print(1), p50", until_print(COLD_CREATE), START,
             target=100),
        Pair("print(1) round trip, p50: their plain client", QUERY_RT, PLAIN_RT),
        Pair("print(1) round trip, p50: their tuned client", QUERY_RT, TUNED_RT, target=10),
        # both over an open WebSocket, for information: the target is set on the query
        Pair("print(1) round trip, p50: tuned vs our stream", STREAM_RT, TUNED_RT),
        *(Pair(f"print(1) executes per s, {n} clients", query_load(n), load_name(n), rate=True)
          for n in CLIENTS),
        Pair("memory per idle kernel, p50", kernel_unique(plan.density),
             idle_uss(idle_kernels(plan)), target=10),
    ]  # fmt: skip


def compare(plan: Plan, figures: list[Figure]) -> list[dict]:
    """One row per pair whose two figures were measured: both values, and how many times
    better ours is (their time or memory over ours; our rate over theirs)."""
    by_name = {f.name: f for f in figures}
    rows = []
    for pair in pairs(plan):
        ours, theirs = by_name.get(pair.ours), by_name.get(pair.theirs)
        if ours is None or theirs is None:
            continue
        a, b = pair.value(ours), pair.value(theirs)
        better = None
        if a and b:
            better = a / b if pair.rate else b / a
        met = None if pair.target is None or better is None else better >= pair.target
        rows.append({
            "what": pair.what, "ours": pair.ours, "theirs": pair.theirs,
            "unit": "per s" if pair.rate else ours.unit, "ours_value": a, "theirs_value": b,
            "ours_better_by": better, "target": pair.target, "target_met": met,
        })  # fmt: skip
    return rows
