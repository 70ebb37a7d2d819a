"""The warm pool (server/engine/pool.py) over HTTP: creates are served by kernels
started ahead of demand, never the same kernel twice, with the limits the create
asked for; the pool is refilled, grows after a burst of creates and shrinks when
the burst is old, and at shutdown it is emptied."""

from __future__ import annotations

import concurrent.futures
import os
import re
import subprocess
import sys
import time

import httpx
import psutil
import pytest
from helpers.api_server import ROOT, spawner_pid, start_server, stop_server
from helpers.harness import HAS_CGROUPS
from helpers.kernel_remains import KernelRemains

MiB = 1024 * 1024
POOL = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("pool-data")
    # pool_max: a fixed size here (a burst would grow it: see test_the_pool_follows_a_burst)
    config = f"pool_size = {POOL}\npool_max = {POOL}\npool_languages = ['python3', 'bash']\n"
    proc, server = start_server(str(data / "data"), config=config)
    yield server
    stop_server(proc)


@pytest.fixture(scope="module")
def client(server):
    return server.client(**server.new_key(concurrency=50))


def warm(server, kid: str) -> bool:
    """Whether the server's log says the kernel came from the pool (the log is read
    by a thread: give it a moment)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in server.output:
            if m := re.search(
                rf"kernel created .*kernel={re.escape(kid)} .* warm=(true|false)", line
            ):
                return m.group(1) == "true"
        time.sleep(0.05)
    raise AssertionError(f"no creation logged for {kid}")


def pool_full(server, lang: str = "python3", timeout: float = 30, size: int = POOL) -> None:
    """Wait until the pool holds `size` ready kernels of `lang` (GET /v2/kernel/languages
    says how many wait)."""
    public = server.client()
    deadline = time.monotonic() + timeout
    while True:
        rows = public.request("GET", "/v2/kernel/languages").json()["languages"]
        if next(r for r in rows if r["lang"] == lang)["warm"] == size:
            return
        assert time.monotonic() < deadline, f"the pool did not come to {size} kernels"
        time.sleep(0.05)


def pool_kernels(server) -> list[psutil.Process]:
    """The pool's kernels' pids 1 ("kernel-init") when no other kernel is alive."""
    children = psutil.Process(spawner_pid(server.pid)).children()
    return [c for c in children if c.name() == "kernel-init"]


def create(client, **extra) -> str:
    r = client.create(**extra)
    assert r.status_code == 201, r.text
    return r.json()["kernelId"]


def test_a_create_takes_a_warm_kernel_that_has_run_nothing(server, client):
    pool_full(server)
    time.sleep(1)  # the pooled kernel ages; the session must not
    kid = create(client)
    try:
        assert warm(server, kid)
        info = client.request("GET", f"/v2/kernel/{kid}").json()
        assert info["age"] < 1000
        results = client.run(kid, "print(sorted(k for k in globals() if not k.startswith('__')))")
        assert results[-1]["console"] == [["stdout", "[]\n"]]
    finally:
        client.request("DELETE", f"/v2/kernel/{kid}")


def test_concurrent_creates_never_share_a_kernel(server, client):
    """More creates at once than the pool holds, from two keys: every one gets a
    kernel of its own (its own id and pid namespace, its own variables)."""
    pool_full(server)
    other = server.client(**server.new_key(concurrency=50))
    clients = [client, other] * (POOL + 1)
    with concurrent.futures.ThreadPoolExecutor(len(clients)) as ex:
        kids = list(ex.map(create, clients))
    try:
        assert len(set(kids)) == len(kids)
        assert sum(warm(server, k) for k in kids) >= POOL  # the pool served some
        namespaces = set()
        for kid in kids:
            namespaces |= KernelRemains(server, kid).namespaces
        assert len(namespaces) == len(kids)
        for i, (c, kid) in enumerate(zip(clients, kids, strict=True)):
            c.run(kid, f"mine = {i}")
        for i, (c, kid) in enumerate(zip(clients, kids, strict=True)):
            assert c.run(kid, "print(mine)")[-1]["console"] == [["stdout", f"{i}\n"]]
    finally:
        for c, kid in zip(clients, kids, strict=True):
            c.request("DELETE", f"/v2/kernel/{kid}")
    pool_full(server)  # and refilled after


def test_each_pooled_language_is_served_warm(server, client):
    pool_full(server, "bash")
    kid = create(client, lang="sh")
    try:
        assert warm(server, kid)
        assert client.run(kid, "echo $((6 * 7))")[-1]["console"] == [["stdout", "42\n"]]
    finally:
        client.request("DELETE", f"/v2/kernel/{kid}")


def test_a_language_not_pooled_and_a_create_with_mounts_start_cold(server, client):
    kid = create(client, lang="c")
    client.request("DELETE", f"/v2/kernel/{kid}")
    assert not warm(server, kid)
    assert client.request("POST", "/v2/folders", {"name": "pooldata"}).status_code == 201
    try:
        kid = create(client, mounts=["pooldata"])
        client.request("DELETE", f"/v2/kernel/{kid}")
        assert not warm(server, kid)
    finally:
        client.request("DELETE", "/v2/folders/pooldata")


@pytest.mark.cgroups
def test_a_warm_kernel_gets_the_memory_limit_the_create_asked_for(server, client):
    """Under a cgroup layout the pool's kernel takes the new limit; under none
    (rlimits fixed at start) the create gets a cold kernel with it instead."""
    pool_full(server)
    kid = create(client, limits={"maxMem": 48 * 1024})
    try:
        assert warm(server, kid) == HAS_CGROUPS
        assert client.request("GET", f"/v2/kernel/{kid}").json()["memoryLimit"] == 48 * 1024
        limits = []
        for d in KernelRemains(server, kid).cgroup_dirs:
            for name in ("memory.max", "memory.limit_in_bytes"):
                if os.path.exists(f"{d}/{name}"):
                    with open(f"{d}/{name}") as f:
                        limits.append(int(f.read()))
        assert limits == ([48 * MiB] if HAS_CGROUPS else [])
        results = client.run(kid, "x = bytearray(96 * 1024 * 1024)\nprint('survived')")
        out = "".join(t for k, t in results[-1]["console"] if k == "stdout")
        assert "survived" not in out
    finally:
        client.request("DELETE", f"/v2/kernel/{kid}")


def test_stopping_the_server_destroys_the_pool(tmp_path):
    proc, server = start_server(str(tmp_path / "data"), config=f"pool_size = {POOL}\n")
    try:
        pool_full(server)
        children = psutil.Process(spawner_pid(server.pid)).children()
        assert len(pool_kernels(server)) == POOL
    finally:
        stop_server(proc)
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []


def test_the_pool_follows_a_burst_and_shrinks_when_it_is_old(tmp_path):
    """A burst of creates (a class pressing Run) grows the pool to its size, at most
    pool_max, in the background; when the burst is pool_shrink_seconds old the
    surplus is destroyed, processes and all, and the pool is back at pool_size."""
    most, burst = 7, 10
    config = f"pool_size = {POOL}\npool_max = {most}\npool_shrink_seconds = 4\n"
    proc, server = start_server(str(tmp_path / "data"), config=config)
    try:
        client = server.client(**server.new_key(concurrency=burst))
        pool_full(server)
        with concurrent.futures.ThreadPoolExecutor(burst) as ex:
            kids = list(ex.map(lambda _: create(client), range(burst)))
        for kid in kids:
            assert client.request("DELETE", f"/v2/kernel/{kid}").status_code == 204
        grown = time.monotonic()
        pool_full(server, size=most)
        time.sleep(0.5)  # and no further than pool_max
        kernels = pool_kernels(server)
        assert len(kernels) == most
        # a create now takes one, and the pool makes up for it: it stays at the burst
        kid = create(client)
        assert warm(server, kid)
        client.request("DELETE", f"/v2/kernel/{kid}")
        pool_full(server, size=most)
        # the burst is old by now (4 s): the surplus is destroyed
        pool_full(server, size=POOL, timeout=30)
        assert time.monotonic() - grown > 3
        gone, alive = psutil.wait_procs(kernels, timeout=10)
        assert len(alive) <= POOL and len(gone) >= most - POOL
        assert len(pool_kernels(server)) == POOL
    finally:
        stop_server(proc)


def test_an_admin_readies_the_pool_for_a_class(tmp_path):
    """`sandbox-admin pool LANG N` before a class: N kernels wait (at most pool_max)
    until the burst it stands for is pool_shrink_seconds old; bad requests are 400s
    naming the field."""
    most = 6
    config = f"pool_size = {POOL}\npool_max = {most}\npool_shrink_seconds = 4\n"
    proc, server = start_server(str(tmp_path / "data"), config=config)
    try:
        pool_full(server)
        port = server.endpoint.rsplit(":", 1)[1]
        command = [sys.executable, "-m", "server.admin", "--data-dir", server.data_dir]

        def ready(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [*command, "pool", *args, "--port", port],
                capture_output=True, text=True, cwd=ROOT, check=False,
            )  # fmt: skip

        out = ready("python", "5")  # an alias
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "the pool keeps 5 python3 kernels ready for the next 0m04s"
        pool_full(server, size=5)
        asked = time.monotonic()
        assert ready("python3", "50", "--json").stdout.count('"size": 6') == 1  # pool_max
        pool_full(server, size=most)
        for body, field in [
            ({"lang": "python3"}, "size"), ({"lang": "python3", "size": -1}, "size"),
            ({"lang": "python3", "size": True}, "size"), ({"lang": "python3", "size": "9"}, "size"),
            ({"size": 3}, "lang"), ({"lang": "cobol", "size": 3}, "lang"),
            ({"lang": "c", "size": 3}, "lang"), ([1], "body"), ("x" * 2000, "body"),
        ]:  # fmt: skip
            r = httpx.post(f"{server.endpoint}/admin/pool", json=body)
            assert r.status_code == 400 and r.json()["error"].startswith(f"{field}:"), r.text
        bad = ready("cobol", "3")
        assert bad.returncode == 1 and "not pooled here" in bad.stderr
        pool_full(server, size=POOL, timeout=30)  # the class did not come
        assert time.monotonic() - asked > 3
        assert len(pool_kernels(server)) == POOL
    finally:
        stop_server(proc)


def test_readying_a_pool_that_is_off_is_a_conflict(tmp_path):
    proc, server = start_server(str(tmp_path / "data"), config="pool_size = 0\n")
    try:
        r = httpx.post(f"{server.endpoint}/admin/pool", json={"lang": "python3", "size": 3})
        assert r.status_code == 409 and "pool_size = 0" in r.json()["error"], r.text
        status = httpx.get(f"{server.endpoint}/admin/status").json()
        assert status["poolSize"] == {"python3": 0} and status["pool"] == {"python3": 0}
    finally:
        stop_server(proc)
