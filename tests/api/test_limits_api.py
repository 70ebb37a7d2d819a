"""Limits, accounting and lifetimes over HTTP (spec §5.1, §5.2, §5.10, §6.7).

A server of its own, with small limits from a config file, so that each limit
can be hit quickly. Every test that kills a kernel checks that nothing of it is
left on the host and that another kernel still answers.
"""

from __future__ import annotations

import contextlib
import subprocess
import time

import psutil
import pytest
from helpers.api_server import spawner_pid, start_server, stop_server
from helpers.harness import HAS_CGROUPS, wait_until
from helpers.harness import frozen as harness_frozen
from helpers.kernel_remains import KernelRemains
from helpers.multipart import multipart
from helpers.problems import problem

pytestmark = pytest.mark.cgroups

MiB = 1024 * 1024
CONFIG = f"""
default_memory_bytes = {128 * MiB}
max_memory_bytes = {512 * MiB}
default_exec_timeout_ms = 10000
max_exec_timeout_ms = 60000
default_idle_timeout_ms = 600000
max_idle_timeout_ms = 3600000
default_cpu_credit_ms = 600000
max_cpu_credit_ms = 3600000
cpu_check_seconds = 0.5
max_output_bytes = {2 * MiB}
pids_per_kernel = 64
work_bytes = {16 * MiB}
tmp_bytes = {16 * MiB}
max_kernels = 12
max_folder_bytes_per_key = {8 * MiB}
folder_bytes = {4 * MiB}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("limits-data")
    proc, server = start_server(str(data / "data"), config=CONFIG)
    yield server
    stop_server(proc)


@pytest.fixture(scope="module")
def client(server):
    return server.client(**server.new_key(concurrency=20))


@pytest.fixture(scope="module")
def bystander(client):
    """A kernel that must keep answering whatever happens to the others."""
    kid = client.create().json()["kernelId"]
    yield kid
    client.request("DELETE", f"/v2/kernel/{kid}")


def still_answers(client, kid: str) -> None:
    results = client.run(kid, "print(6 * 7)")
    assert results[-1]["console"] == [["stdout", "42\n"]], results


def create(client, **limits) -> str:
    r = client.create(limits=limits) if limits else client.create()
    assert r.status_code == 201, r.text
    return r.json()["kernelId"]


def info(client, kid: str) -> dict:
    r = client.request("GET", f"/v2/kernel/{kid}")
    assert r.status_code == 200, r.text
    return r.json()


def run(client, kid: str, code: str) -> tuple[list[dict], str, str]:
    """Run to the end (or exec-timeout); the results and the whole stdout/stderr."""
    results = client.run(kid, code)
    while results[-1]["status"] not in ("finished", "exec-timeout"):
        results.append(client.execute(kid, mode="continue", code="").json()["result"])
    out = "".join(t for r in results for k, t in r["console"] if k == "stdout")
    err = "".join(t for r in results for k, t in r["console"] if k == "stderr")
    return results, out, err


# -- 406 and defaults ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "field", "value", "maximum"),
    [
        ("limits", "maxMem", 512 * 1024 + 1, "524288 KB"),
        ("limits", "execTimeout", 60001, "60000 ms"),
        ("limits", "timeout", 10**9, "60000 ms"),
        ("limits", "queryTimeout", 60001, "60000 ms"),
        ("limits", "idleTimeout", 3600001, "3600000 ms"),
        ("limits", "maxCpuCredit", 3600001, "3600000 ms"),
        ("resourceLimits", "maxMem", 10**9, "524288 KB"),
        ("resourceLimits", "timeout", 60001, "60000 ms"),
    ],
)
def test_over_a_server_maximum_is_406_naming_the_field(client, block, field, value, maximum):
    r = client.create(**{block: {field: value}})
    title = problem(r, 406, "not-acceptable")
    assert f"{block}.{field}" in title and maximum in title


@pytest.mark.parametrize("limits", [None, {}, {"maxMem": 0, "execTimeout": 0, "idleTimeout": 0,
                                                "maxCpuCredit": 0}])  # fmt: skip
def test_absent_or_zero_limits_take_the_defaults(client, limits):
    extra = {} if limits is None else {"limits": limits}
    kid = client.create(**extra).json()["kernelId"]
    try:
        got = info(client, kid)
        assert got["memoryLimit"] == 128 * 1024
        assert got["queryTimeout"] == 10000
        assert got["idleTimeout"] == 600000
        assert got["maxCpuCredit"] == 600000
    finally:
        client.request("DELETE", f"/v2/kernel/{kid}")


def test_requested_limits_are_applied(client):
    kid = create(client, maxMem=200 * 1024, execTimeout=5000, idleTimeout=20000,
                 maxCpuCredit=9000)  # fmt: skip
    try:
        got = info(client, kid)
        assert (got["memoryLimit"], got["queryTimeout"]) == (200 * 1024, 5000)
        assert (got["idleTimeout"], got["maxCpuCredit"]) == (20000, 9000)
        # the memory limit is the cgroup's, not a number in a table
        _, out, _ = run(client, kid, "b = bytearray(150 * 1024 * 1024); print(len(b))")
        assert out == f"{150 * MiB}\n"
    finally:
        client.request("DELETE", f"/v2/kernel/{kid}")


def test_bad_limit_values_are_400(client):
    for limits in ({"maxMem": -1}, {"maxMem": "1G"}, {"execTimeout": True}, {"nope": 1}):
        problem(client.create(limits=limits), 400, "invalid-api-params")
    problem(client.create(limits=[1]), 400, "invalid-api-params")


def test_less_memory_than_a_kernel_can_start_with_is_400(client):
    """Found by the fuzzer (tests/api/test_fuzz_api.py): maxMem 1 started a kernel in a
    cgroup of 1 KB, and the create failed with a 500 kernel-creation-failed. The least
    is what [limits] default_memory_bytes may be set to, 16 MiB."""
    for block in ("limits", "resourceLimits"):
        for kb in (1, 5, 16 * 1024 - 1):
            title = problem(client.create(**{block: {"maxMem": kb}}), 400, "invalid-api-params")
            assert f"{block}.maxMem: " in title and "at least 16384 KB" in title
    kid = client.create(limits={"maxMem": 16 * 1024}).json()["kernelId"]
    assert client.run(kid, "print(6 * 7)")[-1]["console"] == [["stdout", "42\n"]]
    client.request("DELETE", f"/v2/kernel/{kid}")


# -- enforcement -----------------------------------------------------------------------


def test_out_of_memory_ends_the_run_and_restarts_the_kernel(server, client, bystander):
    kid = create(client, maxMem=96 * 1024)
    run(client, kid, "kept = 'state'\nopen('notes.txt', 'w').write('files stay')")
    remains = KernelRemains(server, kid)
    code = (
        "chunks = []\n"
        "for i in range(1000):\n"
        "    chunks.append(bytearray(8 * 1024 * 1024))\n"
        "    print('allocated', (i + 1) * 8, 'MiB', flush=True)\n"
    )
    results, out, err = run(client, kid, code)
    assert results[-1]["status"] == "finished"
    assert out.startswith("allocated 8 MiB\n")  # the output so far is kept
    if not HAS_CGROUPS:  # RLIMIT_AS: the allocation fails, the kernel and its state live on
        assert "MemoryError" in err and "restarted" not in err
        assert run(client, kid, "print(kept)")[1] == "state\n"
        still_answers(client, bystander)
        client.request("DELETE", f"/v2/kernel/{kid}")
        return
    assert results[-1]["exitCode"] == 137
    assert "out of memory" in err and "96 MiB" in err and "restarted" in err
    remains.assert_processes_gone()  # the old kernel's processes
    got = info(client, kid)  # the same kernel id answers again
    assert got["memoryLimit"] == 96 * 1024
    _, out, err = run(client, kid, "print(open('notes.txt').read()); print(kept)")
    assert out == "files stay\n" and "NameError" in err
    still_answers(client, bystander)
    client.request("DELETE", f"/v2/kernel/{kid}")


def test_a_program_killed_for_memory_is_reported(client, kernels_c):
    code = (
        "#include <stdlib.h>\n#include <string.h>\n#include <stdio.h>\n"
        "int main(void) { for (int i = 0;; i++) { char *p = malloc(1 << 20);"
        ' if (!p) { printf("malloc failed\\n"); return 3; }'
        ' memset(p, 1, 1 << 20); if (i % 64 == 0) { printf("%d MiB\\n", i); } } }\n'
    )
    results, out, err = run(client, kernels_c, code)
    assert out.startswith("0 MiB\n")
    if not HAS_CGROUPS:  # RLIMIT_AS: malloc returns NULL instead of an OOM kill
        assert results[-1]["exitCode"] == 3 and out.endswith("malloc failed\n")
        return
    assert results[-1]["exitCode"] == 137
    assert "out of memory" in err and "restarted" not in err  # only the program died
    assert client.run(kernels_c, "int main(void) { return 0; }")[-1]["exitCode"] == 0


@pytest.fixture
def kernels_c(client):
    kid = client.create(lang="c").json()["kernelId"]
    yield kid
    client.request("DELETE", f"/v2/kernel/{kid}")


def test_exec_timeout_destroys_the_kernel_and_says_why(server, client, bystander):
    kid = create(client, execTimeout=1500)
    run(client, kid, "import subprocess; subprocess.Popen(['sleep', '1000'])")
    remains = KernelRemains(server, kid)
    results, _, _ = run(client, kid, "import time; time.sleep(30)")
    assert results[-1]["status"] == "exec-timeout"
    assert "exec timeout" in problem(client.request("GET", f"/v2/kernel/{kid}"), 404,
                                     "kernel-not-found")  # fmt: skip
    remains.assert_gone()
    still_answers(client, bystander)


def test_idle_timeout_destroys_the_kernel_and_says_why(server, client, bystander):
    kid = create(client, idleTimeout=1000)
    remains = KernelRemains(server, kid)
    time.sleep(2.5)  # no calls on it meanwhile: a GET would count as use
    title = problem(client.request("GET", f"/v2/kernel/{kid}"), 404, "kernel-not-found")
    assert "idle timeout" in title
    remains.assert_gone()
    still_answers(client, bystander)


def test_cpu_credit_destroys_the_kernel_and_says_why(server, client, bystander):
    kid = create(client, maxCpuCredit=1000, execTimeout=30000)
    remains = KernelRemains(server, kid)
    results = client.run(kid, "while True: pass")
    assert results[-1]["status"] == "finished"  # the run ended when the kernel went
    title = problem(client.request("GET", f"/v2/kernel/{kid}"), 404, "kernel-not-found")
    assert "CPU credit" in title
    remains.assert_gone()
    still_answers(client, bystander)


def test_cpu_credit_counts_cpu_time_not_sleep(client):
    kid = create(client)
    try:
        before = info(client, kid)["cpuCreditUsed"]
        run(
            client,
            kid,
            "import time\nt = time.process_time()\nwhile time.process_time() - t < 1: pass",
        )
        busy = info(client, kid)["cpuCreditUsed"]
        run(client, kid, "import time; time.sleep(1.5)")
        slept = info(client, kid)["cpuCreditUsed"]
        assert busy - before >= 900, (before, busy)
        assert slept - busy < 300, (busy, slept)
    finally:
        client.request("DELETE", f"/v2/kernel/{kid}")


def test_restart_keeps_age_and_cpu_credit_and_resets_idle(client):
    kid = create(client)
    try:
        run(
            client,
            kid,
            "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass",
        )
        time.sleep(0.5)
        before = info(client, kid)
        assert client.request("PATCH", f"/v2/kernel/{kid}").status_code == 204
        after = info(client, kid)
        assert after["age"] >= before["age"]
        assert after["cpuCreditUsed"] >= before["cpuCreditUsed"] >= 400
        assert after["idle"] < 400
        assert after["numQueriesExecuted"] >= before["numQueriesExecuted"]
    finally:
        client.request("DELETE", f"/v2/kernel/{kid}")


def test_memory_used_is_the_cgroups_figure(server, client):
    kid = create(client)
    try:
        run(client, kid, "data = bytearray(100 * 1024 * 1024)")
        reported = info(client, kid)["memoryUsed"] * 1024
        remains = KernelRemains(server, kid)
        if not HAS_CGROUPS:  # psutil: the sum of the kernel's processes' RSS
            rss = sum(psutil.Process(p).memory_info().rss for p in remains.processes())
            assert rss >= 100 * MiB
            assert abs(reported - rss) <= 0.2 * rss, (reported, rss)
            return
        cgroup_peak = 0
        for d in remains.cgroup_dirs:
            for name in ("memory.peak", "memory.max_usage_in_bytes"):
                try:
                    with open(f"{d}/{name}") as f:
                        cgroup_peak = max(cgroup_peak, int(f.read()))
                except OSError:
                    continue
        assert cgroup_peak >= 100 * MiB
        assert abs(reported - cgroup_peak) <= 0.2 * cgroup_peak, (reported, cgroup_peak)
    finally:
        client.request("DELETE", f"/v2/kernel/{kid}")


def test_a_fork_bomb_stops_at_the_pids_limit(client, bystander):
    kid = create(client)
    try:
        code = (
            "import os, time\nn = 0\n"
            "try:\n"
            "    while n < 1000:\n"
            "        if os.fork() == 0:\n"
            "            time.sleep(3); os._exit(0)\n"
            "        n += 1\n"
            "except OSError as e:\n"
            "    print('stopped', n < 64, e.errno)\n"
        )
        _, out, _ = run(client, kid, code)
        if HAS_CGROUPS:
            assert out == "stopped True 11\n"  # EAGAIN below pids_per_kernel
        else:  # RLIMIT_NPROC: pids_per_kernel beyond the tasks the kernel uid had
            assert out.startswith("stopped ") and out.endswith(" 11\n"), out
        still_answers(client, bystander)
    finally:
        client.request("DELETE", f"/v2/kernel/{kid}")


@pytest.mark.parametrize("path", ["/home/work/big", "/tmp/big"])
def test_a_full_disk_is_enospc_inside(client, path):
    kid = create(client)
    try:
        code = (
            "import errno\n"
            f"try:\n    open({path!r}, 'wb').write(b'x' * (20 * 1024 * 1024))\n"
            "except OSError as e:\n    print('full', e.errno == errno.ENOSPC)\n"
        )
        _, out, _ = run(client, kid, code)
        assert out == "full True\n"
    finally:
        client.request("DELETE", f"/v2/kernel/{kid}")


def test_an_output_flood_is_capped_and_the_server_stays_flat(server, client, bystander):
    kid = create(client)
    try:
        server_rss = psutil.Process(server.pid).memory_info().rss
        # 64 KiB per print: quick enough for the 10 s exec timeout even in the v2 guest
        results, out, err = run(client, kid, "while True: print('x' * 65535)")
        assert results[-1]["status"] == "finished" and results[-1]["exitCode"] == 130
        assert 2 * MiB - 64 * 1024 <= len(out) <= 2 * MiB
        assert "output limit" in err
        grown = psutil.Process(server.pid).memory_info().rss - server_rss
        assert grown < 32 * MiB, grown
        still_answers(client, kid)
        still_answers(client, bystander)
    finally:
        client.request("DELETE", f"/v2/kernel/{kid}")


def test_the_host_kernel_maximum_is_503(server):
    other = server.client(**server.new_key(concurrency=50))
    made = []
    try:
        for _ in range(13):
            r = other.create()
            if r.status_code != 201:
                break
            made.append(r.json()["kernelId"])
        title = problem(r, 503, "instance-not-available")
        assert "maximum of 12" in title
    finally:
        for kid in made:
            other.request("DELETE", f"/v2/kernel/{kid}")


def test_a_client_destroy_is_remembered_as_such(client):
    kid = create(client)
    assert client.request("DELETE", f"/v2/kernel/{kid}").status_code == 204
    title = problem(client.request("GET", f"/v2/kernel/{kid}"), 404, "kernel-not-found")
    assert "destroyed by the client" in title


def test_a_kernel_that_cannot_start_is_kernel_creation_failed(tmp_path):
    """Kernels that cannot start: on a server whose kernels may hold a single process
    pid 1 cannot fork the runner (not under none, whose fork budget counts from the
    kernel uid's tasks at start), and a folder's image vanished behind the
    server's back cannot be mounted. Each create fails cleanly and the server goes
    on serving."""
    proc, broken = start_server(str(tmp_path / "data"), config="pids_per_kernel = 1\n")
    try:
        client = broken.client()
        if HAS_CGROUPS:
            problem(client.create(), 500, "kernel-creation-failed")
            assert client.request("GET", "/v2/authorize").status_code == 200
            problem(client.create(), 500, "kernel-creation-failed")  # nothing half-made left
        assert client.request("POST", "/v2/folders", {"name": "vanished"}).status_code == 201
        (image,) = (tmp_path / "data" / "folders").glob("*.img")
        image.unlink()
        problem(client.create(mounts=["vanished"]), 500, "kernel-creation-failed")
        assert client.request("GET", "/v2/authorize").status_code == 200
    finally:
        stop_server(proc)


def test_an_unknown_folder_in_mounts_is_folder_not_found(client):
    problem(client.create(mounts=["no-such-folder"]), 404, "folder-not-found")


def test_folder_bytes_quota(client):
    """A folder holds what its image holds (412 once full); the key's folders may
    reserve max_folder_bytes_per_key in all (412 at create)."""
    names = ["quota", "quota2", "quota3"]
    assert client.request("POST", "/v2/folders", {"name": "quota"}).status_code == 201
    try:
        body, ctype = multipart([(f"f{i}", b"x" * (MiB - 4096)) for i in range(2)])
        r = client.request("POST", "/v2/folders/quota/upload", raw=body, content_type=ctype)
        assert r.status_code == 201, r.text
        body, ctype = multipart([("more", b"x" * MiB)])
        r = client.request("POST", "/v2/folders/quota/upload", raw=body, content_type=ctype)
        assert "is full" in problem(r, 412, "quota-exceeded")
        assert client.request("POST", "/v2/folders", {"name": "quota2"}).status_code == 201
        r = client.request("POST", "/v2/folders", {"name": "quota3"})
        assert str(8 * MiB) in problem(r, 412, "quota-exceeded")
    finally:
        for name in names:
            client.request("DELETE", f"/v2/folders/{name}")


@contextlib.contextmanager
def frozen(remains: KernelRemains):
    """Hold a kernel's processes frozen (harness.frozen): a SIGKILL waits for the
    thaw, as for a process stuck in uninterruptible sleep. Thawed on exit."""
    with harness_frozen(remains.processes()):
        yield
    remains.assert_gone()  # the SIGKILL lands on the thaw; the spawner removes the rest


def _logged(server, text: str) -> bool:
    return any(text in line for line in server.output)


def test_the_reaper_survives_a_kernel_that_will_not_die(server, client, bystander):
    """The reaper's destroy of a kernel that will not die gives up after the kill
    timeout; the server goes on serving and reaping the others, and once the
    kernel's processes can die, nothing of it is left."""
    kid = create(client, idleTimeout=1000)
    remains = KernelRemains(server, kid)
    with frozen(remains):
        # The idle timeout fires and the reaper's destroy cannot finish.
        wait_until(lambda: _logged(server, f"kernel {kid} will not die"), "the spawner to give up")
        assert remains.processes(), "the frozen kernel should still be there"
        assert "idle timeout" in problem(client.request("GET", f"/v2/kernel/{kid}"), 404,
                                         "kernel-not-found")  # fmt: skip
        # Meanwhile the server serves, and the reaper still reaps other kernels.
        still_answers(client, bystander)
        assert client.request("GET", "/v2/authorize").status_code == 200
        other = create(client, idleTimeout=1000)
        ended = (f"kernel={other} ", "reason=idle-timeout")
        wait_until(lambda: any(all(part in line for part in ended) for line in server.output),
                   "the reaper to destroy another idle kernel")  # fmt: skip
    wait_until(lambda: _logged(server, f"kernel {kid} died at last"), "the kernel to die")


def test_destroying_a_kernel_that_will_not_die_is_kernel_destruction_failed(server, client):
    """The client hears that the destroy failed; the kernel is gone from the API at
    once, and from the host once its processes can die."""
    kid = create(client)
    remains = KernelRemains(server, kid)
    with frozen(remains):
        title = problem(client.request("DELETE", f"/v2/kernel/{kid}"), 500,
                        "kernel-destruction-failed")  # fmt: skip
        assert "would not die" in title
        assert "destroyed by the client" in problem(client.request("GET", f"/v2/kernel/{kid}"),
                                                    404, "kernel-not-found")  # fmt: skip
    wait_until(lambda: _logged(server, f"kernel {kid} died at last"), "the kernel to die")


OOM_SCORE_PROBE = """
import subprocess
def adj():
    return open('/proc/self/oom_score_adj').read().strip()
try:
    open('/proc/self/oom_score_adj', 'w').write('-1000')
    lowered = 'lowered'
except OSError as e:
    lowered = type(e).__name__
child = subprocess.run(['cat', '/proc/self/oom_score_adj'], capture_output=True, text=True)
print(adj(), child.stdout.strip(), lowered)
"""


def test_when_the_host_runs_out_of_memory_a_kernel_goes_before_the_server(server, client):
    """The host's OOM killer (all memory gone, past every cgroup) weighs each process
    by its oom_score_adj: every process of a kernel is at +500, and a kernel cannot
    lower it; the server and the spawner are at -900 (sandbox/oom_score.py), or at
    0 where root lacks CAP_SYS_RESOURCE (as in some containers), below the kernels."""
    kid = create(client)
    try:
        _, out, err = run(client, kid, OOM_SCORE_PROBE)
        assert out.split() == ["500", "500", "PermissionError"], (out, err)
    finally:
        client.request("DELETE", f"/v2/kernel/{kid}")
    lowering = subprocess.run(["sh", "-c", "echo -1 > /proc/self/oom_score_adj"], check=False)
    expected = "-900" if lowering.returncode == 0 else "0"
    for pid in (server.pid, spawner_pid(server.pid)):
        with open(f"/proc/{pid}/oom_score_adj") as f:
            assert f.read().strip() == expected, pid
