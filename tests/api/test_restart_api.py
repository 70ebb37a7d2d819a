"""Kernels outlive a server restart ([sandbox] keep_kernels_on_restart, on by
default): a server stopped by SIGTERM, or killed, leaves its spawner and kernels,
and the next server on the same data directory adopts them with their owners,
tokens and run state. Everything here is a real server, stopped and started."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import psutil
import pytest
from helpers.api_server import ApiServer, SignedClient, spawner_pid, start_server, stop_server
from helpers.harness import alive, wait_until
from helpers.kernel_remains import KernelRemains
from helpers.problems import problem

pytestmark = pytest.mark.cgroups

IDLE_KERNELS = 18
COUNT_TO = 150  # the running kernel prints 0 .. COUNT_TO - 1, one line every 50 ms
COUNTER = (
    f"import time\nfor i in range({COUNT_TO}):\n    print(i, flush=True)\n    time.sleep(0.05)\n"
)
# A server whose spawner protocol differs, as an upgraded server's would.
UPGRADED = (
    sys.executable, "-c",
    "import runpy, sandbox.spawner_protocol as p; p.VERSION += 1; "
    "runpy.run_module('server', run_name='__main__')",
)  # fmt: skip


def _stdout(results: list[dict]) -> str:
    return "".join(text for r in results for kind, text in r["console"] if kind == "stdout")


def _signal_and_wait(proc: subprocess.Popen, sig: int) -> None:
    proc.send_signal(sig)
    proc.wait(30)


def _client(server: ApiServer, keys: dict) -> SignedClient:
    """A client of the next server with keys the first one made."""
    return server.client(**keys)


def _records(data_dir: str) -> dict[str, dict]:
    """The kernels' records a stopped server left (server/engine/kernel_records.py)."""
    with sqlite3.connect(os.path.join(data_dir, "kernels.sqlite")) as db:
        return {k: json.loads(r) for k, r in db.execute("SELECT id, record FROM kernels")}


def _keys(server: ApiServer) -> dict:
    return {"access_key": server.access_key, "secret_key": server.secret_key}


def _collect(client: SignedClient, kernel_id: str, results: list[dict]) -> list[dict]:
    """Continue the run to its end."""
    while results[-1]["status"] == "continued":
        r = client.execute(kernel_id, mode="continue", code="")
        assert r.status_code == 200, r.text
        results.append(r.json()["result"])
    return results


@pytest.mark.timeout(300)  # three server starts and twenty kernels: 105 s in a slow guest
def test_twenty_kernels_survive_a_sigterm_restart_with_their_runs(tmp_path):
    """18 idle kernels keep their variables, one mid-run loses none of its output
    (the lines before the restart and after it add up to every line once), one
    waiting for input() takes it from the next server; tokens still find their
    kernels; and when the next server stops for good, nothing of them is left."""
    data = str(tmp_path / "data")
    proc, first = start_server(data)
    keys = first.new_key(concurrency=IDLE_KERNELS + 4)
    client = first.client(**keys)
    idle = {}
    for n in range(IDLE_KERNELS):
        kernel_id = client.create(token=f"idle-{n}").json()["kernelId"]
        assert client.run(kernel_id, f"x = {n} * 7")[-1]["status"] == "finished"
        idle[kernel_id] = n
    running = client.create(token="running").json()["kernelId"]
    before = [client.execute(running, mode="query", code=COUNTER).json()["result"]]
    assert before[0]["status"] == "continued", before
    waiting = client.create(token="waiting").json()["kernelId"]
    asked = client.execute(waiting, mode="query", code="print('hi', input('who? '))").json()
    assert asked["result"]["status"] == "waiting-input", asked
    remains = [KernelRemains(first, k) for k in (*list(idle)[:2], running, waiting)]
    spawner = spawner_pid(first.pid)
    time.sleep(0.5)  # the run prints on, and the server reads it, with no client asking

    _signal_and_wait(proc, signal.SIGTERM)
    assert alive(spawner)  # it waits for the next server, kernels and all
    # The run's output read since the last call was handed over in its record.
    held = _records(data)[running]["held"]
    assert {e["kind"] for e in held["events"]} == {"stdout"}, held
    assert {k: r["state"] for k, r in _records(data).items() if r["state"] != "idle"} == {
        running: "running",
        waiting: "waiting-input",
    }
    proc, second = start_server(data)
    try:
        client = _client(second, keys)
        after = _collect(
            client, running, [client.execute(running, mode="continue").json()["result"]]
        )
        assert _stdout(before) + _stdout(after) == "".join(f"{i}\n" for i in range(COUNT_TO))
        answered = client.execute(waiting, mode="input", code="bob").json()["result"]
        assert (answered["status"], _stdout([answered])) == ("finished", "hi bob\n"), answered
        for kernel_id, n in idle.items():
            assert _stdout(client.run(kernel_id, "print(x)")) == f"{n * 7}\n", kernel_id
        again = client.create(token="idle-3")
        assert again.json() == {"kernelId": list(idle)[3], "created": False}, again.text
        fresh = client.create(token="fresh").json()["kernelId"]
        assert _stdout(client.run(fresh, "print(6 * 7)")) == "42\n"
    finally:
        stop_server(proc)  # SIGINT: a full stop, the adopted kernels with it
    wait_until(lambda: not alive(spawner), "the adopted spawner to exit", timeout=30)
    for remain in remains:
        remain.assert_gone()
    assert not os.path.exists(os.path.join(data, "spawner.sock"))


