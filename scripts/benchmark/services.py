"""The processes the benchmark starts and stops: the server (with its own data
directory, keypair and config) and, with --peers, the kernel gateway."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import psutil

from .checks import expect
from .figures import MiB

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
UNLIMITED = 1_000_000_000  # concurrency and rate limit of the benchmark's keypair


@dataclass(frozen=True)
class Server:
    proc: subprocess.Popen
    endpoint: str
    access_key: str
    secret_key: str

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of `endpoint`, for the bench's own client (connection.py)."""
        host, port = self.endpoint.split("://", 1)[1].rsplit(":", 1)
        return host, int(port)


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
    # SIGINT: a full stop. Our server keeps its kernels for the next one on SIGTERM.
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def service(
    argv: list[str],
    health_url: str,
    log_path: str,
    env: dict[str, str] | None = None,
    start_timeout: float = 60,
) -> Iterator[subprocess.Popen]:
    """A process in its own session (Ctrl-C reaches only us), stopped with SIGINT;
    `env`, if given, its whole environment."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            start_new_session=True, env=env,
        )  # fmt: skip
    try:
        wait_until_up(proc, health_url, start_timeout)
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
