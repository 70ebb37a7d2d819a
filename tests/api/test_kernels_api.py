"""The v2 API over HTTP against a real server: endpoints, dialects, error rows."""

from __future__ import annotations

import select
import socket
import sys

import pytest
from helpers.api_server import start_server, stop_server
from helpers.kernel_remains import KernelRemains
from helpers.problems import problem


@pytest.fixture(scope="module")
def kernel_id(api_server):
    client = api_server.client()
    kid = client.create(token="shared-api-kernel").json()["kernelId"]
    yield kid
    client.request("DELETE", f"/v2/kernel/{kid}")


def test_version_needs_no_signature(api_server):
    import httpx

    r = httpx.get(api_server.endpoint + "/v2")
    assert r.status_code == 200 and r.json() == {"version": "v2.20170315"}
    assert r.headers["server"].startswith("BackendAI-API/")
    assert "x-ratelimit-limit" in r.headers


def test_an_idle_connection_is_kept_for_reuse(api_server):
    """Clients keep connections for reuse, and requests has no idle timer of its
    own: one idle for longer than uvicorn's 5 s default must still be open, or a
    request sent as the server closes it gets no response."""
    host, port = api_server.endpoint.removeprefix("http://").split(":")
    request = f"GET /v2 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    with socket.create_connection((host, int(port)), timeout=10) as conn:

        def get_version() -> None:
            conn.sendall(request)
            answer = b""
            while not answer.endswith(b'"v2.20170315"}'):
                chunk = conn.recv(65536)
                assert chunk, answer  # closed before the whole answer came
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200"), answer

        get_version()
        readable, _, _ = select.select([conn], [], [], 6)
        assert readable == [], conn.recv(1)  # b"": the server closed it
        get_version()


@pytest.mark.parametrize("dialect", ["sorna", "backendai"])
def test_authorize_in_both_dialects(api_server, dialect):
    r = api_server.client(dialect).request("GET", "/v2/authorize", {"echo": "hello"})
    assert r.status_code == 200
    assert r.json() == {"authorized": "yes", "echo": "hello"}
    assert int(r.headers["x-ratelimit-remaining"]) < int(r.headers["x-ratelimit-limit"])


def test_unsigned_and_badly_signed_requests(api_server):
    import httpx

    problem(httpx.post(api_server.endpoint + "/v2/kernel/create", json={}), 401, "auth-failed")
    bad = api_server.client(secret_key="x" * 40)
    problem(bad.create(), 401, "auth-failed")
    unknown = api_server.client(access_key="AKIANOSUCHKEY0000000")
    problem(unknown.create(), 401, "auth-failed")
    client = api_server.client()
    r = client.request("GET", "/v2/authorize", {"echo": 1}, headers={"Date": "yesterday-ish"})
    problem(r, 400, "invalid-auth-params")


def test_create_is_get_or_create(api):
    first = api.create(token="same-token-1")
    assert first.status_code == 201 and first.json()["created"] is True
    again = api.create(lang="python", token="same-token-1")  # an alias of python3
    assert again.status_code == 201
    assert again.json() == {"kernelId": first.json()["kernelId"], "created": False}
    assert api.request("DELETE", f"/v2/kernel/{first.json()['kernelId']}").status_code == 204


OK = {"lang": "python3", "clientSessionToken": "tok-12345"}


@pytest.mark.parametrize(
    ("body", "status", "kind", "names"),
    [
        ({"lang": "cobol", "clientSessionToken": "tok-12345"}, 404, "image-not-found", "cobol"),
        ({"clientSessionToken": "tok-12345"}, 400, "invalid-api-params", "lang"),
        ({"lang": 3, "clientSessionToken": "tok-12345"}, 400, "invalid-api-params", "lang"),
        ({"lang": "python3"}, 400, "invalid-api-params", "clientSessionToken"),
        ({**OK, "clientSessionToken": "a b c d"}, 400, "invalid-api-params", "clientSessionToken"),
        ({**OK, "clientSessionToken": "x" * 81}, 400, "invalid-api-params", "clientSessionToken"),
        ({**OK, "limits": {"maxMem": -1}}, 400, "invalid-api-params", "maxMem"),
        ({**OK, "limits": []}, 400, "invalid-api-params", "limits"),
        ({**OK, "surprise": 1}, 400, "invalid-api-params", "surprise"),
        ({**OK, "mounts": "data"}, 400, "invalid-api-params", "mounts"),
        ({**OK, "mounts": list("abcdef")}, 400, "invalid-api-params", "mounts"),
        ({**OK, "mounts": ["nope"]}, 404, "folder-not-found", "nope"),
    ],
)  # fmt: skip
def test_create_rejects_bad_input(api, body, status, kind, names):
    title = problem(api.request("POST", "/v2/kernel/create", body), status, kind)
    assert names in title