def test_a_killed_server_is_recovered_the_same_way(tmp_path):
    """SIGKILL: the server writes nothing on its way out, yet its idle kernel and its
    kernel waiting for input (its state written when the call returned) are the
    next server's. (Its data directory's path is too long for a unix socket address:
    the spawner's socket is reached through /proc/self/fd.)"""
    data = str(tmp_path / ("long" * 20) / "data")
    assert len(os.path.join(data, "spawner.sock")) > 108
    proc, first = start_server(data)
    client = first.client()
    kept = client.create(token="kept").json()["kernelId"]
    client.run(kept, "import os\nname = 'still here'")
    waiting = client.create(token="waiting").json()["kernelId"]
    asked = client.execute(waiting, mode="query", code="print(input() * 2)").json()
    assert asked["result"]["status"] == "waiting-input", asked
    _signal_and_wait(proc, signal.SIGKILL)
    proc, second = start_server(data)
    try:
        client = _client(second, _keys(first))
        assert _stdout(client.run(kept, "print(name)")) == "still here\n"
        answered = client.execute(waiting, mode="input", code="ab").json()["result"]
        assert (answered["status"], _stdout([answered])) == ("finished", "abab\n"), answered
    finally:
        stop_server(proc)


def test_a_jobs_kernel_is_not_kept_and_the_next_server_ends_it(tmp_path):
    """A one-shot job ends with the server that runs it (its client's request is
    gone): its kernel has no record, and the next server destroys it as unknown,
    while a kernel of the API beside it is adopted."""
    data = str(tmp_path / "data")
    proc, first = start_server(data, config='[faces]\nenabled = ["jobe"]\n')
    client = first.client()
    kept = client.create(token="kept").json()["kernelId"]
    spawner = psutil.Process(spawner_pid(first.pid))
    before = {p.pid for p in spawner.children() if p.name() == "kernel-init"}
    run = {"language_id": "python3", "sourcefilename": "t.py",
           "sourcecode": "import time\ntime.sleep(60)\n"}  # fmt: skip

    def post() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server is killed under it
            httpx.post(f"{first.endpoint}/jobe/index.php/restapi/runs",
                       json={"run_spec": run}, timeout=90)  # fmt: skip

    threading.Thread(target=post, daemon=True).start()
    job_inits: list[int] = []

    def job_running() -> bool:
        job_inits[:] = [
            p.pid for p in spawner.children() if p.name() == "kernel-init" and p.pid not in before
        ]
        return bool(job_inits)

    wait_until(job_running, "the job's kernel")
    assert set(_records(data)) == {kept}
    _signal_and_wait(proc, signal.SIGKILL)
    proc, second = start_server(data, config='[faces]\nenabled = ["jobe"]\n')
    try:
        wait_until(lambda: not any(alive(pid) for pid in job_inits), "the job's kernel to end")
        assert _stdout(_client(second, _keys(first)).run(kept, "print('kept')")) == "kept\n"
    finally:
        stop_server(proc)


def test_an_upgraded_server_ends_the_kept_kernels_with_the_reason(tmp_path):
    """A server whose spawner protocol differs cannot speak to the kept kernels: it
    stops the old spawner (its kernels end) and each kernel's owner learns why."""
    data = str(tmp_path / "data")
    proc, first = start_server(data)
    client = first.client()
    kernel_id = client.create(token="old-one").json()["kernelId"]
    remains = KernelRemains(first, kernel_id)
    old_spawner = spawner_pid(first.pid)
    _signal_and_wait(proc, signal.SIGTERM)
    proc, second = start_server(data, command=UPGRADED)
    try:
        client = _client(second, _keys(first))
        gone = client.request("GET", f"/v2/kernel/{kernel_id}")
        assert "server upgraded" in problem(gone, 404, "kernel-not-found")
        assert not alive(old_spawner)
        remains.assert_gone()
        fresh = client.create(token="new-one").json()["kernelId"]
        assert _stdout(client.run(fresh, "print('new')")) == "new\n"
    finally:
        stop_server(proc)


@pytest.mark.parametrize("how", ["setting off, SIGTERM", "Ctrl-C"])
def test_kernels_end_with_the_server_when_not_kept(tmp_path, how):
    """keep_kernels_on_restart = false: a SIGTERM ends every kernel, as Ctrl-C
    (SIGINT, an operator's full stop) always does."""
    data = str(tmp_path / "data")
    config = "[sandbox]\nkeep_kernels_on_restart = false\n" if how.startswith("setting") else ""
    proc, first = start_server(data, config=config)
    client = first.client()
    kernel_id = client.create(token="gone").json()["kernelId"]
    remains = KernelRemains(first, kernel_id)
    spawner = spawner_pid(first.pid)
    _signal_and_wait(proc, signal.SIGTERM if how.startswith("setting") else signal.SIGINT)
    assert not alive(spawner)
    remains.assert_gone()
    proc, second = start_server(data, config=config)
    try:
        gone = _client(second, _keys(first)).request("GET", f"/v2/kernel/{kernel_id}")
        assert gone.status_code == 404, gone.text
    finally:
        stop_server(proc)


