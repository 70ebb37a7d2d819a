"""GET /metrics: what the server holds and has done, in the text format Prometheus
scrapes (prometheus_client writes it).

Everything is read at scrape time from the engine (its sessions, warm pool, jobs
and tally, server/engine/tally.py) and the host, so nothing here runs between
scrapes. Label values are languages, states, reasons and outcomes, each a short
fixed set; keys are shown for the `top_keys` with the most kernels, the rest
summed as "other", so a scrape stays small whatever the traffic. Open to
loopback clients; others need `Authorization: Bearer <[metrics] token>`.
"""

from __future__ import annotations

import collections
import hmac
import ipaddress
from collections.abc import Iterator

import psutil
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ...engine.engine import Engine
from ...engine.tally import Histogram
from .settings import MetricsSettings

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class EngineCollector:
    """prometheus_client's custom collector over one engine."""

    def __init__(self, engine: Engine, settings: MetricsSettings) -> None:
        self.engine = engine
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        registry = self.engine.registry
        tally = registry.tally
        kernels = GaugeMetricFamily(
            "sandbox_kernels",
            "Live kernels by language and run state",
            labels=["language", "state"],
        )
        states = collections.Counter((s.lang, s.state) for s in registry.sessions.values())
        for (lang, state), n in sorted(states.items()):
            kernels.add_metric([lang, state], n)
        yield kernels
        pool = GaugeMetricFamily(
            "sandbox_pool_kernels", "Warm kernels waiting", labels=["language"]
        )
        for lang, ready in sorted(registry.pool.ready.items()):
            pool.add_metric([lang], len(ready))
        yield pool
        size = GaugeMetricFamily(
            "sandbox_pool_size",
            "Warm kernels the pool keeps: pool_size, or the largest recent burst",
            labels=["language"],
        )
        for lang, n in sorted(registry.pool.sizes().items()):
            size.add_metric([lang], n)
        yield size
        by_key = GaugeMetricFamily(
            "sandbox_key_kernels", "Live kernels of the keys with the most", labels=["key"]
        )
        ranked = registry.per_key.most_common()
        top = self.settings.top_keys
        for key, n in ranked[:top]:
            by_key.add_metric([key], n)
        if ranked[top:]:
            by_key.add_metric(["other"], sum(n for _, n in ranked[top:]))
        yield by_key
        creates = CounterMetricFamily(
            "sandbox_kernel_creates", "Kernels made", labels=["language", "warm"]
        )
        for (lang, warm), n in sorted(tally.creates.items()):
            creates.add_metric([lang, str(warm).lower()], n)
        yield creates
        yield _histogram(
            "sandbox_kernel_create_seconds", "Time to make a kernel", tally.create_seconds
        )
        yield _counter("sandbox_kernel_ends", "Kernels ended, by reason", "reason", tally.ends)
        yield _histogram(
            "sandbox_execute_seconds", "Time an execute call held (query, batch, input)",
            tally.execute_seconds,
        )  # fmt: skip
        yield _counter("sandbox_runs", "Runs that ended, by outcome", "outcome", tally.runs)
        yield _counter(
            "sandbox_kernel_restarts", "Kernels restarted, by reason", "reason", tally.restarts
        )
        yield _counter(
            "sandbox_refusals", "Requests refused for a limit, by which", "limit", tally.refused
        )
        hits = collections.Counter(dict.fromkeys(KERNEL_LIMITS, 0))  # zeros shown too
        hits.update(tally.limit_hits)
        yield _counter(
            "sandbox_limit_hits",
            "Kernels' own limits reached: memory (OOM kills of runs), pids (forks refused), "
            "cpu-credit (kernels ended for it), output (runs cut at max_output_bytes)",
            "limit",
            hits,
        )
        misses = CounterMetricFamily(
            "sandbox_pool_misses", "Kernels of a pooled language made cold", labels=["language"]
        )
        for lang in sorted(registry.pool.ready):
            misses.add_metric([lang], tally.creates[(lang, False)])
        yield misses
        jobs = self.engine.jobs
        yield GaugeMetricFamily("sandbox_jobs_waiting", "One-shot jobs waiting", value=jobs.waiting)
        yield CounterMetricFamily(
            "sandbox_spawner_deaths", "Times the spawner exited under the server (0 or 1: "
            "no kernel starts after it until the server restarts)",
            value=int(self.engine.spawner.has_exited()),
        )  # fmt: skip
        limits = self.engine.settings.limits
        yield GaugeMetricFamily(
            "sandbox_max_kernels", "The most kernels this server runs", value=limits.max_kernels
        )
        memory = psutil.virtual_memory()
        ceiling = GaugeMetricFamily(
            "sandbox_kernel_ceiling",
            "Kernels this server could hold: its max_kernels, and the live ones plus as "
            "many more as MemAvailable holds at the default memory limit (the worst case)",
            labels=["by"],
        )
        ceiling.add_metric(["max_kernels"], limits.max_kernels)
        room = memory.available // limits.default_memory_bytes
        ceiling.add_metric(["memory_limits"], len(registry.sessions) + room)
        yield ceiling
        yield GaugeMetricFamily(
            "sandbox_host_memory_available_bytes", "MemAvailable", value=memory.available
        )
        yield GaugeMetricFamily("sandbox_host_memory_total_bytes", "MemTotal", value=memory.total)


KERNEL_LIMITS = ("memory", "pids", "cpu-credit", "output")


def _counter(
    name: str, documentation: str, label: str, counts: collections.Counter
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, n in sorted(counts.items()):
        family.add_metric([value], n)
    return family


def _histogram(name: str, documentation: str, histogram: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name, documentation, buckets=histogram.cumulative(), sum_value=histogram.total
    )


def _allowed(request: Request, settings: MetricsSettings) -> bool:
    host = request.client.host if request.client else ""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        pass
    given = request.headers.get("authorization", "")
    return bool(settings.token) and hmac.compare_digest(given, f"Bearer {settings.token}")


async def metrics(request: Request) -> Response:
    settings: MetricsSettings = request.app.state.metrics_settings
    if not _allowed(request, settings):
        return Response("metrics: a bearer token is needed from beyond loopback\n", 403)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(request.app.state.engine, settings))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)


def routes() -> list[BaseRoute]:
    return [Route("/metrics", metrics, methods=["GET"])]
