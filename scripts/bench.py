"""The project's published benchmark: the HTTP API against a real server, beside baselines.

Method. The script makes a temporary data directory, creates an API keypair in
it with `sandbox-admin` (concurrency and rate limit high enough never to
refuse), writes a config raising `max_kernels` (to 2000, or above --density), and starts the server
as users do, `python -m server`, on a free loopback port. Every server figure is
measured from the client's side over HTTP: requests signed as server.auth
verifies them (Sorna v2 headers) on keep-alive connections, timed with
perf_counter from before the request to the end of the response, and their output
checked. The client shares the machine's cores with the server, as the baselines
do, so it is kept lean to weigh on the figures as little as it can: a minimal
HTTP/1.1 client on asyncio streams (the whole request in one write; only the status
code and the Content-Length body read back), and a Date of whole seconds, so a
request repeated within a second reuses its signed headers instead of signing
anew. At the end the server gets SIGTERM (it destroys what is left) and the
directory is removed, also after an error, Ctrl-C or SIGTERM.

Every figure names a baseline measured in the same run and is printed as a
multiple of it (of its median), because absolute numbers from a noisy 2-core
box mean little on their own. Times are wall-clock milliseconds; memory is MiB.
A last note says how busy the rest of the host kept the CPUs during the run.

  baselines
    python3 -c pass               bare interpreter start: what any fork+exec sandbox pays
    bwrap python3 -c pass         the same in bubblewrap with comparable isolation
    gcc hello.c && ./main         the batch figure's build and run, bare on the host
    kernelgateway start+print(1)  Jupyter Kernel Gateway: POST /api/kernels, then
                                  print(1) over its websocket until execute_reply
                                  (only when jupyter-kernelgateway is installed)
    signed no-op                  POST /v2/authorize: HTTP, signing and the server's
                                  request wrapper, no kernel
    idle python3 USS, PSS         bare interpreters idling at once
    server, spawner RSS at start  before the first kernel
  server figures
    create (warm pool)            POST /v2/kernel/create (python3), until its 201, each
                                  once the warm pool is full again (untimed wait)
    create until print(1)         the same, then the first query until "finished"
    create (no pool)              the same two on a second server with pool_size = 0:
                                  every create starts a kernel, from one of the
                                  spawner's spare processes (already in a cgroup);
                                  each after an untimed 50 ms pause (a create on a
                                  server not busy creating), and then back to back
    create (no pool, no spares)   spaced so on a third with spare_processes = 0 as
                                  well: every create forks and moves a process
    query print(1)                one query round trip in a ready kernel
    no-op | query, C concurrent   C clients (own connection, own kernel) back to back
                                  for a fixed time: latency, requests/s, and the CPU
                                  time per request of the server, the spawner with
                                  its kernels, and this client
    batch C                       create a c kernel, upload main.c, batch build "*" and
                                  exec "*" (until "finished"), destroy; and the
                                  build+exec call alone
    density N                     N idle python3 kernels alive: USS and PSS of each
                                  kernel (summed over its processes, the spawner's
                                  descendants), server and spawner RSS, and create
                                  and query latency at that density

Run: ./scripts/bench [--quick] [--json] [--runs N] [--density N]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import datetime
import email.utils
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field

import httpx
import psutil

from sandbox.cgroups.probe import probe
from server import auth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
API_VERSION = "v2.20170315"
MiB = 1024 * 1024
UNLIMITED = 1_000_000_000  # concurrency and rate limit of the benchmark's keypair
POOL_SIZE = 4  # the server's default pool_size, written out so the figures can name it
COLD_CONFIG = "max_kernels = 2000\npool_size = 0\n"
BARE_CONFIG = COLD_CONFIG + "spare_processes = 0\n"
CLIENTS = (1, 8, 32)
COLD_PAUSE = 0.05  # s, untimed, before each spaced cold create

PYTHON_PASS = ["/usr/bin/python3", "-c", "pass"]
IDLE_PYTHON = ["/usr/bin/python3", "-c", "import sys; print(flush=True); sys.stdin.read()"]
BWRAP_ARGS = [
    "bwrap", "--unshare-all", "--new-session", "--die-with-parent", "--cap-drop", "ALL",
    "--uid", "1000", "--gid", "1000",
    "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
    "--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
    "--tmpfs", "/home/work", "--chdir", "/home/work",
]  # fmt: skip
HELLO_C = b'#include <stdio.h>\nint main(void) { puts("hello world"); return 0; }\n'
GCC = ["gcc", "-Wall", "-o", "main", "main.c", "-lm", "-lrt", "-pthread", "-ldl"]  # as build "*"
BATCH = {"mode": "batch", "code": "", "options": {"build": "*", "exec": "*"}}
QUERY = {"mode": "query", "code": "print(1)"}
GATEWAY = "jupyter-kernelgateway"

# figure names that others name as their baseline
BARE_PYTHON = "python3 -c pass"
BWRAP = "bwrap python3 -c pass"
BARE_GCC = "gcc hello.c && ./main"
KERNEL_GATEWAY = "kernelgateway start+print(1)"
NOOP = "signed no-op (POST /v2/authorize)"
IDLE_USS, IDLE_PSS = "idle python3 USS", "idle python3 PSS"
SERVER_RSS, SPAWNER_RSS = "server RSS at start", "spawner RSS at start"
CREATE = "create (warm pool)"
COLD_CREATE = "create (no pool)"
BARE_CREATE = "create (no pool, no spares)"
QUERY_RT = "query print(1) round trip"


@dataclass(frozen=True)
class Plan:
    runs: int  # kernel creates, batch cycles and command runs per figure
    queries: int  # query and no-op round trips
    seconds: float  # per throughput figure
    density: int  # idle kernels alive at once
    probes: int  # creates and queries at that density; idle interpreters measured


@dataclass
class Figure:
    name: str
    samples: list[float]
    unit: str = "ms"
    baseline: str | None = None  # the name of the figure it is compared to
    rate: float | None = None  # requests per second, for throughput figures
    cpu: dict[str, float] | None = None  # CPU ms per request by party, for throughput figures
    stats: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        ordered = sorted(self.samples)

        def pct(p: float) -> float:  # nearest rank
            return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

        median = statistics.median(ordered)
        self.stats = {"n": len(ordered), "p50": median, "p90": pct(90), "p99": pct(99)}


@dataclass(frozen=True)
class Server:
    proc: subprocess.Popen
    endpoint: str
    access_key: str
    secret_key: str


def step(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def expect(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(what)


# -- baselines outside the server -----------------------------------------------------


def time_commands(commands: list[list[str]], runs: int, cwd: str | None = None) -> list[float]:
    """Milliseconds to run `commands` one after the other, `runs` times."""
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        for argv in commands:
            subprocess.run(
                argv, check=True, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
            )
        samples.append(ms_since(t))
    return samples


def command_baselines(runs: int, tmp: str) -> list[Figure]:
    """Bare python3, the same in bwrap, and the C build of the batch figure on the host."""
    time_commands([PYTHON_PASS], 2)  # warm the page cache
    with open(os.path.join(tmp, "main.c"), "wb") as f:
        f.write(HELLO_C)
    return [
        Figure(BARE_PYTHON, time_commands([PYTHON_PASS], runs)),
        Figure(BWRAP, time_commands([BWRAP_ARGS + PYTHON_PASS], runs), baseline=BARE_PYTHON),
        Figure(BARE_GCC, time_commands([GCC, ["./main"]], runs, cwd=tmp)),
    ]


def idle_python_memory(count: int) -> list[Figure]:
    """USS and PSS (MiB) of `count` bare python3 interpreters idling at once."""
    procs = [
        subprocess.Popen(IDLE_PYTHON, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for _ in range(count)
    ]
    try:
        for proc in procs:
            proc.stdout.readline()  # started
        infos = [psutil.Process(proc.pid).memory_full_info() for proc in procs]
    finally:
        for proc in procs:
            proc.communicate()
    return [
        Figure(IDLE_USS, [i.uss / MiB for i in infos], unit="MiB"),
        Figure(IDLE_PSS, [i.pss / MiB for i in infos], unit="MiB"),
    ]


# -- services: the server, the kernel gateway ------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: str, lines: int = 30) -> str:
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def wait_until_up(proc: subprocess.Popen, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        expect(proc.poll() is None, f"{proc.args[0]} exited with status {proc.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=5).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{proc.args[0]} did not answer {url} in {timeout:g} s")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def service(argv: list[str], health_url: str, log_path: str) -> Iterator[subprocess.Popen]:
    """A process in its own session (Ctrl-C reaches only us), stopped with SIGTERM."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_until_up(proc, health_url)
        yield proc
    except Exception:
        print(f"--- end of {log_path}:\n{log_tail(log_path)}", file=sys.stderr)
        raise
    finally:
        stop(proc)


