"""The project's benchmark: kernel start and query latency beside baselines from the same run.

Prints medians and percentiles as a table (or JSON with --json). Every figure
has a baseline measured in the same run on the same machine, because absolute
numbers from a noisy 2-core box mean little on their own:

  python3 -c pass            bare interpreter start (what any fork+exec sandbox pays)
  bwrap python3 -c pass      bubblewrap with comparable isolation
  sandbox-exec python3 -c pass   our recipe, cold (exec of a fresh interpreter)
  kernel ready (spawner)     fork a python3 kernel from the warm spawner until it is ready
  query round trip           print(1) in a ready kernel, until "finished"

Run: ./scripts/bench [--quick] [--json] [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sandbox.kernel import Kernel  # noqa: E402
from sandbox.spawner import SpawnerClient  # noqa: E402
from sandbox.spec import KernelSpec  # noqa: E402

BWRAP_ARGS = [
    "bwrap", "--unshare-all", "--new-session", "--die-with-parent", "--cap-drop", "ALL",
    "--uid", "1000", "--gid", "1000",
    "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
    "--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
    "--tmpfs", "/home/work", "--chdir", "/home/work",
]  # fmt: skip


def summarize(samples_s: list[float]) -> dict:
    ms = sorted(s * 1000 for s in samples_s)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, round(p / 100 * (len(ms) - 1)))]

    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 3),
        "p90_ms": round(pct(90), 3),
        "p99_ms": round(pct(99), 3),
        "min_ms": round(ms[0], 3),
    }


def time_command(argv: list[str], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        samples.append(time.perf_counter() - t)
    return samples


async def time_kernels(runs: int, queries: int) -> tuple[list[float], list[float]]:
    client = await SpawnerClient.start()
    ready_samples, query_samples = [], []
    try:
        for i in range(runs):
            t = time.perf_counter()
            pid, sock = await client.spawn(f"bench-{i}", KernelSpec())
            kernel = await Kernel.connect(f"bench-{i}", pid, sock)
            await kernel.wait_ready()
            ready_samples.append(time.perf_counter() - t)
            if i == 0:
                for _ in range(queries):
                    t = time.perf_counter()
                    result = await kernel.query("print(1)")
                    query_samples.append(time.perf_counter() - t)
                    assert result.status == "finished", result
            await kernel.close()
            await client.destroy(f"bench-{i}")
    finally:
        await client.close()
    return ready_samples, query_samples


def main() -> int:
    parser = argparse.ArgumentParser(description="kernel start and query latency")
    parser.add_argument("--quick", action="store_true", help="few runs, for CI smoke")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--runs", type=int, help="runs per figure")
    args = parser.parse_args()
    runs = args.runs or (5 if args.quick else 50)
    python = ["/usr/bin/python3", "-c", "pass"]
    sandbox_exec = [sys.executable, "-m", "sandbox.exec_cli", "--"]

    results: dict[str, dict] = {}
    time_command(python, 2)  # warm the page cache
    results["python3 -c pass (bare)"] = summarize(time_command(python, runs))
    if shutil.which("bwrap"):
        results["bwrap python3 -c pass"] = summarize(time_command(BWRAP_ARGS + python, runs))
    results["sandbox-exec python3 -c pass"] = summarize(
        time_command(sandbox_exec + python, max(3, runs // 5))
    )
    ready, query = asyncio.run(time_kernels(runs, runs * 4))
    results["kernel ready (spawner fork)"] = summarize(ready)
    results["query round trip print(1)"] = summarize(query)

    base = results["python3 -c pass (bare)"]["p50_ms"]
    for figures in results.values():
        figures["x_bare_python"] = round(figures["p50_ms"] / base, 3)
    if args.json:
        print(
            json.dumps(
                {"machine": os.uname().nodename, "cpus": os.cpu_count(), "results": results},
                indent=2,
            )
        )
        return 0
    print(f"{'measurement':<32}{'n':>5}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'x bare':>9}")
    for name, f in results.items():
        print(
            f"{name:<32}{f['n']:>5}{f['p50_ms']:>10.2f}{f['p90_ms']:>10.2f}{f['p99_ms']:>10.2f}{f['x_bare_python']:>9.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