@pytest.mark.parametrize(
    ("raw", "names"), [(b"{not json", "Malformed body"), (b"[1, 2]", "JSON object")]
)
def test_malformed_json(api, raw, names):
    r = api.request("POST", "/v2/kernel/create", raw=raw, content_type="application/json")
    assert names in problem(r, 400, "invalid-api-params")


def test_oversized_body(api):
    raw = b'{"code": "' + b"x" * (2 << 20) + b'"}'
    r = api.request("POST", "/v2/kernel/create", raw=raw, content_type="application/json")
    problem(r, 413, "request-too-large")


def test_accepts_v1_and_v3_limit_shapes(api):
    v1 = {"resourceLimits": {"maxMem": 65536, "timeout": 5000}}
    v3 = {"config": {"mounts": []}, "limits": {"maxMem": 0, "execTimeout": 0}}
    for extra in (v1, v3):
        r = api.create(**extra)
        assert r.status_code == 201, r.text
        api.request("DELETE", f"/v2/kernel/{r.json()['kernelId']}")


def test_info_is_flat_with_all_fields(api, kernel_id):
    r = api.request("GET", f"/v2/kernel/{kernel_id}")
    assert r.status_code == 200
    info = r.json()
    for name in ("lang", "age", "queryTimeout", "idleTimeout", "memoryLimit", "maxCpuCredit",
                 "numQueriesExecuted", "idle", "memoryUsed", "cpuCreditUsed"):  # fmt: skip
        assert name in info, name
    assert info["lang"] == "python3" and info["memoryLimit"] == 256 * 1024


def test_query_state_continued_input_and_exception(api, kernel_id):
    results = api.run(
        kernel_id, "x = 5\nimport time\nfor i in range(3):\n    print(i); time.sleep(1)\n"
    )
    assert [r["status"] for r in results][-1] == "finished"
    assert "continued" in [r["status"] for r in results]
    assert "".join(c[1] for r in results for c in r["console"]) == "0\n1\n2\n"
    waiting = api.execute(
        kernel_id, mode="query", code="n = input('n? ')\nprint(int(n) * x)"
    ).json()
    assert waiting["result"]["status"] == "waiting-input"
    assert waiting["result"]["options"] == {"is_password": False}
    done = api.execute(kernel_id, mode="query", code="7").json()["result"]
    assert done["status"] == "finished" and done["console"] == [["stdout", "35\n"]]
    error = api.execute(kernel_id, type="query", code="1/0").json()["result"]  # `type` alias
    assert error["status"] == "finished"
    assert error["console"][0][0] == "stderr" and "ZeroDivisionError" in error["console"][0][1]


def test_explicit_run_ids(api, kernel_id):
    r = api.execute(kernel_id, mode="query", code="print('v3')", runId="run-1").json()["result"]
    assert r["runId"] == "run-1" and r["exitCode"] == 0
    r = api.execute(kernel_id, mode="query", code="input()", runId=None).json()["result"]
    assert r["status"] == "waiting-input" and r["runId"]
    r = api.execute(kernel_id, mode="input", code="line", runId=r["runId"]).json()["result"]
    assert r["status"] == "finished"
    problem(api.execute(kernel_id, mode="continue", code="", runId="x"), 400, "invalid-api-params")