@contextlib.contextmanager
def sandbox_server(tmp: str, name: str = "server", settings: str = "") -> Iterator[Server]:
    data_dir, config = os.path.join(tmp, f"{name}-data"), os.path.join(tmp, f"{name}.toml")
    with open(config, "w") as f:
        f.write(settings)
    keys = json.loads(
        subprocess.run(
            [os.path.join(VENV_BIN, "sandbox-admin"), "--data-dir", data_dir, "keys", "create",
             "--concurrency", str(UNLIMITED), "--rate-limit", str(UNLIMITED), "--json"],
            check=True, capture_output=True, text=True,
        ).stdout
    )  # fmt: skip
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    argv = [os.path.join(VENV_BIN, "python"), "-m", "server", "--port", str(port),
            "--data-dir", data_dir, "--config", config]  # fmt: skip
    with service(argv, f"{endpoint}/v2", os.path.join(tmp, f"{name}.log")) as proc:
        yield Server(proc, endpoint, keys["accessKey"], keys["secretKey"])


def spawner_of(server: Server) -> psutil.Process:
    for child in psutil.Process(server.proc.pid).children():
        if any("spawner" in part for part in child.cmdline()):
            return child
    raise RuntimeError("the server has no spawner process")


def rss_mib(proc: psutil.Process) -> float:
    return proc.memory_info().rss / MiB


