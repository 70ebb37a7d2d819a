"""GET /metrics through a real server, parsed with prometheus_client's own parser:
the families exist, and kernels, creates, ends, execute calls and runs move as a
client makes, uses and destroys kernels."""

from __future__ import annotations

import time

import httpx
import pytest
from helpers.api_server import non_loopback_address, start_server, stop_server
from prometheus_client.parser import text_string_to_metric_families


def scrape(endpoint: str, **headers: str) -> dict[str, dict[tuple, float]]:
    """{family name: {(sample name, sorted labels): value}}."""
    r = httpx.get(f"{endpoint}/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        family.name: {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
        for family in text_string_to_metric_families(r.text)
    }


def value(families: dict, family: str, sample: str | None = None, **labels: str) -> float:
    key = (sample or family, tuple(sorted(labels.items())))
    return families.get(family, {}).get(key, 0.0)


def test_every_family_is_there(api_server):
    families = scrape(api_server.endpoint)
    for name in (
        "sandbox_kernels", "sandbox_pool_kernels", "sandbox_pool_size", "sandbox_key_kernels",
        "sandbox_kernel_creates", "sandbox_kernel_create_seconds", "sandbox_kernel_ends",
        "sandbox_execute_seconds", "sandbox_runs", "sandbox_jobs_waiting",
        "sandbox_max_kernels", "sandbox_host_memory_available_bytes",
        "sandbox_host_memory_total_bytes", "sandbox_kernel_ceiling",
    ):  # fmt: skip
        assert name in families, (name, sorted(families))
    assert value(families, "sandbox_max_kernels") >= 1
    assert value(families, "sandbox_pool_size", language="python3") >= 1
    assert value(families, "sandbox_kernel_ceiling", by="max_kernels") == value(
        families, "sandbox_max_kernels"
    )
    assert value(families, "sandbox_kernel_ceiling", by="memory_limits") >= 1
    assert (
        value(families, "sandbox_host_memory_total_bytes")
        > value(families, "sandbox_host_memory_available_bytes")
        > 0
    )


def test_kernels_and_runs_move_the_counts(api_server):
    client = api_server.client(**api_server.new_key(concurrency=3))
    before = scrape(api_server.endpoint)
    kid = client.create(lang="python3").json()["kernelId"]
    client.run(kid, "print(1)")
    during = scrape(api_server.endpoint)
    assert value(during, "sandbox_key_kernels", key=client.access_key) == 1
    live = sum(v for (name, labels), v in during["sandbox_kernels"].items()
               if dict(labels)["language"] == "python3")  # fmt: skip
    assert live >= 1

    def python_creates(families: dict) -> float:
        samples = families["sandbox_kernel_creates"].items()
        python3 = [
            (name, v) for (name, labels), v in samples if dict(labels)["language"] == "python3"
        ]
        return sum(v for name, v in python3 if name.endswith("_total"))

    creates, creates_before = python_creates(during), python_creates(before)
    assert creates == creates_before + 1
    assert value(during, "sandbox_kernel_create_seconds", "sandbox_kernel_create_seconds_count") > 0
    calls = "sandbox_execute_seconds_count"
    assert value(during, "sandbox_execute_seconds", calls) > value(
        before, "sandbox_execute_seconds", calls
    )
    finished = "sandbox_runs_total"
    assert value(during, "sandbox_runs", finished, outcome="finished") >= value(
        before, "sandbox_runs", finished, outcome="finished") + 1  # fmt: skip
    client.request("DELETE", f"/v2/kernel/{kid}")
    after = scrape(api_server.endpoint)
    ended = "sandbox_kernel_ends_total"
    assert value(after, "sandbox_kernel_ends", ended, reason="user-requested") == value(
        before, "sandbox_kernel_ends", ended, reason="user-requested") + 1  # fmt: skip
    assert value(after, "sandbox_key_kernels", key=client.access_key) == 0


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_only_get(api_server, method):
    assert httpx.request(method, f"{api_server.endpoint}/metrics").status_code == 405


def test_runs_are_counted_by_how_they_ended(api_server):
    client = api_server.client(**api_server.new_key(concurrency=2))
    before = scrape(api_server.endpoint)
    kid = client.create(lang="python3").json()["kernelId"]
    client.run(kid, "import os, signal\nos.kill(os.getpid(), signal.SIGINT)")  # interrupted
    client.run(kid, "x = bytearray(600 * 1024 * 1024)")  # past the 256 MiB default
    after = scrape(api_server.endpoint)
    runs = "sandbox_runs_total"
    for outcome in ("interrupted", "out-of-memory"):
        assert (
            value(after, "sandbox_runs", runs, outcome=outcome)
            == value(before, "sandbox_runs", runs, outcome=outcome) + 1
        ), (outcome, after["sandbox_runs"])
    client.request("DELETE", f"/v2/kernel/{kid}")


