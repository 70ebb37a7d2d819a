"""Hostile kernels against the server (issue "hostile tenants", points 2 and 8).

User code in a python3 kernel can write any bytes to the runner's fd 3, which
pid 1 relays to the server. These tests do it over HTTP against a server of
their own with small holding bounds: floods of frames nobody polls for must not
run the server out of memory, malformed frames must end their kernel with a
reason, and a kernel that died must answer 404 with that reason, never 500.
Every test checks that another kernel still answers.
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures
import contextlib
import json
import os
import random
import signal
import struct
import threading
import time

import psutil
import pytest
from helpers.api_server import start_server, stop_server
from helpers.harness import AFTER_THE_QUERY, HAS_CGROUPS, wait_until
from helpers.kernel_remains import KernelRemains
from helpers.problems import problem

from sandbox.kernel_events import RUNNER_JSON_MAX
from sandbox.runner.protocol import MAX_JSON

MiB = 1024 * 1024
PAUSE, HELD, SERVER_HELD = 2 * MiB, 8 * MiB, 12 * MiB
CONFIG = f"""
kernel_pause_bytes = {PAUSE}
kernel_held_bytes = {HELD}
server_held_bytes = {SERVER_HELD}
kernel_send_seconds = 1.0
"""
FLOODERS = 5
# What the server may hold beyond its bounds: per flooding kernel one piece being
# read and one runner JSON being parsed (256 KiB each), and the allocator's slack.
RSS_SLACK = 64 * MiB

# In-kernel: build frames as the wire protocol has them (sandbox/runner/protocol.py).
FRAMES = """
import os, struct
def frame(body, blob=b"", flags=0):
    return struct.pack(">II", len(body) | flags, len(blob)) + body + blob
def send(data):
    view = memoryview(data)
    while view:
        view = view[os.write(3, view):]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("hostile-data")
    proc, server = start_server(str(data / "data"), config=CONFIG)
    yield server
    stop_server(proc)
    assert "Traceback" not in "".join(server.output), "".join(server.output)


@pytest.fixture(scope="module")
def client(server):
    return server.client(**server.new_key(concurrency=40))


@pytest.fixture(scope="module")
def bystander(client):
    """A kernel that must keep answering whatever the others do."""
    kid = create(client)
    yield kid
    client.request("DELETE", f"/v2/kernel/{kid}")


def create(client) -> str:
    r = client.create()
    assert r.status_code == 201, r.text
    return r.json()["kernelId"]


def still_answers(client, kid: str) -> None:
    results = client.run(kid, "print(6 * 7)")
    assert results[-1]["console"] == [["stdout", "42\n"]], results


def gone_reason(client, kid: str) -> str:
    """The title of the 404 a dead kernel answers, once its watcher has ended it."""
    deadline = time.monotonic() + 30
    while (r := client.request("GET", f"/v2/kernel/{kid}")).status_code == 200:
        assert time.monotonic() < deadline, "the kernel was not ended"
        time.sleep(0.05)
    return problem(r, 404, "kernel-not-found")


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def peak_rss(pid: int) -> int:
    """The process's resident high-water mark (VmHWM): no sampling can miss a peak."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


# -- point 2: a kernel cannot run the server out of memory -----------------------------

FLOOD = (
    FRAMES
    + AFTER_THE_QUERY
    + f"""
def flood():
    after_the_query()
    unknown = b'{{"ev":"flood","x":"' + b"u" * ({RUNNER_JSON_MAX} - 40) + b'"}}'
    error = b'{{"ev":"error","message":"' + b"e" * ({RUNNER_JSON_MAX} - 40) + b'"}}'
    blob = b"o" * (16 * 1024 * 1024)
    out = frame(b'{{"ev":"stdout"}}', blob)
    for _ in range(400):
        send(frame(unknown))
    for _ in range(4):
        send(frame(b'{{"ev":"flood"}}', blob))
    with open("/home/work/progress", "w") as f:
        f.write("unknown sent")
    for _ in range(20):
        send(frame(error))
        send(frame(b'{{"ev":"waiting-input"}}'))
        send(out)
