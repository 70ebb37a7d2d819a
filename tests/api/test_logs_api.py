"""The server's log lines through a real server: JSON and logfmt, a request id per
request echoed in X-Request-Id and on the lines it caused, a kernel's lifecycle
with its id, key, event and reason, and no secret in any line."""

from __future__ import annotations

import json
import shlex
import time

import pytest
from helpers.api_server import start_server, stop_server


@pytest.fixture(scope="module", params=["json", "logfmt"])
def server(request, tmp_path_factory):
    config = f'[server]\nlog_format = "{request.param}"\n'
    proc, server = start_server(
        str(tmp_path_factory.mktemp(f"logs-{request.param}")), config=config
    )
    server.log_format = request.param
    yield server
    stop_server(proc)


def parse(line: str, kind: str) -> dict | None:
    """A log line as a dict; None for what is not one (the first start's printout)."""
    line = line.strip()
    if kind == "json":
        try:
            found = json.loads(line)
        except ValueError:
            return None
        return found if isinstance(found, dict) else None
    parts = [p.partition("=") for p in shlex.split(line)] if "level=" in line else []
    return {k: v for k, sep, v in parts if sep} or None


def lines(server) -> list[dict]:
    return [p for line in server.output if (p := parse(line, server.log_format))]


def wait_for(server, predicate, what: str) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [line for line in lines(server) if predicate(line)]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no log line for {what}: {lines(server)[-5:]}")


def test_lifecycle_lines_carry_the_request_id_kernel_key_event_and_reason(server):
    client = server.client()
    r = client.request("POST", "/v2/kernel/create",
                       {"lang": "python3", "clientSessionToken": "logs-1"},
                       headers={"X-Request-Id": "trace-42"})  # fmt: skip
    assert r.status_code == 201 and r.headers["x-request-id"] == "trace-42"
    kid = r.json()["kernelId"]

    def its_start(d: dict) -> bool:
        return (d.get("kernel"), d.get("event")) == (kid, "kernel_started")

    created = wait_for(server, its_start, "the create")
    assert created["request_id"] == "trace-42" and created["key"] == server.access_key
    assert created["level"] == "info" and created["msg"] == "kernel created"
    r = client.request("DELETE", f"/v2/kernel/{kid}")
    rid = r.headers["x-request-id"]
    assert rid and rid != "trace-42"  # a new one when the client sends none

    def its_end(d: dict) -> bool:
        return (d.get("kernel"), d.get("event")) == (kid, "kernel_terminated")

    ended = wait_for(server, its_end, "the destroy")
    assert (ended["request_id"], ended["reason"]) == (rid, "user-requested")
    assert "time" in ended  # not under systemd: the server stamps its lines


def test_a_bad_request_id_is_replaced_and_secrets_never_logged(server):
    client = server.client()
    r = client.request("GET", "/v2/authorize", headers={"X-Request-Id": "bad id with=stuff"})
    assert r.status_code == 200 and r.headers["x-request-id"] != "bad id with=stuff"
    assert all(server.secret_key not in line for line in server.output[1:] if "SECRET" not in line)
    assert not any("Authorization" in line or "signature" in line for line in server.output)
