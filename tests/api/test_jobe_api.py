"""The Jobe face's protocol through a real server: routes, error bodies, the file
cache with CodeRunner's 404-then-PUT flow, keys from sandbox-admin, rates,
concurrency, overload, and the face being off unless enabled."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import subprocess
import sys
import time

import httpx
import psutil
import pytest
from helpers.api_server import ROOT, spawner_pid, start_server, stop_server
from helpers.jobe import PREFIX, Jobe

JOBE_ON = '[faces]\nenabled = ["jobe"]\n'


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    config = JOBE_ON + "[jobe]\nmax_body_bytes = 65536\nmax_cputime_seconds = 30\n"
    proc, server = start_server(str(tmp_path_factory.mktemp("jobe-api")), config=config)
    yield server
    stop_server(proc)


@pytest.fixture(scope="module")
def jobe(server):
    return Jobe(server.endpoint)


def c_run(**fields: object) -> bytes:
    return json.dumps({"run_spec": {"language_id": "c", "sourcecode": "", **fields}}).encode()


def raw_post(jobe: Jobe, body: bytes) -> httpx.Response:
    return jobe.http.post(f"{PREFIX}/runs", content=body)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"", 400, "Non-JSON post data received"),
        (b"{not json", 400, "Non-JSON post data received"),
        (b"[]", 400, "Non-JSON post data received"),
        (b'"x"', 400, "Non-JSON post data received"),
        (b"\xff\xfe", 400, "Non-JSON post data received"),
        (b"{}", 400, "No run_spec attribute found in post data"),
        (b'{"run_spec": 3}', 400, "No run_spec attribute found in post data"),
        (b'{"run_spec": {"language_id": "python3"}}', 400,
         "run_spec is missing the required attribute 'sourcecode'"),
        (b'{"run_spec": {"sourcecode": ""}}', 400,
         "run_spec is missing the required attribute 'language_id'"),
        (b'{"run_spec": {"sourcecode": "", "language_id": "NoSuchLanguage"}}', 400,
         "Language 'nosuchlanguage' is not known"),
        (b'{"run_spec": {"sourcecode": ["x"], "language_id": "c"}}', 400,
         "run_spec attribute 'sourcecode' must be a string"),
        (b'{"run_spec": {"sourcecode": "", "language_id": 7}}', 400,
         "run_spec attribute 'language_id' must be a string"),
        (c_run(parameters={"cputime": 31}),
         400, "cputime exceeds maximum allowed on this Jobe server (30 secs)"),
        (c_run(sourcefilename="../x.c"), 400, "The sourcefilename for the run_spec is illegal"),
        (c_run(sourcefilename=".x.c"), 400, "The sourcefilename for the run_spec is illegal"),
        (c_run(sourcefilename=5), 400, "The sourcefilename for the run_spec is illegal"),
        (c_run(sourcefilename="\udc80.c"), 400, "The sourcefilename for the run_spec is illegal"),
        (c_run(file_list=[["short", "a"]]), 400, 'Invalid file specifier: ["short", "a"]'),
        (c_run(file_list=[["abcdefgh1", ".."]]), 400,
         'Invalid file specifier: ["abcdefgh1", ".."]'),
        (c_run(file_list=[["abcdefgh1", "a/b"]]), 400,
         'Invalid file specifier: ["abcdefgh1", "a/b"]'),
        (c_run(file_list=[["abcdefgh1"]]), 400, 'Invalid file specifier: ["abcdefgh1"]'),
        (c_run(file_list="x"), 400, "run_spec attribute 'file_list' must be a list"),
        (c_run(input=5), 400, "run_spec attribute 'input' must be a string"),
        (c_run(input="\ud800"), 400, "run_spec attribute 'input' must be valid UTF-8 text"),
        (c_run(parameters=5), 400, "run_spec attribute 'parameters' must be an object"),
        (c_run(parameters={"runargs": "x"}), 400, "parameters.runargs must be a list of strings"),
        (c_run(parameters={"runargs": ["\udfff"]}), 400,
         "parameters.runargs must be a list of strings"),
        (c_run(parameters={"compileargs": [1]}), 400,
         "parameters.compileargs must be a list of strings"),
        (c_run(parameters={"main_class": "a;b"}), 400,
         "parameters.main_class must be a Java class name"),
        (c_run(sourcecode="\ud800"), 400,
         "run_spec attribute 'sourcecode' must be valid UTF-8 text"),
    ],
)  # fmt: skip
def test_bad_run_specs_get_jobe_errors(jobe, body, status, message):
    r = raw_post(jobe, body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == message


def test_a_body_over_the_limit_is_413(jobe):
    spec = {"run_spec": {"language_id": "c", "sourcecode": "x" * 70_000}}
    r = raw_post(jobe, json.dumps(spec).encode())
    assert r.status_code == 413
    assert "at most 65536 bytes" in r.json()


def test_non_numeric_parameters_take_the_defaults(jobe):
    result = jobe.run(
        language_id="python3", sourcecode="print('ok')\n",
        parameters={"cputime": "lots", "memorylimit": True, "numprocs": None, "other": 1},
        debug=True, jobeserver="localhost",  # debug keeps nothing here: run_id stays null
    )  # fmt: skip
    assert (result["outcome"], result["stdout"], result["run_id"]) == (15, "ok\n", None)


def test_the_overload_test_hook(jobe):
    r = jobe.post_run(language_id="python3", sourcecode="!** TESTING OVERLOAD EXCEPTION **!")
    assert r.status_code == 200
    assert r.json() == {"run_id": "0", "outcome": 21, "cmpinfo": "", "stdout": "", "stderr": ""}


def test_unknown_routes_and_methods_are_jobe_404s(jobe):
    for method, path in [
        ("GET", f"{PREFIX}/runs"),
        ("GET", f"{PREFIX}/runs/1"),
        ("GET", f"{PREFIX}/nothing"),
        ("POST", f"{PREFIX}/files"),
        ("GET", PREFIX),
        ("PUT", f"{PREFIX}/files/has-dash"),
        ("PUT", f"{PREFIX}/files/" + "a" * 129),
    ]:
        r = jobe.http.request(method, path, content=b"{}")
        assert r.status_code == 404, (method, path, r.status_code)
        assert r.json() == "", (method, path)


def test_file_cache_put_head_and_errors(jobe):
    file_id = "f" + hashlib.md5(b"cache test").hexdigest()
    assert jobe.head_file(file_id) == 404
    assert jobe.put_file(file_id, b"cache test").status_code == 204
    assert jobe.head_file(file_id) == 204
    put = f"{PREFIX}/files/{file_id}"
    for body, message in [
        (b"", "put: missing file_contents parameter"),
        (b"{}", "put: missing file_contents parameter"),
        (b"{x", "put: the body is not JSON"),
        (b'{"file_contents": "!!!"}', f"put: contents of file {file_id} are not valid base-64"),
        (b'{"file_contents": 5}', f"put: contents of file {file_id} are not valid base-64"),
    ]:
        r = jobe.http.put(put, content=body)
        assert (r.status_code, r.json()) == (400, message), body
    r = jobe.http.put(put, content=json.dumps({"file_contents": "A" * 90_000}))
    assert r.status_code == 413
    assert jobe.put_file(file_id, b"").status_code == 204  # empty is a file too


def test_coderunner_flow_404_then_put_then_retry(jobe):
    """CodeRunner names support files by their MD5, POSTs, and on 404 PUTs every
    file and POSTs once more."""
    files = {"data.txt": b"first line\nsecond line\n", "helper.py": b"def twice(x): return 2*x\n"}
    file_list = [[hashlib.md5(data).hexdigest(), name] for name, data in files.items()]
    spec = dict(
        language_id="python3", sourcefilename="__tester__.python3", file_list=file_list,
        sourcecode="import helper\n"
                   "print(helper.twice(21), open('data.txt').readlines()[1], end='')\n",
        input="", parameters={"cputime": 3, "memorylimit": 200}, jobeserver="localhost",
    )  # fmt: skip
    r = jobe.post_run(**spec)
    assert (r.status_code, r.json()) == (
        404,
        "One or more of the specified files is missing/unavailable",
    )
    for (file_id, _), data in zip(file_list, files.values(), strict=True):
        assert jobe.put_file(file_id, data).status_code == 204
    result = jobe.run(**spec)
    assert (result["outcome"], result["stdout"]) == (15, "42 second line\n"), result


def test_both_prefixes_and_trailing_slashes(jobe):
    body = json.dumps({"run_spec": {"language_id": "python3", "sourcecode": "print(2)"}})
    for path in ("/jobe/index.php/restapi/runs/", "/restapi/runs", "/restapi/runs/"):
        r = jobe.http.post(path, content=body)
        assert r.status_code == 200 and r.json()["stdout"] == "2\n", path


def admin(server, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "server.admin", "--data-dir", server.data_dir, "face-keys", *args],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout  # fmt: skip


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    """Key-less use from nowhere: every run needs a key."""
    config = JOBE_ON + "[jobe]\nkeyless_networks = []\nkey_wait_seconds = 1\n"
    proc, server = start_server(str(tmp_path_factory.mktemp("jobe-keys")), config=config)
    yield server
    stop_server(proc)


def new_key(server, *options: str) -> dict:
    return json.loads(admin(server, "create", "--face", "jobe", "--json", *options))


def test_keys_are_required_outside_keyless_networks(keyed_server):
    hello = {"language_id": "python3", "sourcecode": "print('hi')"}
    r = Jobe(keyed_server.endpoint).post_run(**hello)
    assert (r.status_code, r.json()) == (403, "Missing API key")
    r = Jobe(keyed_server.endpoint, key="2AAA7A5415B4A9B394B54BF1D2E9D").post_run(**hello)
    assert (r.status_code, r.json()) == (403, "Unknown API key")
    assert Jobe(keyed_server.endpoint).http.get(f"{PREFIX}/languages").status_code == 403
    assert Jobe(keyed_server.endpoint).put_file("abcdefgh", b"x").status_code == 403
    assert Jobe(keyed_server.endpoint).head_file("abcdefgh") == 403

    key = new_key(keyed_server, "--name", "moodle")
    jobe = Jobe(keyed_server.endpoint, key=key["key"])
    assert jobe.run(**hello)["stdout"] == "hi\n"
    assert jobe.http.get(f"{PREFIX}/languages").status_code == 200
    # stored hashed: the key itself is nowhere in the database
    with open(f"{keyed_server.data_dir}/sandbox.sqlite", "rb") as f:
        assert key["key"].encode() not in f.read()
    assert key["id"] in admin(keyed_server, "list")
    admin(keyed_server, "disable", key["id"])
    r = jobe.post_run(**hello)
    assert (r.status_code, r.json()) == (403, "Unknown API key")


def test_a_key_that_was_given_keeps_working(keyed_server):
    new_key(keyed_server, "--key", "2AAA7A5415B4A9B394B54BF1D2E9D")
    jobe = Jobe(keyed_server.endpoint, key="2AAA7A5415B4A9B394B54BF1D2E9D")
    assert jobe.run(language_id="python3", sourcecode="print(3)")["stdout"] == "3\n"


def test_a_keys_rate_limit(keyed_server):
    jobe = Jobe(keyed_server.endpoint, key=new_key(keyed_server, "--rate-limit", "2")["key"])
    hello = {"language_id": "python3", "sourcecode": "print('hi')"}
    assert jobe.run(**hello)["outcome"] == 15
    assert jobe.run(**hello)["outcome"] == 15
    r = jobe.post_run(**hello)
    assert (r.status_code, r.json()) == (429, "Max RUN rate for this server exceeded")


def test_a_keys_concurrency_then_overload(keyed_server):
    key = new_key(keyed_server, "--concurrency", "1")["key"]
    slow = {"language_id": "python3", "sourcecode": "import time\ntime.sleep(4)\nprint('slow')"}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(Jobe(keyed_server.endpoint, key=key).run, **slow)
        time.sleep(1)  # it holds the key's one slot
        second = Jobe(keyed_server.endpoint, key=key).run(language_id="python3", sourcecode="1")
        assert first.result()["outcome"] == 15
    assert second["outcome"] == 21  # it waited 1 s for the key's slot


def test_the_face_is_off_unless_enabled(api_server):
    r = httpx.post(f"{api_server.endpoint}{PREFIX}/runs", content=b"{}")
    assert r.status_code == 404
    assert "json" in r.headers["content-type"] and r.json() != ""  # the v2 problem body


def test_the_enable_flag(tmp_path):
    proc, server = start_server(
        str(tmp_path / "data"), command=(sys.executable, "-m", "server", "--enable", "jobe")
    )
    try:
        r = httpx.get(f"{server.endpoint}{PREFIX}/languages")
        assert r.status_code == 200 and "python3" in dict(r.json())
    finally:
        stop_server(proc)
    bad = subprocess.run(
        [sys.executable, "-m", "server", "--enable", "nosuch", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert bad.returncode == 2 and "unknown face 'nosuch'" in bad.stderr


@pytest.fixture(scope="module")
def one_slot_server(tmp_path_factory):
    """One job at a time and no queue."""
    config = JOBE_ON + "[limits]\nmax_running_jobs = 1\nmax_waiting_jobs = 0\n"
    proc, server = start_server(str(tmp_path_factory.mktemp("jobe-one")), config=config)
    yield server
    stop_server(proc)


def test_a_full_queue_is_outcome_21(one_slot_server):
    jobe = Jobe(one_slot_server.endpoint)
    slow = {"language_id": "python3", "sourcecode": "import time\ntime.sleep(3)\nprint('slow')"}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(jobe.run, **slow)
        time.sleep(1)
        refused = Jobe(one_slot_server.endpoint).run(language_id="python3", sourcecode="print(1)")
        assert first.result()["outcome"] == 15
    assert refused == {"run_id": None, "outcome": 21, "cmpinfo": "", "stdout": "", "stderr": ""}


def test_a_kernel_killed_under_a_run_is_outcome_20(one_slot_server):
    jobe = Jobe(one_slot_server.endpoint)
    marker = f"marker{time.monotonic_ns()}"
    spawner = spawner_pid(one_slot_server.pid)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            jobe.run, language_id="c", parameters={"runargs": [marker]},
            sourcecode="#include <unistd.h>\nint main(void) { sleep(30); return 0; }\n",
        )  # fmt: skip
        deadline = time.monotonic() + 20
        program = None
        while program is None and time.monotonic() < deadline:
            found = [
                p for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or [])
            ]
            program = found[0] if found else None
            time.sleep(0.05)
        assert program is not None, "the run's program never showed"
        pid1 = next(p for p in [program, *program.parents()] if p.ppid() == spawner)
        pid1.kill()  # the kernel's pid 1: the whole kernel goes
        result = running.result()
    assert result["outcome"] == 20, result
    assert "kernel ended" in result["stderr"]
    # the server goes on (its one job slot is free once the dead kernel is cleared)
    deadline = time.monotonic() + 10
    while (after := jobe.run(language_id="python3", sourcecode="print(5)"))["outcome"] == 21:
        assert time.monotonic() < deadline, "the job slot never came back"
        time.sleep(0.1)
    assert after["stdout"] == "5\n", after
