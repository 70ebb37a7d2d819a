"""What a run measures: its plan, its figures (samples and stats, beside a named
baseline), and the names of the figures that others are compared to."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

MiB = 1024 * 1024

# figure names that others name as their baseline
BARE_PYTHON = "python3 -c pass"
BWRAP = "bwrap python3 -c pass"
BARE_GCC = "gcc hello.c && ./main"
NOOP = "signed no-op (POST /v2/authorize)"
IDLE_USS, IDLE_PSS = "idle python3 USS", "idle python3 PSS"
SERVER_RSS, SPAWNER_RSS = "server RSS at start", "spawner RSS at start"
CREATE = "create (warm pool)"
COLD_CREATE = "create (no pool)"
BARE_CREATE = "create (no pool, no spares)"
QUERY_RT = "query print(1) round trip"
STREAM_RT = "stream execute print(1) round trip"
WS_PING = "WebSocket ping round trip"
KEY_ECHO = "terminal keystroke echo"


def until_print(create: str) -> str:
    """A create figure's name -> its "until print(1) finished" companion's."""
    return f"{create} until print(1) finished"


def query_load(clients: int) -> str:
    return f"query, {clients} concurrent"


def kernel_unique(alive: int) -> str:
    """The density figure of each idle kernel's unique memory."""
    return f"kernel unique memory, {alive} alive"


@dataclass(frozen=True)
class Plan:
    runs: int  # kernel creates, batch cycles and command runs per figure
    queries: int  # query and no-op round trips
    seconds: float  # per throughput figure
    density: int  # idle kernels alive at once
    probes: int  # creates and queries at that density; idle interpreters measured
    burst: int  # one-shot runs submitted at once
    klass: int  # students who create a kernel and run print(1) at once
    peers: bool = False  # Jupyter Kernel Gateway measured too (kernel_gateway.py)


@dataclass
class Figure:
    name: str
    samples: list[float]
    unit: str = "ms"
    baseline: str | None = None  # the name of the figure it is compared to
    rate: float | None = None  # requests per second, for throughput figures
    cpu: dict[str, float] | None = None  # CPU ms per request by party, for throughput figures
    # a curve, (x, y) points, where the figure is one (the density figures): y are the samples
    points: list[tuple[float, float]] | None = None
    stats: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        ordered = sorted(self.samples)

        def pct(p: float) -> float:  # nearest rank
            return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

        median = statistics.median(ordered)
        self.stats = {"n": len(ordered), "p50": median, "p90": pct(90), "p99": pct(99)}


def ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000
