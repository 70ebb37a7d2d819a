"""Signing over HTTP (spec §2) against a real server: what the signature covers
(the method routed under X-Method-Override), one answer for an unknown key and a
bad signature, MD5 only when allowed, refusals before the body is read, and
signatures that still verify behind a TLS-terminating proxy."""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import subprocess
import sys

import pytest
from helpers.api_server import ROOT, start_server, stop_server

from server.faces.v2 import signing as auth


def problem(response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"].endswith("/" + kind), body
    return body["title"]


@pytest.fixture
def kernel(api_server):
    client = api_server.client()
    kid = client.create().json()["kernelId"]
    yield kid
    client.request("DELETE", f"/v2/kernel/{kid}")


# -- X-Method-Override ---------------------------------------------------------------


def test_a_captured_post_does_not_replay_as_a_delete(api_server, kernel):
    client = api_server.client()
    path = f"/v2/kernel/{kernel}"
    body = json.dumps({"mode": "query", "code": "1"}).encode()
    captured = client.headers("POST", path, body, "application/json")
    r = client.http.request("POST", path, content=body, headers=captured)
    assert r.status_code == 200, r.text  # the genuine request
    replay = {**captured, "X-Method-Override": "DELETE"}
    problem(client.http.request("POST", path, content=body, headers=replay), 401, "auth-failed")
    assert client.request("GET", path).status_code == 200  # the kernel is still there


@pytest.mark.parametrize("method", ["GET", "REPORT"])
def test_an_override_signed_as_itself_is_served(api_server, kernel, method):
    client = api_server.client()
    path = f"/v2/kernel/{kernel}"
    headers = {**client.headers(method, path, b"", None), "X-Method-Override": method}
    r = client.http.request("POST", path, headers=headers)
    assert r.status_code == 200 and r.json()["lang"] == "python3", r.text


def test_an_override_that_cannot_be_routed_is_a_bad_request(api_server, kernel):
    client = api_server.client()
    path = f"/v2/kernel/{kernel}"
    headers = {**client.headers("POST", path, b"", None), "X-Method-Override": "PURGE"}
    title = problem(client.http.request("POST", path, headers=headers), 400, "generic-bad-request")
    assert "X-Method-Override" in title


# -- one answer -----------------------------------------------------------------------


def test_an_unknown_key_and_a_bad_signature_get_the_same_answer(api_server):
    keys = api_server.new_key()
    unknown = api_server.client(access_key="AKIA" + "Z" * 16)
    bad = api_server.client(access_key=keys["access_key"], secret_key="x" * 40)
    answers = [c.request("GET", "/v2/authorize", {"echo": 1}) for c in (unknown, bad)]
    for r in answers:
        problem(r, 401, "auth-failed")
    assert answers[0].content == answers[1].content
    assert answers[0].headers["content-length"] == answers[1].headers["content-length"]


def test_a_disabled_key_gets_that_answer_too(api_server):
    keys = api_server.new_key()
    client = api_server.client(**keys)
    assert client.request("GET", "/v2/authorize", {"echo": 1}).status_code == 200
    subprocess.run(
        [sys.executable, "-m", "server.admin", "--data-dir", api_server.data_dir,
         "keys", "disable", keys["access_key"]],
        check=True, cwd=ROOT, capture_output=True,
    )  # fmt: skip
    unknown = api_server.client(access_key="AKIA" + "Y" * 16)
    a = client.request("GET", "/v2/authorize", {"echo": 1})
    b = unknown.request("GET", "/v2/authorize", {"echo": 1})
    problem(a, 401, "auth-failed")
    assert a.content == b.content


def test_an_oversized_body_gets_the_same_answer_for_any_key(api_server):
    # checked before the key, or 401 and 413 would tell an unknown key from a known one
    raw = b'{"code": "' + b"x" * (2 << 20) + b'"}'
    unknown = api_server.client(access_key="AKIA" + "X" * 16)
    for client in (api_server.client(), unknown):
        r = client.request("POST", "/v2/kernel/create", raw=raw, content_type="application/json")
        problem(r, 413, "request-too-large")


# -- MD5 ---------------------------------------------------------------------------------


def md5_headers(server, path: str, body: bytes) -> dict[str, str]:
    headers = {
        "Date": datetime.datetime.now(datetime.UTC).isoformat(),
        "Host": server.endpoint.split("://", 1)[1],
        "X-Sorna-Version": "v2.20170315",
        "Content-Type": "application/json",
    }
    headers["Authorization"] = auth.sign(
        "GET", path, headers, body, server.access_key, server.secret_key, "md5"
    )
    return headers


def test_md5_signatures_are_refused_by_default(api_server):
    client = api_server.client()
    body = b'{"echo": 1}'
    r = client.http.request(
        "GET", "/v2/authorize", content=body, headers=md5_headers(api_server, "/v2/authorize", body)
    )
    assert "hash type" in problem(r, 400, "invalid-auth-params")


def test_md5_signatures_pass_where_a_setting_allows_them(tmp_path):
    proc, server = start_server(str(tmp_path / "data"), config="allow_md5_signatures = true\n")
    try:
        client = server.client()
        body = b'{"echo": 1}'
        headers = md5_headers(server, "/v2/authorize", body)
        r = client.http.request("GET", "/v2/authorize", content=body, headers=headers)
        assert r.status_code == 200 and r.json()["echo"] == 1, r.text
    finally:
        stop_server(proc)


# -- refused before the body ---------------------------------------------------------------


def raw_exchange(api_server, head: bytes, timeout: float = 15) -> bytes:
    """Send `head` (request line and headers, no body) and read the answer's head."""
    host, port = api_server.endpoint.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        conn.sendall(head)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(65536)  # socket.timeout if nothing comes
            assert chunk, answer
            answer += chunk
        return answer


def unsent_body_head(api_server, authorization: str) -> bytes:
    """A request that announces a 1 MiB body it never sends."""
    host = api_server.endpoint.removeprefix("http://")
    date = datetime.datetime.now(datetime.UTC).isoformat()
    return (
        f"POST /v2/kernel/create HTTP/1.1\r\nHost: {host}\r\nDate: {date}\r\n"
        f"X-Sorna-Version: v2.20170315\r\nContent-Type: application/json\r\n"
        f"Content-Length: {1 << 20}\r\nAuthorization: {authorization}\r\n\r\n"
    ).encode()


@pytest.mark.parametrize(
    "authorization",
    [
        "Sorna signMethod=HMAC-SHA256, credential=AKIANOSUCHKEY0000000:" + "0" * 64,
        "Sorna signMethod=HMAC-MD5, credential=AKIANOSUCHKEY0000000:" + "0" * 32,
        "Sorna nonsense",
    ],
)
def test_a_bad_authorization_is_answered_without_the_body(api_server, authorization):
    answer = raw_exchange(api_server, unsent_body_head(api_server, authorization))
    assert answer.startswith((b"HTTP/1.1 401", b"HTTP/1.1 400")), answer


def test_a_known_key_waits_for_its_body_then_the_signature_is_checked(api_server):
    client = api_server.client()
    body = b'{"echo": "ok"}'
    headers = client.headers("GET", "/v2/authorize", body, "application/json")
    headers["Authorization"] = headers["Authorization"][:-4] + "0000"
    r = client.http.request("GET", "/v2/authorize", content=body, headers=headers)
    problem(r, 401, "auth-failed")


# -- behind a TLS-terminating proxy ----------------------------------------------------------


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


class ForwardingProxy:
    """What the nginx snippet of docs/security.md does to a request, without TLS: the Host header
    as the client sent it (or, with `keep_host=False`, rewritten to the upstream, as
    nginx does by default), X-Forwarded-For/-Proto and X-Real-IP added."""

    def __init__(self, upstream: str, keep_host: bool) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.keep_host = keep_host

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")[:-2]
        out = [lines[0]]
        for line in lines[1:]:
            name = line.split(":", 1)[0].lower()
            if name == "host" and not self.keep_host:
                line = f"Host: {self.upstream}"
            out.append(line)
        out += ["X-Forwarded-For: 192.0.2.7", "X-Forwarded-Proto: https", "X-Real-IP: 192.0.2.7"]
        host, port = self.upstream.split(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        up_writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


def through_proxy(api_server, keep_host: bool) -> int:
    """The status of a signed /v2/authorize sent to a proxy in front of the server;
    the client signs the proxy's address, the endpoint it was given."""

    async def main() -> int:
        proxy = ForwardingProxy(api_server.endpoint, keep_host)
        server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            client = api_server.client()
            client.host = f"127.0.0.1:{port}"
            body = b'{"echo": "proxied"}'
            headers = client.headers("GET", "/v2/authorize", body, "application/json")
            head = "GET /v2/authorize HTTP/1.1\r\nConnection: close\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            head += f"Content-Length: {len(body)}\r\n\r\n"
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head.encode() + body)
            answer = await asyncio.wait_for(reader.read(), 30)
            writer.close()
            return int(answer.split(b" ", 2)[1])
        finally:
            server.close()

    return asyncio.run(main())


def test_signatures_verify_behind_a_proxy_that_passes_the_host(api_server):
    assert through_proxy(api_server, keep_host=True) == 200


def test_a_proxy_that_rewrites_the_host_breaks_signatures(api_server):
    # why the snippet in docs/security.md sets `proxy_set_header Host $http_host`
    assert through_proxy(api_server, keep_host=False) == 401