# -- the kernel gateway baseline: its REST API and a minimal websocket client ------------


def ws_frame(payload: bytes) -> bytes:
    """One masked text frame (RFC 6455 §5.2), as a client must send it."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        size = bytes([0x80 | n])
    elif n < 1 << 16:
        size = bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        size = bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return bytes([0x81]) + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def ws_message(reader: asyncio.StreamReader) -> bytes:
    """The next data message from a server (unmasked frames); control frames skipped."""
    message = b""
    while True:
        head = await reader.readexactly(2)
        n = head[1] & 0x7F
        if n >= 126:
            n = int.from_bytes(await reader.readexactly(2 if n == 126 else 8), "big")
        payload = await reader.readexactly(n)
        opcode = head[0] & 0x0F
        if opcode == 0x8:
            raise ConnectionError("the kernel gateway closed the websocket")
        if opcode in (0x0, 0x1, 0x2):
            message += payload
            if head[0] & 0x80:
                return message


def execute_request(msg_id: str, code: str) -> dict:
    """A Jupyter messaging protocol (5.3) execute_request for the shell channel."""
    return {
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "bench",
                   "session": msg_id, "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }  # fmt: skip


async def jupyter_execute(port: int, kernel_id: str, code: str) -> None:
    """Run `code` over the kernel's channels websocket until its execute_reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /api/kernels/{kernel_id}/channels HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        status = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n", 1)[0]
        expect(status.split()[1:2] == [b"101"], f"websocket refused: {status!r}")
        msg_id = uuid.uuid4().hex
        writer.write(ws_frame(json.dumps(execute_request(msg_id, code)).encode()))
        while True:
            msg = json.loads(await ws_message(reader))
            ours = msg["parent_header"].get("msg_id") == msg_id
            if ours and msg["header"]["msg_type"] == "execute_reply":
                expect(msg["content"]["status"] == "ok", f"execute_reply: {msg['content']}")
                return
    finally:
        writer.close()


async def gateway_start_execute(port: int, runs: int) -> list[float]:
    samples = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
        for _ in range(runs):
            t = time.perf_counter()
            kernel_id = (await http.post("/api/kernels", json={})).raise_for_status().json()["id"]
            await jupyter_execute(port, kernel_id, "print(1)")
            samples.append(ms_since(t))
            (await http.delete(f"/api/kernels/{kernel_id}")).raise_for_status()
    return samples


def gateway_baseline(runs: int, tmp: str) -> Figure | None:
    """Kernel start + print(1) through Jupyter Kernel Gateway; None if it is not installed."""
    gateway = shutil.which(GATEWAY)
    if gateway is None:
        return None
    port = free_port()
    argv = [gateway, "--KernelGatewayApp.ip=127.0.0.1", f"--KernelGatewayApp.port={port}"]
    with service(argv, f"http://127.0.0.1:{port}/api", os.path.join(tmp, "gateway.log")):
        samples = asyncio.run(gateway_start_execute(port, runs))
    return Figure(KERNEL_GATEWAY, samples, baseline=BWRAP)


# -- the server over HTTP -------------------------------------------------------------


