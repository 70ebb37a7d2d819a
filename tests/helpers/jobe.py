"""A Jobe client as CodeRunner and Jobe's testsubmit.py call the API, and a way to
see that a server's job kernels are all gone."""

from __future__ import annotations

import base64
import json
import time

import httpx

from helpers.api_server import ApiServer, spawner_pid

PREFIX = "/jobe/index.php/restapi"
CODERUNNER_HEADERS = {
    "User-Agent": "CodeRunner",
    "Content-Type": "application/json; charset=utf-8",
    "Accept-Charset": "utf-8",
    "Accept": "application/json",
}


class Jobe:
    def __init__(self, endpoint: str, key: str | None = None) -> None:
        headers = dict(CODERUNNER_HEADERS)
        if key:
            headers["X-API-KEY"] = key
        self.http = httpx.Client(base_url=endpoint, headers=headers, timeout=120)

    def post_run(self, **run_spec: object) -> httpx.Response:
        return self.http.post(f"{PREFIX}/runs", content=json.dumps({"run_spec": run_spec}))

    def run(self, **run_spec: object) -> dict:
        """A run that must be answered with 200 and a result object."""
        r = self.post_run(**run_spec)
        assert r.status_code == 200, (r.status_code, r.text)
        result = r.json()
        assert list(result) == ["run_id", "outcome", "cmpinfo", "stdout", "stderr"], result
        return result

    def put_file(self, file_id: str, contents: bytes) -> httpx.Response:
        body = {"file_contents": base64.b64encode(contents).decode()}
        return self.http.put(f"{PREFIX}/files/{file_id}", content=json.dumps(body))

    def head_file(self, file_id: str) -> int:
        return self.http.head(f"{PREFIX}/files/{file_id}").status_code


def live_kernels(server: ApiServer) -> int:
    """The server's kernels (pooled ones too): its spawner's children with a work
    directory mounted."""
    with open(f"/proc/{spawner_pid(server.pid)}/mounts") as f:
        return sum(1 for line in f if "/work/" in line.split()[1])


def steady(server: ApiServer, quiet: float = 1.0, seconds: float = 30) -> int:
    """The server's kernel count once it has not changed for `quiet` seconds (the
    warm pool full)."""
    deadline = time.monotonic() + seconds
    count, since = live_kernels(server), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.1)
        now = live_kernels(server)
        if now != count:
            count, since = now, time.monotonic()
    return count


def settle(server: ApiServer, expected: int, seconds: float = 30) -> int:
    """Wait until the server holds `expected` kernels again (the pool refills after
    a run takes a warm one); the count at the end."""
    deadline = time.monotonic() + seconds
    while (count := live_kernels(server)) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return count
