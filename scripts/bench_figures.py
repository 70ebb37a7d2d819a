"""Draw a `scripts/bench --json` report as SVG: the latency distribution of every
timed figure, and the density curve (host memory and query p99 by kernels alive).

    /usr/bin/python3 scripts/bench_figures.py REPORT.json OUTDIR

Run by `./scripts/bench --figures OUTDIR`. It needs matplotlib, which the
server's virtualenv does not hold: Debian's python3-matplotlib (installed by
./scripts/setup for the kernels) draws them, hence the system python3.
"""

from __future__ import annotations

import json
import os
import sys

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend first)

# The figures drawn as distributions: timed ones with enough samples to show one.
MIN_SAMPLES = 5
LATENCY_SVG, DENSITY_SVG = "latency.svg", "density.svg"


def _timed(figures: list[dict]) -> list[dict]:
    return [
        f for f in figures
        if f["unit"] == "ms" and len(f.get("samples", ())) >= MIN_SAMPLES and "points" not in f
    ]  # fmt: skip


def latency(figures: list[dict], path: str, title: str) -> None:
    """One box per timed figure (median, quartiles, 1st-99th percentile whiskers),
    on a log scale: they range from a tenth of a millisecond to seconds."""
    timed = sorted(_timed(figures), key=lambda f: f["p50"])
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(timed) + 1.4))
    ax.boxplot(
        [f["samples"] for f in timed], vert=False, whis=(1, 99), showfliers=False,
        medianprops={"color": "#c0392b"},
    )  # fmt: skip
    ax.set_yticks(range(1, len(timed) + 1), [f["name"] for f in timed], fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("ms (log scale); box: quartiles and median, whiskers: p1-p99")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def density(figures: list[dict], path: str, title: str) -> None:
    """Host memory taken and the query p99 as the number of idle kernels grows."""
    curves = [f for f in figures if f.get("points")]
    if not curves:
        return
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6))
    for ax, curve in zip(axes if len(curves) > 1 else [axes], curves, strict=True):
        xs, ys = zip(*curve["points"], strict=True)
        ax.plot(xs, ys, marker="o")
        ax.set_xlabel("kernels alive")
        ax.set_ylabel(curve["unit"])
        ax.set_title(curve["name"], fontsize=8)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        report = json.load(f)
    os.makedirs(argv[2], exist_ok=True)
    title = f"scripts/bench, {report['date']}, {report['machine']['cpus']} CPUs"
    latency(report["figures"], os.path.join(argv[2], LATENCY_SVG), title)
    density(report["figures"], os.path.join(argv[2], DENSITY_SVG), title)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