threading.Thread(target=flood, daemon=True).start()
"""
)


def test_floods_nobody_polls_for_stay_within_the_bounds(server, client, bystander):
    """5 kernels write maximal frames (unknown events with 16 MiB blobs or 256 KiB of
    JSON, errors with 256 KiB messages, 16 MiB of output) from a thread after their
    query finished, so no client polls:
    unknown events are dropped, the rest is held up to the bounds and then the
    server stops reading them. The server's peak RSS stays within its start plus
    the server-wide bound plus per-kernel slack (the fix's absence: 500 MiB and
    more), the bystander answers, and a flooder's output is still there."""
    still_answers(client, bystander)
    base = rss(server.pid)
    kids = [create(client) for _ in range(FLOODERS)]
    work = {kid: KernelRemains(server, kid).work_dir for kid in kids}

    def start(kid: str) -> None:
        own = server.client(access_key=client.access_key, secret_key=client.secret_key)
        results = own.run(kid, FLOOD)
        assert results[-1]["status"] == "finished", results

    with concurrent.futures.ThreadPoolExecutor(FLOODERS) as pool:
        list(pool.map(start, kids))

    def unknown_sent() -> bool:
        return all(os.path.exists(f"{work[kid]}/progress") for kid in kids)

    wait_until(unknown_sent, "every flooder to send its unknown events", timeout=120)
    still_answers(client, bystander)
    time.sleep(2)  # let the known events pile up to the bounds (the bound is asserted)
    peak = peak_rss(server.pid)
    bound = base + SERVER_HELD + FLOODERS * 2 * MiB + RSS_SLACK
    assert peak <= bound, f"peak RSS {peak / MiB:.0f} MiB over {bound / MiB:.0f} MiB"

    # Paused, not ended: a client that polls gets the output.
    r = client.execute(kids[0], mode="query", code="")
    assert r.status_code == 200, r.text
    assert r.json()["result"]["console"], r.json()
    for kid in kids:
        assert client.request("DELETE", f"/v2/kernel/{kid}").status_code == 204
    still_answers(client, bystander)


# -- point 8: malformed frames end their kernel with a reason ----------------------------

FATAL = [
    b'{"ev": []}',
    b"[" * 100_000,
    b"[" * 100_000 + b"]" * 100_000,
    b'{"ev": "finished", "exitCode": "0"}',
    b'{"ev": "completions", "rid": [1], "items": []}',
    b'{"ev": "error", "message": {"a": 1}}',
    b'{"ev": "waiting-input", "is_password": []}',
    b'{"ev": "stdout"\xff}',
    b"\xff\xfe\x00",
    b"42",
    b'"ev"',
    b"",
]