@pytest.mark.parametrize(
    ("body", "names"),
    [({"code": "1"}, "mode"), ({"mode": "sing"}, "mode"), ({"mode": "query", "code": 5}, "code"),
     ({"mode": "query", "options": [1]}, "options"), ({"mode": "query", "extra": 1}, "extra")],
)  # fmt: skip
def test_execute_rejects_bad_input(api, kernel_id, body, names):
    assert names in problem(api.execute(kernel_id, **body), 400, "invalid-api-params")


def test_interrupt(api, kernel_id):
    r = api.execute(kernel_id, mode="query", code="while True: pass").json()["result"]
    assert r["status"] == "continued"
    assert api.request("POST", f"/v2/kernel/{kernel_id}/interrupt").status_code == 204
    r = api.execute(kernel_id, mode="query", code="").json()["result"]
    assert r["status"] == "finished" and "KeyboardInterrupt" in r["console"][-1][1]


def test_restart_keeps_id_and_files_loses_state(api):
    kid = api.create().json()["kernelId"]
    api.run(kid, "y = 1\nopen('/home/work/keep.txt', 'w').write('kept')")
    r = api.request("PATCH", f"/v2/kernel/{kid}")
    assert r.status_code == 204 and r.headers["content-length"] == "0"
    out = api.run(kid, "print(open('keep.txt').read())\nprint(y)")[-1]["console"]
    assert out[0] == ["stdout", "kept\n"] and "NameError" in out[1][1]
    api.request("DELETE", f"/v2/kernel/{kid}")


def test_destroy_then_gone_and_204_has_headers(api):
    kid = api.create().json()["kernelId"]
    r = api.request("DELETE", f"/v2/kernel/{kid}")
    assert r.status_code == 204
    assert r.headers["content-length"] == "0" and r.headers["content-type"]
    problem(api.request("GET", f"/v2/kernel/{kid}"), 404, "kernel-not-found")
    problem(api.request("DELETE", f"/v2/kernel/{kid}"), 404, "kernel-not-found")


def test_foreign_kernels_are_not_found(api_server, api, kernel_id):
    other = api_server.client(**api_server.new_key())
    for method in ("GET", "DELETE", "PATCH"):
        problem(other.request(method, f"/v2/kernel/{kernel_id}"), 404, "kernel-not-found")
    problem(other.execute(kernel_id, mode="query", code="1"), 404, "kernel-not-found")
    assert api.request("GET", f"/v2/kernel/{kernel_id}").status_code == 200


def test_quota_counts_only_real_creations(api_server):
    client = api_server.client(**api_server.new_key(concurrency=1))
    first = client.create(token="quota-token")
    assert first.status_code == 201
    assert client.create(token="quota-token").status_code == 201  # reuse is not a new kernel
    problem(client.create(token="quota-other"), 412, "quota-exceeded")
    client.request("DELETE", f"/v2/kernel/{first.json()['kernelId']}")
    second = client.create(token="quota-other")
    assert second.status_code == 201
    client.request("DELETE", f"/v2/kernel/{second.json()['kernelId']}")


def test_rate_limit_429_carries_headers(api_server):
    client = api_server.client(**api_server.new_key(rate_limit=3))
    statuses = [client.request("GET", "/v2/authorize", {"echo": 1}) for _ in range(4)]
    assert [r.status_code for r in statuses[:3]] == [200, 200, 200]
    problem(statuses[3], 429, "rate-limit-exceeded")
    assert statuses[3].headers["x-ratelimit-remaining"] == "0"


def test_unknown_paths_and_methods(api):
    problem(api.request("GET", "/v2/nowhere"), 404, "generic-not-found")
    problem(api.request("GET", "/v9/kernel/create"), 404, "generic-not-found")
    problem(api.request("PUT", "/v2/kernel/create"), 405, "method-not-allowed")


