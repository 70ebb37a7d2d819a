"""What the engine has done since it started, counted for operators: kernels made
(warm or cold) and how long a create took, kernels ended or restarted and why,
execute calls and how long each held, runs by how they ended, requests refused
and for which limit (a key's rate, a key's kernels, the server's kernels, the
job queue), and kernels' own limits reached (memory, pids, CPU credit, output).
The metrics face reads it; the engine only counts (no metrics library here, and
nothing grows with traffic: labels are languages, reasons, outcomes and limits,
each a short fixed set)."""

from __future__ import annotations

import bisect
import collections
from dataclasses import dataclass, field

# seconds; an operation's histogram counts how many took at most each
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass
class Histogram:
    """Counts per bucket (not cumulative), their sum and count."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """[(upper bound, how many took at most that)], ending with +Inf."""
        running, out = 0, []
        for bound, n in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass
class Tally:
    creates: collections.Counter = field(default_factory=collections.Counter)  # (lang, warm)
    create_seconds: Histogram = field(default_factory=Histogram)
    ends: collections.Counter = field(default_factory=collections.Counter)  # reason slug
    execute_seconds: Histogram = field(default_factory=Histogram)
    runs: collections.Counter = field(default_factory=collections.Counter)  # outcome
    restarts: collections.Counter = field(default_factory=collections.Counter)  # reason slug
    refused: collections.Counter = field(default_factory=collections.Counter)  # why
    # a kernel's own limit reached: "memory" (a run's OOM kill), "pids" (forks the
    # pids limit refused, counted as the kernel ends), "cpu-credit" (the kernel ended
    # for it), "output" (a run's output cut at max_output_bytes)
    limit_hits: collections.Counter = field(default_factory=collections.Counter)

    def created(self, lang: str, warm: bool, seconds: float) -> None:
        self.creates[(lang, warm)] += 1
        self.create_seconds.observe(seconds)