MALFORMED = {
    "ev-list": repr(FATAL[0]),
    "deep": repr(FATAL[1]),
    "deep-closed": repr(FATAL[2]),
    "exitcode": repr(FATAL[3]),
    "over-the-runner-cap": f'b\'{{"ev":"x","p":"\' + b\'p\' * {RUNNER_JSON_MAX} + b\'"}}\'',
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_frame_ends_the_kernel_with_a_reason(client, bystander, body):
    kid = create(client)
    code = FRAMES + f"send(frame({body}))\nprint('still here')"
    client.run(kid, code)
    title = gone_reason(client, kid)
    assert "broke the kernel protocol" in title, title
    still_answers(client, bystander)


EVENTS = ["stdout", "stderr", "finished", "build-finished", "reply", "exited", "completions",
          "error", "waiting-input", "ready", "pty-out", "pty-exit", "job-finished", "media",
          "html", "no-such-event"]  # fmt: skip


def fuzz_frames(rng: random.Random) -> bytes:
    """Random frames, then one the server must refuse: random headers (flags, lengths
    over the limits), JSON of wrong types, duplicate keys, invalid UTF-8, nesting."""
    out = b""
    for _ in range(rng.randint(1, 12)):
        choice = rng.random()
        if choice < 0.1:  # a header with flags or lengths pid 1 refuses; nothing follows
            word = rng.choice([1 << 31, 1 << 30, 0]) | rng.randint(MAX_JSON + 1, (1 << 30) - 1)
            out += struct.pack(">II", word, rng.randint(0, 1 << 31))
            break
        if choice < 0.4:
            body = rng.choice(FATAL)
        elif choice < 0.7:
            value = rng.choice([[], {}, "", 0, -1, 2**70, 1.5, True, None, "x" * 300, [[[]]]])
            key = rng.choice(["ev", "rid", "exitCode", "status", "items", "message", "ok"])
            ev = rng.choice(EVENTS)
            body = json.dumps({"ev": ev, key: value}).encode()
        elif choice < 0.8:  # duplicate keys: the last one wins
            body = b'{"ev": "stdout", "ev": "finished", "exitCode": 1, "exitCode": 2}'
        else:
            body = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        blob = bytes(rng.randrange(256) for _ in range(rng.choice([0, 0, 1, 100, 5000])))
        out += struct.pack(">II", len(body), len(blob)) + body + blob
    body = rng.choice(FATAL)
    return out + struct.pack(">II", len(body), 0) + body


@pytest.mark.parametrize("seed", range(12))
def test_fuzzed_frames_end_the_kernel_with_a_reason(server, client, bystander, seed):
    """Whatever arrives, the fuzzed kernel ends with a reason in its 404 (the server
    refused a frame, or pid 1 did and the runner was killed), and the server and
    other kernels answer."""
    data = fuzz_frames(random.Random(seed))
    kid = create(client)
    code = FRAMES + f"import base64\nsend(base64.b64decode({base64.b64encode(data)!r}))"
    r = client.execute(kid, mode="query", code=code)
    assert r.status_code in (200, 404), r.text
    title = gone_reason(client, kid)
    assert "broke the kernel protocol" in title or "the kernel exited" in title, title
    still_answers(client, bystander)


# -- sends have timeouts; a dead kernel answers 404 with the reason -----------------------


def test_a_kernel_that_stops_reading_is_ended(server, client, bystander):
    """Its pid 1 is stopped from outside and an execute sends more than the socket
    holds: the send times out (kernel_send_seconds), the kernel is ended and the
    call answers 404 with the reason, instead of waiting forever."""
    kid = create(client)
    (init_pid, _), = KernelRemains(server, kid).inits.values()  # fmt: skip
    os.kill(init_pid, signal.SIGSTOP)
    try:
        r = client.execute(kid, mode="query", code="#" * (900 * 1024))
        assert "did not read what the server sent" in problem(r, 404, "kernel-not-found")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(init_pid, signal.SIGCONT)
    assert "did not read" in gone_reason(client, kid)
    still_answers(client, bystander)


AFTER_DEATH = {
    "execute": ("POST", "", {"mode": "query", "code": "print(1)"}),
    "info": ("GET", "", None),
    "interrupt": ("POST", "/interrupt", None),
    "files": ("GET", "/files", {"path": "."}),
    "download": ("GET", "/download", {"files": ["x"]}),
}


@pytest.mark.parametrize("request_kind", sorted(AFTER_DEATH))
@pytest.mark.parametrize("suicide", ["os.kill(os.getpid(), 9)", "os._exit(0)"])
def test_a_request_right_after_a_kernel_killed_itself_is_404_with_the_reason(
    client, bystander, suicide, request_kind
):
    method, path, body = AFTER_DEATH[request_kind]
    for _ in range(20):
        kid = create(client)
        client.execute(kid, mode="query", code=f"import os\n{suicide}")
        r = client.request(method, f"/v2/kernel/{kid}{path}", body)
        assert "the kernel exited" in problem(r, 404, "kernel-not-found")
    still_answers(client, bystander)


# the interrupts must not end it first: ignored from a query of its own, so that none
# can land before
IGNORE_INTERRUPTS = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)"
OUT_OF_MEMORY = """
chunks = []
while True:
    chunks.append(bytearray(8 * 1024 * 1024))
"""


def test_interrupts_while_a_kernel_is_restarted_after_an_oom_kill_never_get_500(
    server, client, bystander
):
    """Interrupts sent all along a run that the OOM killer ends: the killed kernel's
    run is over and the restarted kernel has none, so each is a 204, never a 500."""
    if not HAS_CGROUPS:
        pytest.skip("no OOM kill without cgroups (the none layout: MemoryError)")
    r = client.create(limits={"maxMem": 64 * 1024})
    assert r.status_code == 201, r.text
    kid = r.json()["kernelId"]
    assert client.run(kid, IGNORE_INTERRUPTS)[-1]["status"] == "finished"
    other = server.client(access_key=client.access_key, secret_key=client.secret_key)
    statuses: list[int] = []
    done = threading.Event()

    def interrupt() -> None:
        while not done.is_set():
            statuses.append(other.request("POST", f"/v2/kernel/{kid}/interrupt").status_code)

    thread = threading.Thread(target=interrupt)
    thread.start()
    try:
        results = client.run(kid, OUT_OF_MEMORY)
    finally:
        done.set()
        thread.join()
    err = "".join(t for r in results for k, t in r["console"] if k == "stderr")
    assert "restarted" in err, f"the run was not killed for memory: {err[-300:]}"
    assert statuses and set(statuses) == {204}, collections.Counter(statuses)
    client.request("DELETE", f"/v2/kernel/{kid}")
    still_answers(client, bystander)