def test_scripts_run_prints_settings_that_work(tmp_path):
    proc, server = start_server(str(tmp_path / "data"), command=("./scripts/run",))
    try:
        assert server.access_key.startswith("AKIA") and len(server.secret_key) == 40
        assert any(line.startswith("BACKEND_ACCESS_KEY=") for line in server.output)
        r = server.client().request("GET", "/v2/authorize", {"echo": "pasted"})
        assert r.status_code == 200 and r.json()["echo"] == "pasted"
    finally:
        stop_server(proc)
    # second start: the same key, none printed; started with the usual soft limit of
    # 1024 open files, which the server raises to what its settings need (a socket
    # per kernel and per connection), not to the hard limit
    from server.__main__ import open_files_needed
    from server.settings import ServerConfig

    command = ("prlimit", "--nofile=1024:8192", sys.executable, "-m", "server")
    proc, again = start_server(str(tmp_path / "data"), command=command)
    try:
        assert again.access_key == ""
        with open(f"/proc/{again.pid}/limits") as f:
            line = next(line for line in f if line.startswith("Max open files"))
        assert line.split()[3:5] == [str(open_files_needed(ServerConfig())), "8192"], line
    finally:
        stop_server(proc)


def test_exec_timeout_ends_the_run_and_the_kernel(api_server, api):
    kid = api.create(limits={"maxMem": 0, "execTimeout": 1500}).json()["kernelId"]
    remains = KernelRemains(api_server, kid)
    assert len(remains.processes()) == 2  # its pid 1 and its runner
    r = api.execute(kid, mode="query", code="print('start', flush=True)\nwhile True: pass")
    result = r.json()["result"]
    assert result["status"] == "exec-timeout"
    assert result["console"] == [["stdout", "start\n"]]
    problem(api.request("GET", f"/v2/kernel/{kid}"), 404, "kernel-not-found")
    remains.assert_processes_gone()


def test_exec_timeout_clock_stops_while_waiting_for_input(api):
    import time

    kid = api.create(limits={"maxMem": 0, "execTimeout": 1500}).json()["kernelId"]
    try:
        r = api.execute(kid, mode="query", code="print(input('? ') * 2)").json()["result"]
        assert r["status"] == "waiting-input"
        time.sleep(2.5)  # a slow student: longer than the exec timeout
        r = api.execute(kid, mode="query", code="ab").json()["result"]
        assert r["status"] == "finished" and r["console"] == [["stdout", "abab\n"]]
    finally:
        api.request("DELETE", f"/v2/kernel/{kid}")


def test_exec_timeout_of_a_run_nobody_polls(api):
    import time

    kid = api.create(limits={"maxMem": 0, "execTimeout": 3000}).json()["kernelId"]
    r = api.execute(kid, mode="query", code="import time\ntime.sleep(60)").json()["result"]
    assert r["status"] == "continued"
    deadline = time.monotonic() + 5
    while api.request("GET", f"/v2/kernel/{kid}").status_code == 200:
        assert time.monotonic() < deadline, "the abandoned run outlived its exec timeout"
        time.sleep(0.2)
    problem(api.request("GET", f"/v2/kernel/{kid}"), 404, "kernel-not-found")


def test_x_method_override_routes_a_post_as_another_method(api_server):
    client = api_server.client()
    kid = client.create().json()["kernelId"]
    path = f"/v2/kernel/{kid}"
    # signed as the method it stands for (a signed POST is refused: test_signing_api)
    for method in ("GET", "REPORT"):
        headers = client.headers(method, path, b"", None)
        headers["X-Method-Override"] = method
        r = client.http.request("POST", path, headers=headers)
        assert r.status_code == 200 and r.json()["lang"] == "python3", r.text
    headers = client.headers("DELETE", path, b"", None)
    headers["X-Method-Override"] = "DELETE"
    r = client.http.request("POST", path, headers=headers)
    assert r.status_code == 204, r.text
    problem(client.request("GET", path), 404, "kernel-not-found")


def test_x_method_override_is_not_a_way_around_signing(api_server):
    client = api_server.client()
    kid = client.create().json()["kernelId"]
    try:
        headers = client.headers("GET", "/v2/authorize", b"", None)  # signed for another path
        headers["X-Method-Override"] = "DELETE"
        r = client.http.request("POST", f"/v2/kernel/{kid}", headers=headers)
        problem(r, 401, "auth-failed")
        assert client.request("GET", f"/v2/kernel/{kid}").status_code == 200
    finally:
        client.request("DELETE", f"/v2/kernel/{kid}")
