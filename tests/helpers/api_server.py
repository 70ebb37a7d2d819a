"""A real server on a loopback port, and a signing HTTP client for it."""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import httpx
import psutil
from websockets.sync.client import connect as ws_connect

from server.faces.v2 import signing as auth

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class ApiServer:
    endpoint: str
    access_key: str
    secret_key: str
    data_dir: str
    output: list[str]
    pid: int = 0

    def client(self, dialect: str = "sorna", **keys: str) -> SignedClient:
        return SignedClient(
            self.endpoint,
            keys.get("access_key", self.access_key),
            keys.get("secret_key", self.secret_key),
            dialect,
        )

    def new_key(self, concurrency: int = 5, rate_limit: int = 1000) -> dict:
        """A fresh keypair made with sandbox-admin, as client(**keys) takes it."""
        out = subprocess.run(
            [sys.executable, "-m", "server.admin", "--data-dir", self.data_dir, "keys", "create",
             "--concurrency", str(concurrency), "--rate-limit", str(rate_limit), "--json"],
            capture_output=True, text=True, check=True, cwd=ROOT,
        ).stdout  # fmt: skip
        keys = json.loads(out)
        return {"access_key": keys["accessKey"], "secret_key": keys["secretKey"]}


class SignedClient:
    """Signs like the public clients do (spec §10.1), in either header dialect."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, dialect: str) -> None:
        self.http = httpx.Client(base_url=endpoint, timeout=30)
        self.host = endpoint.split("://", 1)[1]
        self.access_key, self.secret_key, self.dialect = access_key, secret_key, dialect

    def headers(self, method: str, path: str, body: bytes, content_type: str | None) -> dict:
        date = datetime.datetime.now(datetime.UTC).isoformat()
        headers = {"Date": date, "Host": self.host}
        if self.dialect == "sorna":
            headers["X-Sorna-Version"] = "v2.20170315"
        else:
            headers["X-BackendAI-Version"] = "v2.20170315"
        if content_type:
            headers["Content-Type"] = content_type
        auth_type = "Sorna" if self.dialect == "sorna" else "BackendAI"
        headers["Authorization"] = auth.sign(
            method, path, headers, body, self.access_key, self.secret_key, auth_type=auth_type
        )
        return headers

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        raw: bytes | None = None,
        content_type: str | None = None,
        headers: dict | None = None,
    ) -> httpx.Response:
        if raw is None:
            raw = b"" if body is None else json.dumps(body).encode()
            content_type = content_type or ("application/json" if body is not None else None)
        signed = self.headers(method, path, raw, content_type)
        signed.update(headers or {})
        return self.http.request(method, path, content=raw, headers=signed)

    def stream(self, path: str, signed: bool = True, **options):
        """A WebSocket to `path` (websockets' sync client), its handshake signed as a
        GET with no body unless `signed` is False (then only Date and the version)."""
        headers = self.headers("GET", path, b"", None)
        if not signed:
            del headers["Authorization"]
        url = "ws://" + self.host + path
        options.setdefault("open_timeout", 10)
        return ws_connect(url, additional_headers=headers, **options)

    def create(self, lang: str = "python3", token: str | None = None, **extra) -> httpx.Response:
        token = token or f"tok-{time.monotonic_ns()}"
        return self.request(
            "POST", "/v2/kernel/create", {"lang": lang, "clientSessionToken": token, **extra}
        )

    def execute(self, kernel_id: str, **body) -> httpx.Response:
        return self.request("POST", f"/v2/kernel/{kernel_id}", body)

    def run(self, kernel_id: str, code: str) -> list[dict]:
        """Run a query to the end; return every result."""
        results = [self.execute(kernel_id, mode="query", code=code).json()["result"]]
        while results[-1]["status"] == "continued":
            results.append(self.execute(kernel_id, mode="query", code="").json()["result"])
        return results


def spawner_pid(server_pid: int) -> int:
    """The server's spawner: the child that runs sandbox.spawner."""
    for child in psutil.Process(server_pid).children():
        if any("spawner" in part for part in child.cmdline()):
            return child.pid
    raise AssertionError("the server has no spawner process")


def non_loopback_address() -> str | None:
    """An IPv4 address of this host other than loopback, or None if it has none."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    data_dir: str,
    command: tuple[str, ...] = (sys.executable, "-m", "server"),
    config: str | None = None,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen, ApiServer]:
    """A server on a free loopback port, once it serves. `config` is the text of a
    --config file (written beside the data dir); `env` is added to the server's
    environment. Its output keeps being collected in ApiServer.output, so that the
    pipe never fills."""
    port = _free_port()
    argv = [*command, "--port", str(port), "--data-dir", data_dir]
    if config is not None:
        path = data_dir.rstrip("/") + ".toml"
        with open(path, "w") as f:
            f.write(config)
        argv += ["--config", path]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    output: list[str] = []
    settings: dict[str, str] = {}
    # A first start may build matplotlib's font cache for the pre-import (tens of
    # seconds in a slow guest): a slow start is not what these tests look at.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("server exited:\n" + "".join(output))
        output.append(line)
        if m := re.match(r"^(SORNA_\w+)=(.*)$", line.strip()):
            settings[m.group(1)] = m.group(2)
        if "Uvicorn running" in line:  # listening ("startup complete" comes before the bind)
            break
    else:
        proc.kill()
        raise RuntimeError("server did not start:\n" + "".join(output))
    server = ApiServer(
        settings.get("SORNA_ENDPOINT", f"http://127.0.0.1:{port}"),
        settings.get("SORNA_ACCESS_KEY", ""),
        settings.get("SORNA_SECRET_KEY", ""),
        data_dir,
        output,
        proc.pid,
    )
    threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True).start()
    return proc, server


def stop_server(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Ctrl-C, as an operator stops it; killed past `timeout` seconds (its spawner
    then keeps its kernels for a restart, as after a crash)."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
