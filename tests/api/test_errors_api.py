"""The error rows of spec §4.2 that need something to go wrong: a bad version
header, the endpoints this server does not offer, a kernel that does not answer,
and a spawner that died. (kernel-destruction-failed is in test_limits_api: it
needs a kernel that will not die. general-error is only the catalogue's base
and instance-not-found the manager's internal one: neither is ever answered.)
"""

from __future__ import annotations

import glob
import os
import signal
import tempfile
import time

import pytest
from helpers.api_server import spawner_pid, start_server, stop_server
from helpers.harness import HAS_CGROUPS, alive, wait_until
from helpers.kernel_remains import KernelRemains
from helpers.problems import problem

from sandbox.cgroups.sweep import tree_name


@pytest.mark.parametrize("dialect", ["sorna", "backendai"])
@pytest.mark.parametrize("version", ["v2", "2.20170315", "v2.2017", "latest"])
def test_an_invalid_version_header_is_generic_bad_request(api_server, dialect, version):
    client = api_server.client(dialect)
    name = "X-Sorna-Version" if dialect == "sorna" else "X-BackendAI-Version"
    r = client.request("GET", "/v2/authorize", headers={name: version})
    title = problem(r, 400, "generic-bad-request")
    assert name.lower() in title and repr(version) in title


@pytest.fixture(scope="module")
def kernel_id(api_server):
    client = api_server.client()
    kid = client.create().json()["kernelId"]
    yield kid
    client.request("DELETE", f"/v2/kernel/{kid}")


def test_logs_are_not_implemented(api_server, kernel_id):
    client = api_server.client()
    url = f"/v2/kernel/{kernel_id}/logs"
    assert "not offered" in problem(client.request("GET", url), 503, "not-implemented")
    problem(client.request("GET", "/v2/kernel/no-such-kernel/logs"), 404, "kernel-not-found")
    foreign = api_server.client(**api_server.new_key())
    problem(foreign.request("GET", url), 404, "kernel-not-found")


@pytest.fixture
def faulty_server(tmp_path):
    """A server of its own, since these tests break it; kernels' replies time out fast."""
    proc, server = start_server(str(tmp_path / "data"), config="kernel_reply_seconds = 1.0\n")
    yield server
    stop_server(proc)


def test_a_kernel_that_does_not_answer_is_kernel_execution_failed(faulty_server):
    """Its pid 1, which does file operations, is stopped from outside: the request
    times out with a 500 naming what was asked, and works again once it runs."""
    client = faulty_server.client()
    kid = client.create().json()["kernelId"]
    (init_pid, _), = KernelRemains(faulty_server, kid).inits.values()  # fmt: skip
    os.kill(init_pid, signal.SIGSTOP)
    try:
        r = client.request("GET", f"/v2/kernel/{kid}/files", {"path": "."})
        assert "did not answer 'files'" in problem(r, 500, "kernel-execution-failed")
    finally:
        os.kill(init_pid, signal.SIGCONT)
    assert client.request("GET", f"/v2/kernel/{kid}/files", {"path": "."}).status_code == 200
    assert client.request("DELETE", f"/v2/kernel/{kid}").status_code == 204


def _cgroup_trees(name: str) -> list[str]:
    found = []
    for root, dirs, _files in os.walk("/sys/fs/cgroup"):
        found += [os.path.join(root, d) for d in dirs if d == name]
        dirs[:] = [d for d in dirs if d != name]
    return found


@pytest.mark.cgroups
def test_a_dead_spawner_is_service_unavailable(faulty_server, tmp_path):
    """No kernel can start without the spawner: a create says so with a 503 that
    tells the admin what to do, the orphaned kernels end and say why, the rest of
    the API keeps answering, and the next server's spawner sweeps the dead one's
    cgroups away."""
    client = faulty_server.client()
    kid = client.create().json()["kernelId"]
    remains = KernelRemains(faulty_server, kid)
    dead = spawner_pid(faulty_server.pid)
    tree = tree_name(dead)  # sandbox-<pid>-<start>: pid reuse cannot fake it
    os.kill(dead, signal.SIGKILL)
    # Its exit takes a moment (a warm create does not): once it has exited, the
    # server learns of it at once (a pidfd), and a create at most races that news.
    wait_until(lambda: not alive(dead), "the spawner to exit", timeout=10)
    for _ in range(2):
        r = client.create()
        if r.status_code != 201:
            break
    assert "the server must be restarted" in problem(r, 503, "service-unavailable")
    deadline = time.monotonic() + 10
    while (r := client.request("GET", f"/v2/kernel/{kid}")).status_code == 200:
        assert time.monotonic() < deadline, "the orphaned kernel was not ended"
        time.sleep(0.1)
    assert "spawner died" in problem(r, 404, "kernel-not-found"), "".join(faulty_server.output)
    remains.assert_processes_gone()
    assert client.request("GET", "/v2/authorize").status_code == 200
    assert client.request("GET", "/v2").status_code == 200
    assert bool(_cgroup_trees(tree)) == HAS_CGROUPS  # left behind
    assert glob.glob(f"{tempfile.gettempdir()}/sandbox-spawner-{dead}-*")  # its scratch too

    proc, server = start_server(str(tmp_path / "data2"))
    try:
        client = server.client()
        assert client.create().status_code == 201  # its spawner sets up its cgroups
        # The dead spawner's spares die with it but may still be exiting then: a tree
        # still busy at the sweep goes on a create a second or more later.
        deadline = time.monotonic() + 10
        while _cgroup_trees(tree) and time.monotonic() < deadline:
            time.sleep(1.1)
            assert client.create().status_code == 201
        assert _cgroup_trees(tree) == []
        assert glob.glob(f"{tempfile.gettempdir()}/sandbox-spawner-{dead}-*") == []
    finally:
        stop_server(proc)
