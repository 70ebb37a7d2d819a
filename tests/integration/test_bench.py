"""`scripts/bench --quick` still runs end to end and reports every figure. Its numbers
are measurements, never asserted here (speed is measured, not timed in tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from xml.etree import ElementTree

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPECTED = [
    "python3 -c pass",
    "bwrap python3 -c pass",
    "signed no-op (POST /v2/authorize)",
    "query print(1) round trip",
    "stream execute print(1) round trip",
    "WebSocket ping round trip",
    "terminal keystroke echo",
    "import numpy, pandas, matplotlib.pyplot in a kernel",
    "import numpy, pandas, matplotlib.pyplot in host python3",
    "kernel unique memory, after that import",
    "import numpy, pandas, matplotlib.pyplot in a kernel, no pre-import",
    "kernel unique memory, after that import, no pre-import",
    "create (warm pool)",
    "create (no pool)",
    "create (no pool, no spares)",
    "host memory per kernel, 20 alive",
    "create until print(1) finished",
    "query, 32 concurrent",
    "batch C cycle",
    "kernel unique memory, 20 alive",
    "query print(1), 20 alive",
    "python3 compile+run CPU on the host",
    "Jobe python3 run, 16 concurrent",
    "Jobe c run, 16 concurrent",
    "Jobe python3 burst of 32 at once",
    "class of 10: create + print(1), all at once",
    "class of 10: the last one's print(1)",
    "class of 10: host CPU of the burst / cores",
    "class of 10 again, the pool grown: create + print(1), all at once",
    "class of 10 again, the pool grown: host CPU of the burst / cores",
]


def test_the_quick_benchmark_reports_every_figure(tmp_path):
    out = subprocess.run(
        [sys.executable, "scripts/bench.py", "--quick", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    figures = {f["name"]: f for f in json.loads(out.stdout)["figures"]}
    for name in EXPECTED:
        assert name in figures, (name, sorted(figures))
        assert figures[name]["n"] > 0 and figures[name]["p50"] > 0, figures[name]
    assert figures["query print(1) round trip"]["baseline"] == "signed no-op (POST /v2/authorize)"
    curve = figures["density: host memory taken by kernels alive"]["points"]
    assert [alive for alive, _ in curve] == [2 * n for n in range(1, 11)]
    assert len(figures["query print(1) round trip"]["samples"]) == 50
    notes = json.loads(out.stdout)["notes"]
    (parts,) = [n for n in notes if n.startswith("host memory per kernel, 20 alive: ")]
    for part in ("anonymous pages", "slab", "page tables", "kernel stacks", "kmalloc-1k"):
        assert part in parts, parts

    report = tmp_path / "report.json"  # drawn as ./scripts/bench --figures does
    report.write_text(out.stdout)
    drawn = subprocess.run(
        ["/usr/bin/python3", "scripts/bench_figures.py", str(report), str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert drawn.returncode == 0, drawn.stderr
    for name in ("latency.svg", "density.svg"):
        svg = ElementTree.parse(tmp_path / name).getroot()
        assert svg.tag.endswith("svg") and len(list(svg.iter())) > 100


def test_the_instruction_counts_report_each_request_kind():
    """--instructions: the server under callgrind (scripts/setup installs valgrind)."""
    out = subprocess.run(
        [sys.executable, "scripts/bench.py", "--instructions", "--quick", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    figures = {f["name"]: f for f in json.loads(out.stdout)["figures"]}
    noop = "server instructions: signed no-op (POST /v2/authorize)"
    kinds = ["query print(1)", "create + destroy (warm pool)", "Jobe python3 run"]
    assert sorted(figures) == sorted([noop] + [f"server instructions: {k}" for k in kinds])
    for figure in figures.values():
        assert figure["unit"] == "kinstr" and figure["n"] == 2, figure
    for kind in kinds:  # each does what a no-op does and more
        figure = figures[f"server instructions: {kind}"]
        assert figure["baseline"] == noop and figure["p50"] > figures[noop]["p50"] > 0, figure
