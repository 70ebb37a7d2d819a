"""The report: a table for people, JSON for machines, each figure beside its
baseline as a multiple of it, and with --peers the comparison with the peer
(peers.py): both figures and how many times better ours is."""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import asdict

from .figures import Figure, Plan
from .peers import PEER


def ratios(figure: Figure, by_name: dict[str, Figure]) -> tuple[float | None, float | None]:
    """The figure's p50 and rate as multiples of its baseline's; None where there is none."""
    base = by_name.get(figure.baseline or "")
    if base is None:
        return None, None
    p50 = figure.stats["p50"] / base.stats["p50"] if base.stats["p50"] else None
    rate = figure.rate / base.rate if figure.rate and base.rate else None
    return p50, rate


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def report_json(
    figures: list[Figure],
    notes: list[str],
    plan: Plan,
    indent: int | None = 2,
    peers: list[dict] | None = None,
) -> str:
    """The report as JSON; `indent` None: one line (a file kept in the repository);
    `peers`, the comparison's rows, as "peers" if given."""
    by_name = {f.name: f for f in figures}
    rows = []
    for f in figures:
        x_p50, x_rate = ratios(f, by_name)
        row = {"name": f.name, "unit": f.unit, **{k: rounded(v) for k, v in f.stats.items()}}
        row |= {"baseline": f.baseline, "x_baseline_p50": rounded(x_p50)}
        if f.cpu is not None:
            row |= {"per_second": rounded(f.rate), "x_baseline_per_second": rounded(x_rate)}
            row["cpu_ms_per_request"] = {party: rounded(ms) for party, ms in f.cpu.items()}
        row["samples"] = [rounded(v) for v in f.samples]  # for the distributions' drawings
        if f.points is not None:
            row["points"] = [[rounded(x), rounded(y)] for x, y in f.points]
        rows.append(row)
    machine = {"host": os.uname().nodename, "kernel": os.uname().release, "cpus": os.cpu_count()}
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    report = {"date": date, "machine": machine, "plan": asdict(plan), "figures": rows}
    if peers is not None:
        report["peers"] = {
            "peer": PEER,
            "comparisons": [
                {k: rounded(v) if isinstance(v, float) else v for k, v in row.items()}
                for row in peers
            ],
        }
    return json.dumps(report | {"notes": notes}, indent=indent)


def number(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def table(rows: list[list[str]], specs: list[str]) -> list[str]:
    return [" ".join(map(format, row, specs)).rstrip() for row in rows]


def peer_table(peers: list[dict]) -> list[str]:
    """Ours beside theirs, and how many times better ours is (the issue's target beside)."""
    rows = [[f"vs {PEER}, same run", "ours", "theirs", "unit", "ours better by", "target"]]
    for row in peers:
        better, target, met = row["ours_better_by"], row["target"], row["target_met"]
        rows.append(
            [row["what"], number(row["ours_value"]), number(row["theirs_value"]), row["unit"],
             "" if better is None else f"{better:.1f}x",
             "" if target is None else f">= {target:g}x: {'met' if met else 'NOT met'}"]
        )  # fmt: skip
    lines = table(rows, ["<46", ">8", ">8", "<5", ">14", ""])
    return lines + [
        "(ours better by: their time or memory over ours; for executes per s, ours over theirs)"
    ]


def report_table(figures: list[Figure], notes: list[str], peers: list[dict] | None = None) -> str:
    by_name = {f.name: f for f in figures}
    rows = [["figure", "n", "p50", "p90", "p99", "unit", "per s", "x base", "baseline"]]
    for f in figures:
        x = ratios(f, by_name)[0]
        rows.append(
            [f.name, str(f.stats["n"]), *(number(f.stats[k]) for k in ("p50", "p90", "p99")),
             f.unit, "" if f.rate is None else f"{f.rate:.0f}", "" if x is None else f"{x:.2f}",
             f.baseline or ""]
        )  # fmt: skip
    lines = table(rows, ["<34", ">5", ">8", ">8", ">8", "<4", ">6", ">7", ""])
    loads = [(f.name, f.cpu) for f in figures if f.cpu]
    if loads:
        parties = list(dict.fromkeys(party for _, cpu in loads for party in cpu))
        cpu_rows = [["CPU ms per request", *parties]]
        cpu_rows += [
            [name, *(f"{cpu[p]:.2f}" if p in cpu else "" for p in parties)] for name, cpu in loads
        ]
        lines += ["", *table(cpu_rows, ["<34", *([">16"] * len(parties))])]
    if peers:
        lines += ["", *peer_table(peers)]
    return "\n".join(lines + [f"note: {n}" for n in notes])