class Connection:
    """A minimal HTTP/1.1 client on one keep-alive loopback connection.

    A request is written whole, in one write; of the answer only the status code and
    the body are read (the server always sends Content-Length). After a `Connection:
    close` answer, or once the server has closed the idle connection (its keep-alive
    timeout), the next request opens a new one; a request that met such a close before
    any answer is sent once more on a new connection: the server never read it."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """(status code, body) of the answer to one complete request."""
        while True:
            reused = self.reader is not None and not self.reader.at_eof()
            if not reused:
                await self.close()
                self.reader, self.writer = await asyncio.open_connection(*self.address)
            reader, writer = self.reader, self.writer
            assert reader is not None and writer is not None
            writer.write(request)
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError) as e:
                await self.close()
                if reused and not getattr(e, "partial", b""):
                    continue  # closed while idle, before our request
                raise
            return await self._rest(reader, head)

    async def _rest(self, reader: asyncio.StreamReader, head: bytes) -> tuple[int, bytes]:
        lines = head.split(b"\r\n")
        status, length, close = int(lines[0].split(b" ", 2)[1]), -1, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value.strip().lower() == b"close"
        if length < 0:
            await self.close()
            raise RuntimeError(f"an answer without Content-Length: {lines[0]!r}")
        body = await reader.readexactly(length)
        if close:
            await self.close()
        return status, body


class Signer:
    """Request heads (request line and headers) signed as server.auth verifies them.

    The Date has whole seconds, so a head is kept per (method, path, content type,
    body) and reused while the second lasts: the same request repeated is signed
    once a second, not once a request (the server allows 15 minutes of skew)."""

    def __init__(self, server: Server) -> None:
        self.keys = (server.access_key, server.secret_key)
        self.host = server.endpoint.split("://", 1)[1]
        self.second, self.date = -1, ""
        self.heads: dict[tuple[str, str, str, bytes], bytes] = {}

    def head(self, method: str, path: str, mime: str, body: bytes) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second, self.heads = now, {}
            self.date = email.utils.formatdate(now, usegmt=True)  # RFC 1123
        key = (method, path, mime, body)
        head = self.heads.get(key)
        if head is None:
            headers = {"Host": self.host, "Date": self.date, "X-Sorna-Version": API_VERSION}
            if mime:
                headers["Content-Type"] = mime
            headers["Authorization"] = auth.sign(method, path, headers, body, *self.keys)
            headers["Content-Length"] = str(len(body))
            lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
            head = self.heads[key] = ("\r\n".join(lines) + "\r\n\r\n").encode()
        return head


def encoded(body: dict) -> bytes:
    return json.dumps(body).encode()


NOOP_BODY = encoded({"echo": "bench"})
QUERY_BODY = encoded(QUERY)
CONTINUE_BODY = encoded({"mode": "continue", "code": ""})
BATCH_BODY = encoded(BATCH)
JSON = "application/json"


class Api:
    """The server's API on keep-alive Connections, signed by a Signer (shared by the
    clients of a throughput figure). Requests one after the other use one connection;
    concurrent ones (destroying many kernels at once) open more, kept for reuse."""

    def __init__(self, server: Server, signer: Signer | None = None) -> None:
        self.signer = signer or Signer(server)
        host, port = server.endpoint.split("://", 1)[1].rsplit(":", 1)
        self.address = (host, int(port))
        self.idle: list[Connection] = []

    async def close(self) -> None:
        idle, self.idle = self.idle, []
        await asyncio.gather(*(connection.close() for connection in idle))

    async def request(self, method: str, path: str, body: bytes = b"", mime: str = "") -> bytes:
        """The answer's body; an error status raises."""
        request = self.signer.head(method, path, mime, body) + body
        connection = self.idle.pop() if self.idle else Connection(*self.address)
        try:
            async with asyncio.timeout(120):
                status, answer = await connection.exchange(request)
        except BaseException:
            await connection.close()
            raise
        self.idle.append(connection)
        expect(status < 400, f"{method} {path}: {status} {answer[:1000]!r}")
        return answer

    async def warm(self, lang: str = "python3") -> int:
        """How many `lang` kernels wait in the server's pool (a public endpoint)."""
        rows = json.loads(await self.request("GET", "/v2/kernel/languages"))["languages"]
        return next(row["warm"] for row in rows if row["lang"] == lang)

    async def noop(self) -> None:
        await self.request("POST", "/v2/authorize", NOOP_BODY, JSON)

    async def create(self, lang: str = "python3") -> str:
        body = encoded({"lang": lang, "clientSessionToken": f"bench-{uuid.uuid4().hex}"})
        return json.loads(await self.request("POST", "/v2/kernel/create", body, JSON))["kernelId"]

    async def destroy(self, kernel_id: str) -> None:
        await self.request("DELETE", f"/v2/kernel/{kernel_id}")

    async def upload(self, kernel_id: str, name: str, data: bytes) -> None:
        """multipart/form-data built here; server.auth signs its body as empty."""
        boundary = uuid.uuid4().hex
        part = f'Content-Disposition: form-data; name="src"; filename="{name}"\r\n'
        body = f"--{boundary}\r\n{part}\r\n".encode() + data + f"\r\n--{boundary}--\r\n".encode()
        mime = f"multipart/form-data; boundary={boundary}"
        await self.request("POST", f"/v2/kernel/{kernel_id}/upload", body, mime)

    async def execute(self, kernel_id: str, body: bytes) -> str:
        """Run to "finished", continuing while the server holds the run; its stdout."""
        stdout = []
        path = f"/v2/kernel/{kernel_id}"
        while True:
            result = json.loads(await self.request("POST", path, body, JSON))["result"]
            stdout += [text for kind, text in result["console"] if kind == "stdout"]
            if result["status"] == "finished":
                return "".join(stdout)
            expect(result["status"] != "waiting-input", f"unexpected waiting-input: {result}")
            body = CONTINUE_BODY

    async def query(self, kernel_id: str) -> None:
        stdout = await self.execute(kernel_id, QUERY_BODY)
        expect(stdout == "1\n", f"print(1) printed {stdout!r}")


