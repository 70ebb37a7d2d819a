"""./scripts/bench: flags, the plan they make, the run, and its report on stdout."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile

from . import instructions
from .cpu import cpu_clock
from .figures import Plan
from .peer_env import kernel_gateway_venv
from .peers import PEER, compare
from .report import report_json, report_table
from .run import run, step

SYSTEM_PYTHON = "/usr/bin/python3"


def plan_for(args: argparse.Namespace) -> Plan:
    runs = args.runs or (5 if args.quick else 100)
    density = args.density or (20 if args.quick else 200)
    return Plan(
        runs=runs,
        queries=runs * 10,
        seconds=1.0 if args.quick else 3.0,
        density=density,
        probes=min(runs, 20, density),
        burst=32 if args.quick else 256,
        klass=10 if args.quick else 200,
        peers=args.peers,
    )


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(
        description="the HTTP API's latency, throughput and density beside baselines"
    )
    parser.add_argument("--quick", action="store_true", help="a CI-sized smoke run (~10 s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--figures", metavar="DIR",
        help="also write DIR/report.json and draw it as SVG there (docs/bench)",
    )  # fmt: skip
    parser.add_argument(
        "--runs", type=positive,
        help="creates, batch cycles, command runs per figure (default 100, quick 5; queries 10x)",
    )  # fmt: skip
    parser.add_argument(
        "--density", type=positive, help="idle kernels alive at once (default 200, quick 20)"
    )
    parser.add_argument(
        "--peers", action="store_true",
        help=f"also measure {PEER} the same way, beside the server (installed on first use"
        " into .bench/peers/kernel-gateway from the package index)",
    )  # fmt: skip
    parser.add_argument(
        "--instructions", action="store_true",
        help="instead of timing, count the server's instructions per request under callgrind"
        " (valgrind): figures that do not drift with the machine's speed, to compare commits",
    )  # fmt: skip
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("must run as root (the server makes namespaces and cgroups)")
    if args.instructions:
        return count_instructions(args)
    plan = plan_for(args)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up as on Ctrl-C
    try:
        gateway_venv = kernel_gateway_venv(step) if plan.peers else None  # before the clock
        before = cpu_clock()
        figures, notes = run(plan, gateway_venv)
    except KeyboardInterrupt:
        step("interrupted")
        return 130
    wall, host, ours = (end - start for start, end in zip(before, cpu_clock(), strict=True))
    step(f"done in {wall:.0f} s")
    notes.append(
        f"the rest of the host (other processes, kernel threads) kept {(host - ours) / wall:.2f}"
        f" of the {os.cpu_count()} CPUs busy on average during the {wall:.0f} s run"
    )
    peers = compare(plan, figures) if plan.peers else None
    print(
        report_json(figures, notes, plan, peers=peers)
        if args.json
        else report_table(figures, notes, peers)
    )
    if args.figures:
        draw(report_json(figures, notes, plan, indent=None, peers=peers), args.figures)
    return 0


def count_instructions(args: argparse.Namespace) -> int:
    """--instructions: its four figures alone (a batch is --runs requests)."""
    why_not = instructions.available()
    if why_not:
        step(f"cannot count instructions: {why_not}")
        return 1
    batches, size = (2, args.runs or 10) if args.quick else (3, args.runs or 100)
    step(f"server instructions per request under callgrind ({batches} batches of {size})")
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as tmp:
        figures = instructions.measure_instructions(tmp, batches, size)
    notes = ["server instructions: the server process's own, in user space (callgrind)"]
    plan = plan_for(args)
    print(report_json(figures, notes, plan) if args.json else report_table(figures, notes, None))
    return 0


def draw(report: str, directory: str) -> None:
    """The report as DIR/report.json and its SVG drawings (scripts/bench_figures.py,
    on the system python3, whose Debian matplotlib the kernels use too)."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "report.json")
    with open(path, "w") as f:
        f.write(report + "\n")
    script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench_figures.py")
    subprocess.run([SYSTEM_PYTHON, script, path, directory], check=True)
    step(f"figures drawn in {directory}")
