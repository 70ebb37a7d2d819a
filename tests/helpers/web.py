"""The web face from a test's side: sign-in links made with sandbox-admin, and an
HTTP client signed in through one, as a browser would be."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from .api_server import ROOT, ApiServer


def admin(server: ApiServer, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "server.admin", "--data-dir", server.data_dir, *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip


def sign_in_links(server: ApiServer, access_key: str, count: int = 1) -> list[str]:
    """`count` one-time links for `access_key`, pointing at the test server."""
    made = admin(server, "web-link", access_key, "--count", str(count), "--url", server.endpoint)
    assert made.returncode == 0, made.stderr
    lines = made.stdout.split("\n")
    return [line.split()[1] for line in lines if line.strip()]


def new_student(server: ApiServer, concurrency: int = 3) -> tuple[str, str]:
    """A fresh key and its sign-in link, as a teacher makes them."""
    made = admin(
        server, "keys", "create", "--concurrency", str(concurrency), "--web-link",
        "--url", server.endpoint, "--json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    answer = json.loads(made.stdout)
    return answer["accessKey"], answer["signInLink"]


class Browserish:
    """An httpx client that signs in through a link and then acts as the page does:
    the cookie on every request, X-CSRF-Token on state-changing ones, Origin set."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.endpoint, timeout=30)
        self.csrf = ""
        self.made: list[str] = []  # kernels it created, for the tests to destroy

    def sign_in(self, link: str) -> httpx.Response:
        answer = self.http.post(link, headers={"Origin": self.server.endpoint})
        if answer.status_code == 303:
            self.csrf = self.http.get("/session").json()["csrfToken"]
        return answer

    def call(self, method: str, path: str, **kwargs) -> httpx.Response:
        headers = {"Origin": self.server.endpoint, "X-CSRF-Token": self.csrf}
        headers.update(kwargs.pop("headers", {}))
        return self.http.request(method, path, headers=headers, **kwargs)

    def create(self, token: str, lang: str = "python3") -> str:
        answer = self.call(
            "POST", "/web/v2/kernel/create", json={"lang": lang, "clientSessionToken": token}
        )
        assert answer.status_code in (200, 201), answer.text
        kernel = answer.json()["kernelId"]
        if kernel not in self.made:
            self.made.append(kernel)
        return kernel