def test_refusals_are_counted_by_limit(api_server):
    client = api_server.client(**api_server.new_key(concurrency=1, rate_limit=3))
    before = scrape(api_server.endpoint)
    kid = client.create(lang="python3").json()["kernelId"]
    assert client.create(lang="python3").status_code != 201  # the key's one kernel is alive
    statuses = [client.request("GET", "/v2/authorize").status_code for _ in range(4)]
    assert 429 in statuses
    after = scrape(api_server.endpoint)
    refused = "sandbox_refusals_total"
    for limit in ("key-kernels", "rate-limit"):
        assert value(after, "sandbox_refusals", refused, limit=limit) > value(
            before, "sandbox_refusals", refused, limit=limit
        ), limit
    assert "sandbox_pool_misses" in after and "sandbox_kernel_restarts" in after
    assert value(after, "sandbox_spawner_deaths", "sandbox_spawner_deaths_total") == 0
    # the key is past its rate now: the admin route destroys its kernel
    assert httpx.delete(f"{api_server.endpoint}/admin/kernels/{kid}").status_code == 200


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    """A server on every address, with a metrics token."""
    if non_loopback_address() is None:
        pytest.skip("this host has no address but loopback")
    config = '[server]\nhost = "0.0.0.0"\n[metrics]\ntoken = "scrape-token-0123456789"\n'
    proc, server = start_server(str(tmp_path_factory.mktemp("metrics-open")), config=config)
    yield server
    stop_server(proc)


def test_beyond_loopback_a_token_is_needed(open_server):
    port = open_server.endpoint.rsplit(":", 1)[1]
    url = f"http://{non_loopback_address()}:{port}/metrics"
    assert httpx.get(url).status_code == 403
    assert (
        httpx.get(url, headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code
        == 403
    )
    r = httpx.get(url, headers={"Authorization": "Bearer scrape-token-0123456789"})
    assert r.status_code == 200 and "sandbox_kernels" in r.text


FORKS = """\
import os, signal, time
children, refused = [], 0
for _ in range(64):
    try:
        pid = os.fork()
    except OSError:
        refused += 1
        continue
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
print("refused", refused)
"""


def test_kernels_own_limits_reached_are_counted(tmp_path_factory):
    """memory (an OOM-killed run), output (a run cut at max_output_bytes) and pids
    (forks refused by the pids limit, counted as the kernel ends); every limit is
    shown, at zero too."""
    config = (
        "[limits]\nmax_output_bytes = 10000\ncpu_check_seconds = 0.2\n"
        "[sandbox]\npids_per_kernel = 16\n"
    )
    proc, server = start_server(str(tmp_path_factory.mktemp("limit-hits")), config=config)
    try:
        hits = "sandbox_limit_hits_total"
        before = scrape(server.endpoint)
        for limit in ("memory", "pids", "cpu-credit", "output"):
            assert (hits, (("limit", limit),)) in before["sandbox_limit_hits"], limit
        client = server.client()
        kid = client.create(lang="python3").json()["kernelId"]
        client.run(kid, "print('x' * 50_000)")
        client.run(kid, "x = bytearray(600 * 1024 * 1024)")
        forks = json_text(client.run(kid, FORKS))
        assert "refused" in forks and "refused 0" not in forks, forks
        during = scrape(server.endpoint)
        assert value(during, "sandbox_limit_hits", hits, limit="output") == 1
        assert value(during, "sandbox_limit_hits", hits, limit="memory") == 1
        assert value(during, "sandbox_limit_hits", hits, limit="pids") == 0  # not yet ended
        assert client.request("DELETE", f"/v2/kernel/{kid}").status_code == 204
        after = scrape(server.endpoint)
        assert value(after, "sandbox_limit_hits", hits, limit="pids") >= 1
        assert value(after, "sandbox_limit_hits", hits, limit="cpu-credit") == 0
        # a kernel with 300 ms of CPU credit, spinning: the engine ends it
        spinner = client.create(lang="python3", limits={"maxCpuCredit": 300}).json()
        client.execute(spinner["kernelId"], mode="query", code="while True: pass")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ended = scrape(server.endpoint)
            if value(ended, "sandbox_limit_hits", hits, limit="cpu-credit"):
                break
            time.sleep(0.2)
        assert value(ended, "sandbox_limit_hits", hits, limit="cpu-credit") == 1
    finally:
        stop_server(proc)


def json_text(results: list[dict]) -> str:
    return "".join(item[1] for r in results for item in r["console"] if item[0] == "stdout")