async def repeat(action: Callable[[], Awaitable[object]], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        await action()
        samples.append(ms_since(t))
    return samples


async def measure_queries(api: Api, runs: int) -> list[Figure]:
    await repeat(api.noop, 10)  # warm: the connection, the server's first calls
    noop = await repeat(api.noop, runs)
    kernel_id = await api.create()
    await repeat(lambda: api.query(kernel_id), 10)
    queries = await repeat(lambda: api.query(kernel_id), runs)
    await api.destroy(kernel_id)
    return [Figure(NOOP, noop), Figure(QUERY_RT, queries, baseline=NOOP)]


async def time_creates(
    api: Api, runs: int, pool: int, pause: float = 0.0
) -> tuple[list[float], list[float]]:
    """(create, create until print(1) finished) in ms; each kernel destroyed untimed.
    With a pool, each create waits (untimed) until the pool is full again, so that it
    measures taking a warm kernel and no refill competes with it; with a pause, it
    waits that long (untimed) first, as a create on a server that is not busy
    creating sees it."""
    created, executable = [], []
    for _ in range(runs):
        await wait_pool_full(api, pool)
        await asyncio.sleep(pause)
        t = time.perf_counter()
        kernel_id = await api.create()
        created.append(ms_since(t))
        await api.query(kernel_id)
        executable.append(ms_since(t))
        await api.destroy(kernel_id)
    return created, executable


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """CPU time of `procs` and of the children each has reaped; the gone ones count 0."""
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += sum(proc.cpu_times()[:4])  # user, system, children's user and system
    return total


class CpuMeter:
    """CPU seconds used so far by the server, by its spawner and kernels, and by us.

    A process's time moves into its parent's children times when it is reaped, so
    a sum over the live tree (read anew each time) stays right as processes come
    and go below the spawner (its kernels' pid 1s included: it is their reaper)."""

    def __init__(self, server: Server) -> None:
        self.server = psutil.Process(server.proc.pid)
        self.spawner = spawner_of(server)

    def read(self) -> dict[str, float]:
        return {
            "server": cpu_seconds([self.server]),
            "spawner+kernels": cpu_seconds([self.spawner, *self.spawner.children(recursive=True)]),
            "client": cpu_seconds([psutil.Process()]),
        }


async def load(
    meter: CpuMeter,
    name: str,
    call: Callable[[Api, int], Awaitable[object]],
    clients: list[Api],
    seconds: float,
    baseline: str | None = None,
) -> Figure:
    """Each client calls call(client, its index) back to back until `seconds` are up."""
    samples: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client(api: Api, i: int) -> None:
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            await call(api, i)
            samples.append(ms_since(t))

    before, start = meter.read(), time.perf_counter()
    await asyncio.gather(*(client(api, i) for i, api in enumerate(clients)))
    rate = len(samples) / (time.perf_counter() - start)
    cpu = {
        party: (used - before[party]) * 1000 / len(samples) for party, used in meter.read().items()
    }
    return Figure(name, samples, baseline=baseline, rate=rate, cpu=cpu)


async def measure_throughput(api: Api, server: Server, seconds: float) -> list[Figure]:
    """No-op and query load from 1, 8 and 32 clients, each with its own connection and
    (for queries) its own kernel."""
    kernels = [await api.create() for _ in range(max(CLIENTS))]
    clients = [Api(server, api.signer) for _ in kernels]
    meter = CpuMeter(server)
    figures = []
    for n in CLIENTS:
        noop = f"no-op, {n} concurrent"
        figures += [
            await load(meter, noop, lambda c, _: c.noop(), clients[:n], seconds),
            await load(
                meter, f"query, {n} concurrent", lambda c, i: c.query(kernels[i]), clients[:n],
                seconds, baseline=noop,
            ),
        ]  # fmt: skip
    await asyncio.gather(*(c.close() for c in clients), *(api.destroy(k) for k in kernels))
    return figures


async def measure_batch_c(api: Api, runs: int) -> list[Figure]:
    cycles, calls = [], []
    for _ in range(runs):
        t = time.perf_counter()
        kernel_id = await api.create("c")
        await api.upload(kernel_id, "main.c", HELLO_C)
        t_call = time.perf_counter()
        stdout = await api.execute(kernel_id, BATCH_BODY)
        calls.append(ms_since(t_call))
        expect(stdout == "hello world\n", f"the C program printed {stdout!r}")
        await api.destroy(kernel_id)
        cycles.append(ms_since(t))
    return [
        Figure("batch C cycle", cycles, baseline=BARE_GCC),
        Figure("batch C: the build+exec call", calls, baseline=BARE_GCC),
    ]


PAGE = os.sysconf("SC_PAGE_SIZE")
PFN_MASK = (1 << 55) - 1  # /proc/<pid>/pagemap: bits 0-54 the frame, bit 63 "present"


def mapped_frames(pid: int) -> list[int]:
    """The physical frames of every page `pid` has in memory (root only: a reader
    without CAP_SYS_ADMIN gets zeros)."""
    frames: list[int] = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb", 0) as pagemap:
        for line in maps:
            start, end = (int(x, 16) for x in line.split(None, 1)[0].split("-"))
            if start >= 1 << 47:  # [vsyscall]: not in the page tables
                continue
            pagemap.seek(start // PAGE * 8)
            entries = memoryview(pagemap.read((end - start) // PAGE * 8)).cast("Q")
            frames.extend(e & PFN_MASK for e in entries if e >> 63)
    return frames


def frame_map_counts() -> memoryview:
    """How many page-table entries map each physical frame (/proc/kpagecount)."""
    chunks = []
    with open("/proc/kpagecount", "rb", 0) as f:
        while chunk := f.read(1 << 24):
            chunks.append(chunk)
    return memoryview(b"".join(chunks)).cast("Q")


def kernel_memory(spawner: psutil.Process) -> tuple[list[float], list[float]]:
    """Unique memory and PSS (MiB) of each kernel: its pid 1 (the spawner's child)
    and that one's descendants.

    Unique memory is the pages that only this kernel's processes map, each
    counted once: what destroying the kernel frees. A sum of the processes' USS
    would miss the pages that pid 1 and the runner share with each other (those
    pid 1 wrote before it forked the runner) and no one else.
    """
    kernels = []
    for init in spawner.children():
        with contextlib.suppress(psutil.NoSuchProcess, OSError):  # one ending as we look
            if init.name() != "kernel-init":  # a spare process, not (yet) a kernel
                continue
            procs = [init, *init.children(recursive=True)]
            pss = sum(p.memory_full_info().pss for p in procs)
            kernels.append(([mapped_frames(p.pid) for p in procs], pss))
    counts = frame_map_counts()
    unique, pss = [], []
    for frames, kernel_pss in kernels:
        mine = collections.Counter(itertools.chain.from_iterable(frames))
        unique.append(sum(1 for f, n in mine.items() if counts[f] == n) * PAGE / MiB)
        pss.append(kernel_pss / MiB)
    return unique, pss


def mem_available() -> int:
    """The host's MemAvailable, bytes: what kernels can still take before the OOM killer."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


async def settled_mem_available(timeout: float = 10.0) -> int:
    """MemAvailable once it stops moving: kernels destroyed just before give their
    memory back over the next moments (cgroups and namespaces are freed after an
    RCU grace period), which would make the next difference meaningless."""
    deadline = time.monotonic() + timeout
    last = mem_available()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = mem_available()
        if abs(now - last) < MiB:
            return now
        last = now
    return last


async def wait_pool_full(api: Api, pool: int = POOL_SIZE) -> None:
    """Until `pool` kernels wait in the warm pool (at once when pool is 0)."""
    while pool and await api.warm() < pool:
        await asyncio.sleep(0.005)


def host_tasks() -> int:
    """Tasks (threads) on the host: what kernel.pid_max bounds."""
    with open("/proc/loadavg") as f:
        return int(f.read().split()[3].split("/")[1])


def read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read())


def memory_cgroup_room(pid: int) -> float:
    """What the memory cgroup `pid` is in may still take (inf without a limit): kernels
    are created below it, so its limit bounds them too. Ancestors' limits are not
    looked at."""
    with open(f"/proc/{pid}/cgroup") as f:
        host = probe(proc_cgroup=f.read())
    if "memory" in host.v1:
        hierarchy, limit, usage = (
            host.v1["memory"],
            "memory.limit_in_bytes",
            "memory.usage_in_bytes",
        )
    else:
        hierarchy, limit, usage = host.v2, "memory.max", "memory.current"
    if hierarchy is None or hierarchy.own_dir is None:
        return float("inf")
    try:
        with open(os.path.join(hierarchy.own_dir, limit)) as f:
            text = f.read().strip()
        with open(os.path.join(hierarchy.own_dir, usage)) as f:
            used = int(f.read())
    except (OSError, ValueError):
        return float("inf")
    if text == "max" or int(text) >= 1 << 62:
        return float("inf")
    return max(int(text) - used, 0)


@dataclass
class Footprint:
    """What one more idle kernel takes from each host resource that could run out."""

    memory: float  # bytes of MemAvailable
    tasks: float
    server_fds: float


def ceiling_note(n: int, per_kernel: Footprint, server: psutil.Process) -> str:
    """How many idle python3 kernels this host could hold, and what runs out first,
    projected from the footprint of the N alive now (README: the ceiling)."""
    nofile = server.rlimit(psutil.RLIMIT_NOFILE)[0]
    limits = {
        "memory (MemAvailable)": mem_available() / per_kernel.memory,
        "the server's memory cgroup": memory_cgroup_room(server.pid) / per_kernel.memory,
        "tasks (kernel.pid_max)": (read_int("/proc/sys/kernel/pid_max") - host_tasks())
        / per_kernel.tasks,
        "the server's open files": (nofile - server.num_fds()) / max(per_kernel.server_fds, 1e-9),
    }
    ranked = sorted((i for i in limits.items() if i[1] != float("inf")), key=lambda i: i[1])
    (first, room), *others = ranked
    rest = ", ".join(f"{name} at {n + r:,.0f}" for name, r in others)
    return (
        f"ceiling: about {n + room:,.0f} idle python3 kernels, set by {first}: each takes "
        f"{per_kernel.memory / MiB:.2f} MiB, {per_kernel.tasks:.1f} tasks and "
        f"{per_kernel.server_fds:.1f} server fds; then {rest} (max_kernels aside)"
    )


async def measure_density(api: Api, server: Server, plan: Plan, notes: list[str]) -> list[Figure]:
    n = plan.density
    server_proc = psutil.Process(server.proc.pid)
    await wait_pool_full(api)
    before = Footprint(await settled_mem_available(), host_tasks(), server_proc.num_fds())
    kernels = [await api.create() for _ in range(n)]
    await wait_pool_full(api)
    after = Footprint(await settled_mem_available(), host_tasks(), server_proc.num_fds())
    per_kernel = Footprint(
        (before.memory - after.memory) / n,
        (after.tasks - before.tasks) / n,
        (after.server_fds - before.server_fds) / n,
    )
    notes.append(ceiling_note(n, per_kernel, server_proc))
    spawner = spawner_of(server)
    uss, pss = kernel_memory(spawner)  # a warm pool's kernels, if any, included
    expect(len(uss) >= n, f"{n} kernels alive, but {len(uss)} under the spawner")
    server_rss = rss_mib(server_proc)
    creates, _ = await time_creates(api, plan.probes, POOL_SIZE)
    queries = []
    for kernel_id in kernels[:: max(1, n // plan.probes)][: plan.probes]:
        await api.query(kernel_id)  # untimed: a kernel's first query, like the warm-up
        t = time.perf_counter()  # of the low-density figure, costs more than the rest
        await api.query(kernel_id)
        queries.append(ms_since(t))
    await asyncio.gather(*(api.destroy(k) for k in kernels))
    return [
        Figure(f"kernel unique memory, {n} alive", uss, unit="MiB", baseline=IDLE_USS),
        Figure(f"kernel PSS, {n} alive", pss, unit="MiB", baseline=IDLE_PSS),
        Figure(f"host memory per kernel, {n} alive", [per_kernel.memory / MiB], unit="MiB"),
        Figure(f"server RSS, {n} alive", [server_rss], unit="MiB", baseline=SERVER_RSS),
        Figure(f"spawner RSS, {n} alive", [rss_mib(spawner)], unit="MiB", baseline=SPAWNER_RSS),
        Figure(f"create, {n} alive", creates, baseline=CREATE),
        Figure(f"query print(1), {n} alive", queries, baseline=QUERY_RT),
    ]


async def measure_server(
    server: Server, plan: Plan, executable_baseline: str, notes: list[str]
) -> list[Figure]:
    api = Api(server)
    try:
        step(f"no-op and query round trips ({plan.queries} each)")
        figures = await measure_queries(api, plan.queries)
        step(f"creates ({plan.runs})")
        created, executable = await time_creates(api, plan.runs, POOL_SIZE)
        figures += [
            Figure(CREATE, created, baseline=BWRAP),
            Figure("create until print(1) finished", executable, baseline=executable_baseline),
        ]
        step(f"throughput ({'/'.join(map(str, CLIENTS))} clients, {plan.seconds:g} s each)")
        figures += await measure_throughput(api, server, plan.seconds)
        step(f"batch C cycles ({plan.runs})")
        figures += await measure_batch_c(api, plan.runs)
        step(f"density ({plan.density} kernels)")
        figures += await measure_density(api, server, plan, notes)
        return figures
    finally:
        await api.close()


# -- the run and its report -----------------------------------------------------------


def plan_for(args: argparse.Namespace) -> Plan:
    runs = args.runs or (5 if args.quick else 100)
    density = args.density or (20 if args.quick else 200)
    return Plan(
        runs=runs,
        queries=runs * 10,
        seconds=1.0 if args.quick else 3.0,
        density=density,
        probes=min(runs, 20, density),
    )


def run(plan: Plan) -> tuple[list[Figure], list[str]]:
    """Every figure, and notes on what could not be measured."""
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as tmp:
        step(f"baselines: commands ({plan.runs} runs each), idle interpreters ({plan.probes})")
        figures = command_baselines(plan.runs, tmp) + idle_python_memory(plan.probes)
        notes = []
        gateway = gateway_baseline(plan.runs, tmp)
        if gateway is None:
            notes.append(f"{GATEWAY} is not installed: no Jupyter Kernel Gateway baseline")
        else:
            figures.append(gateway)
        step("starting the server")
        # room for the density's kernels, the probes' and the warm pool's
        max_kernels = max(2000, plan.density + plan.probes + POOL_SIZE + 10)
        with sandbox_server(tmp, settings=f"max_kernels = {max_kernels}\n") as server:
            server_rss = rss_mib(psutil.Process(server.proc.pid))
            figures.append(Figure(SERVER_RSS, [server_rss], unit="MiB"))
            figures.append(Figure(SPAWNER_RSS, [rss_mib(spawner_of(server))], unit="MiB"))
            executable_baseline = BWRAP if gateway is None else KERNEL_GATEWAY
            figures += asyncio.run(measure_server(server, plan, executable_baseline, notes))
        step(f"cold creates, no warm pool ({plan.runs} spaced, {plan.runs} back to back)")
        with sandbox_server(tmp, "cold", COLD_CONFIG) as server:
            figures += asyncio.run(measure_cold_creates(server, plan.runs, COLD_CREATE))
            figures += asyncio.run(
                measure_cold_creates(server, plan.runs, f"{COLD_CREATE}, back to back", 0.0)
            )
        step(f"cold creates, no warm pool and no spare processes ({plan.runs} spaced)")
        with sandbox_server(tmp, "bare", BARE_CONFIG) as server:
            figures += asyncio.run(measure_cold_creates(server, plan.runs, BARE_CREATE))
    return figures, notes


async def measure_cold_creates(
    server: Server, runs: int, name: str, pause: float = COLD_PAUSE
) -> list[Figure]:
    api = Api(server)
    try:
        created, executable = await time_creates(api, runs, pool=0, pause=pause)
    finally:
        await api.close()
    return [
        Figure(name, created, baseline=BWRAP),
        Figure(f"{name} until print(1) finished", executable, baseline=BWRAP),
    ]


def ratios(figure: Figure, by_name: dict[str, Figure]) -> tuple[float | None, float | None]:
    """The figure's p50 and rate as multiples of its baseline's; None where there is none."""
    base = by_name.get(figure.baseline or "")
    if base is None:
        return None, None
    p50 = figure.stats["p50"] / base.stats["p50"] if base.stats["p50"] else None
    rate = figure.rate / base.rate if figure.rate and base.rate else None
    return p50, rate


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def report_json(figures: list[Figure], notes: list[str], plan: Plan) -> str:
    by_name = {f.name: f for f in figures}
    rows = []
    for f in figures:
        x_p50, x_rate = ratios(f, by_name)
        row = {"name": f.name, "unit": f.unit, **{k: rounded(v) for k, v in f.stats.items()}}
        row |= {"baseline": f.baseline, "x_baseline_p50": rounded(x_p50)}
        if f.cpu is not None:
            row |= {"per_second": rounded(f.rate), "x_baseline_per_second": rounded(x_rate)}
            row["cpu_ms_per_request"] = {party: rounded(ms) for party, ms in f.cpu.items()}
        rows.append(row)
    machine = {"host": os.uname().nodename, "kernel": os.uname().release, "cpus": os.cpu_count()}
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    report = {"date": date, "machine": machine, "plan": asdict(plan), "figures": rows}
    return json.dumps(report | {"notes": notes}, indent=2)


def number(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def table(rows: list[list[str]], specs: list[str]) -> list[str]:
    return [" ".join(map(format, row, specs)).rstrip() for row in rows]


def report_table(figures: list[Figure], notes: list[str]) -> str:
    by_name = {f.name: f for f in figures}
    rows = [["figure", "n", "p50", "p90", "p99", "unit", "per s", "x base", "baseline"]]
    for f in figures:
        x = ratios(f, by_name)[0]
        rows.append(
            [f.name, str(f.stats["n"]), *(number(f.stats[k]) for k in ("p50", "p90", "p99")),
             f.unit, "" if f.rate is None else f"{f.rate:.0f}", "" if x is None else f"{x:.2f}",
             f.baseline or ""]
        )  # fmt: skip
    lines = table(rows, ["<34", ">5", ">8", ">8", ">8", "<4", ">6", ">7", ""])
    loads = [(f.name, f.cpu) for f in figures if f.cpu]
    if loads:
        parties = list(loads[0][1])
        cpu_rows = [["CPU ms per request", *parties]]
        cpu_rows += [[name, *(f"{cpu[p]:.2f}" for p in parties)] for name, cpu in loads]
        lines += ["", *table(cpu_rows, ["<34", *([">16"] * len(parties))])]
    return "\n".join(lines + [f"note: {n}" for n in notes])


def cpu_clock() -> tuple[float, float, float]:
    """(wall seconds, CPU seconds the host has been busy, of them ours: this process
    and, once reaped, everything it started: the server, its spawner and kernels)."""
    host = psutil.cpu_times()
    busy = host.user + host.nice + host.system + host.steal
    return time.monotonic(), busy, cpu_seconds([psutil.Process()])


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(
        description="the HTTP API's latency, throughput and density beside baselines"
    )
    parser.add_argument("--quick", action="store_true", help="a CI-sized smoke run (~10 s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--runs", type=positive,
        help="creates, batch cycles, command runs per figure (default 100, quick 5; queries 10x)",
    )  # fmt: skip
    parser.add_argument(
        "--density", type=positive, help="idle kernels alive at once (default 200, quick 20)"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("must run as root (the server makes namespaces and cgroups)")
    plan = plan_for(args)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up as on Ctrl-C
    before = cpu_clock()
    try:
        figures, notes = run(plan)
    except KeyboardInterrupt:
        step("interrupted")
        return 130
    wall, host, ours = (end - start for start, end in zip(before, cpu_clock(), strict=True))
    step(f"done in {wall:.0f} s")
    notes.append(
        f"the rest of the host (other processes, kernel threads) kept {(host - ours) / wall:.2f}"
        f" of the {os.cpu_count()} CPUs busy on average during the {wall:.0f} s run"
    )
    print(report_json(figures, notes, plan) if args.json else report_table(figures, notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