def test_the_spawner_as_a_service_of_its_own_keeps_kernels_across_servers(tmp_path):
    """`sandbox-server --spawner-only` (sandbox-spawner.service) tells systemd it is
    ready once it listens, keeps a server's kernels across that server's restart,
    ends them but stays when a server stops for good, and goes on SIGTERM with
    everything it started."""
    data = str(tmp_path / "data")
    notify_path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(notify_path)
        notify.settimeout(60)
        spawner = subprocess.Popen(
            [sys.executable, "-m", "server", "--spawner-only", "--data-dir", data],
            env={**os.environ, "NOTIFY_SOCKET": notify_path}, start_new_session=True,
        )  # fmt: skip
        try:
            assert notify.recv(64) == b"READY=1"
            assert os.path.exists(os.path.join(data, "spawner.sock"))
            proc, first = start_server(data)
            client = first.client()
            kernel_id = client.create(token="served").json()["kernelId"]
            client.run(kernel_id, "word = 'kept'")
            started = {p.pid for p in psutil.Process(spawner.pid).children(recursive=True)}
            _signal_and_wait(proc, signal.SIGTERM)
            proc, second = start_server(data)
            try:
                client = _client(second, _keys(first))
                assert _stdout(client.run(kernel_id, "print(word)")) == "kept\n"
            finally:
                stop_server(proc)  # a full stop: its kernels end, the service stays
            assert spawner.poll() is None
            proc, third = start_server(data)
            try:
                gone = _client(third, _keys(first)).request("GET", f"/v2/kernel/{kernel_id}")
                assert gone.status_code == 404, gone.text
            finally:
                stop_server(proc)
        finally:
            spawner.send_signal(signal.SIGTERM)
            status = spawner.wait(30)
    assert status == 0
    assert not os.path.exists(os.path.join(data, "spawner.sock"))
    assert [pid for pid in started if alive(pid)] == []


def test_a_second_server_on_the_same_data_directory_does_not_start(tmp_path):
    """Its spawner is busy with the first server: the second says so and stops,
    and takes nothing from the first (its spawner's socket stays, its kernel runs)."""
    data = str(tmp_path / "data")
    proc, first = start_server(data)
    try:
        client = first.client()
        kernel_id = client.create(token="first-one").json()["kernelId"]
        with pytest.raises(RuntimeError, match="server exited") as refused:
            start_server(data)
        assert "another server runs on the data directory" in str(refused.value)
        assert os.path.exists(os.path.join(data, "spawner.sock"))
        assert _stdout(client.run(kernel_id, "print('still')")) == "still\n"
        _signal_and_wait(proc, signal.SIGTERM)
        proc, second = start_server(data)  # the first's kernel is still adopted
        assert _stdout(_client(second, _keys(first)).run(kernel_id, "print(2)")) == "2\n"
    finally:
        stop_server(proc)


def test_only_root_may_take_the_kept_kernels(tmp_path):
    """The spawner's socket is root's alone (0600, in a 0700 data directory); were
    both opened up, a connection from another uid is still turned away: it would
    be handed every kernel's socket. Root's next server then adopts as usual."""
    data = str(tmp_path / "data")
    proc, first = start_server(data)
    client = first.client()
    kernel_id = client.create(token="guarded").json()["kernelId"]
    sock_path = os.path.join(data, "spawner.sock")
    _signal_and_wait(proc, signal.SIGTERM)
    assert os.stat(sock_path).st_mode & 0o777 == 0o600
    assert os.stat(data).st_mode & 0o777 == 0o700
    os.chmod(data, 0o711)
    os.chmod(sock_path, 0o666)
    try:
        intruder = subprocess.run(
            [sys.executable, "-c",
             "import os, socket, sys\n"
             "d = os.open(sys.argv[1], os.O_PATH)  # past the 0700 directories above it\n"
             "os.setgid(65534); os.setuid(65534)\n"
             "s = socket.socket(socket.AF_UNIX); s.settimeout(10)\n"
             "s.connect(f'/proc/self/fd/{d}/spawner.sock')\n"
             "print(repr(s.recv(65536)))\n",
             data],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    finally:
        os.chmod(data, 0o700)
    assert intruder.returncode == 0, intruder.stderr
    assert intruder.stdout == "b''\n"  # connected, then closed on: no hello, no kernels
    proc, second = start_server(data)
    try:
        assert _stdout(_client(second, _keys(first)).run(kernel_id, "print(3)")) == "3\n"
    finally:
        stop_server(proc)
