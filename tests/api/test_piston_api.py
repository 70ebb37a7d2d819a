"""The Piston face through a real server: runtimes, execute in every language with
stdin and args, every status, every bad request, keys, and Piston's own exploit
programs (its tests/ directory), which must be contained."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import subprocess
import sys

import httpx
import pytest
from helpers.api_server import ROOT, start_server, stop_server
from helpers.jobe import settle, steady

PISTON_ON = '[faces]\nenabled = ["web", "piston"]\n'  # beside the page, as users run it


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc, server = start_server(str(tmp_path_factory.mktemp("piston")), config=PISTON_ON)
    yield server
    stop_server(proc)


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.endpoint, timeout=60) as client:
        yield client


def py(**fields: object) -> dict:
    return {"language": "python", "version": "*", "files": [{"content": ""}], **fields}


def execute(http, **body) -> dict:
    body.setdefault("version", "*")
    r = http.post("/api/v2/execute", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_runtimes(http):
    r = http.get("/api/v2/runtimes")
    assert r.status_code == 200
    runtimes = {rt["language"]: rt for rt in r.json()}
    assert {
        "python",
        "c",
        "c++",
        "java",
        "javascript",
        "rust",
        "go",
        "bash",
        "php",
        "pascal",
    } <= set(runtimes)
    assert runtimes["c"]["runtime"] == "gcc" and runtimes["javascript"]["runtime"] == "node"
    assert "runtime" not in runtimes["python"] and "py" in runtimes["python"]["aliases"]
    assert all(rt["version"].count(".") == 2 for rt in runtimes.values())


# language: (files, output for stdin "in" and args ["a", "b c"])
PROGRAMS = {
    "python": ([{"content": "import sys\nprint(input(), sys.argv[1:])"}], "in ['a', 'b c']\n"),
    "c": ([{"name": "main.c", "content": '#include <stdio.h>\nint main(int n, char **v) {'
           ' char s[9]; scanf("%8s", s); printf("%s %d %s\\n", s, n, v[2]); }'}], "in 3 b c\n"),
    "c++": ([{"content": "#include <iostream>\n#include <string>\nint main(int n, char **v) {"
             " std::string s; std::cin >> s; std::cout << s << ' ' << v[1] << std::endl; }"}],
            "in a\n"),
    "java": ([{"name": "Main.java", "content":
               "public class Main { public static void main(String[] a) { System.out.println("
               "new java.util.Scanner(System.in).next() + \" \" + a[1]); } }"}],
             "in b c\n"),
    "javascript": ([{"content": "process.stdin.on('data', d => console.log(String(d).trim(),"
                    " process.argv.slice(2).join('|')))"}], "in a|b c\n"),
    "rust": ([{"content": "use std::io::Read; fn main() { let mut s = String::new();"
              " std::io::stdin().read_to_string(&mut s).unwrap();"
              " let a: Vec<String> = std::env::args().collect();"
              " println!(\"{} {}\", s.trim(), a[2]); }"}],
             "in b c\n"),
    "go": ([{"content": 'package main\nimport ("fmt"; "os")\n'
            "func main() { var s string; fmt.Scan(&s); fmt.Println(s, os.Args[1]) }"}], "in a\n"),
    "bash": ([{"content": 'read x; echo "$x $2"'}], "in b c\n"),
    "php": ([{"content": '<?php echo trim(fgets(STDIN)), " ", $argv[2], "\\n";'}], "in b c\n"),
    "pascal": ([{"content": "program p;\nvar s: string;\nbegin\n  readln(s);\n"
                "  writeln(s, ' ', ParamStr(1));\nend.\n"}], "in a\n"),
}  # fmt: skip


@pytest.mark.parametrize("language", list(PROGRAMS))
def test_every_language_with_stdin_and_args(http, language):
    files, expected = PROGRAMS[language]
    result = execute(http, language=language, files=files, stdin="in", args=["a", "b c"],
                     compile_timeout=10000, run_timeout=3000)  # fmt: skip
    run = result["run"]
    assert (run["stdout"], run["code"], run["status"]) == (expected, 0, None), result
    assert list(run) == ["signal", "stdout", "stderr", "code", "output", "memory", "message",
                         "status", "cpu_time", "wall_time"]  # fmt: skip
    assert result["language"] == language and result["version"].count(".") == 2
    compiled = language in ("c", "c++", "rust", "pascal")
    assert ("compile" in result) == compiled, result
    assert list(result)[-2:] == ["language", "version"]


def test_aliases_and_version_selectors(http):
    hello = [{"content": "print('hi')"}]
    for language, version in [
        ("py", "3.x"),
        ("python3", "3"),
        ("python", ">=3.8 <4"),
        ("py3", "^3.9"),
    ]:
        assert (
            execute(http, language=language, version=version, files=hello)["run"]["stdout"]
            == "hi\n"
        )
    for version in ("2.x", "4", "latest"):
        r = http.post(
            "/api/v2/execute", json={"language": "python", "version": version, "files": hello}
        )
        assert (r.status_code, r.json()) == (
            400,
            {"message": f"python-{version} runtime is unknown"},
        )


def test_statuses(http):
    run = execute(http, language="python", files=[{"content": "raise SystemExit(3)"}])["run"]
    assert (run["status"], run["code"], run["signal"], run["message"]) == (
        "RE", 3, None, "Exited with error status 3")  # fmt: skip
    run = execute(
        http, language="c", files=[{"content": "#include <stdlib.h>\nint main(void) { abort(); }"}]
    )["run"]
    assert (run["status"], run["code"], run["signal"], run["message"]) == (
        "SG", None, "SIGABRT", "Caught fatal signal 6")  # fmt: skip
    run = execute(
        http, language="python", files=[{"content": "import time\ntime.sleep(9)"}], run_timeout=500
    )["run"]
    assert (run["status"], run["code"], run["signal"], run["message"]) == (
        "TO", None, "SIGKILL", "Time limit exceeded (wall clock)")  # fmt: skip
    run = execute(
        http, language="c", files=[{"content": "int main(void) { for (;;); }"}], run_cpu_time=1000
    )["run"]
    assert (run["status"], run["signal"], run["message"]) == (
        "TO",
        "SIGKILL",
        "Time limit exceeded",
    )
    run = execute(http, language="python", files=[{"content": "while True: print('y' * 50)"}])[
        "run"
    ]
    assert (run["status"], run["signal"], run["message"]) == (
        "OL",
        "SIGKILL",
        "stdout length exceeded",
    )
    assert len(run["stdout"]) == 1024 and run["stdout"].startswith("y")
    run = execute(http, language="bash", files=[{"content": "while true; do echo e >&2; done"}])[
        "run"
    ]
    assert (run["status"], run["message"], len(run["stderr"])) == (
        "EL",
        "stderr length exceeded",
        1024,
    )


def test_a_failed_compile_is_also_the_run(http):
    result = execute(http, language="c", files=[{"content": "int main(void) { return x; }"}])
    assert result["compile"]["code"] == 1 and "error" in result["compile"]["stderr"]
    assert result["run"] == result["compile"]


def test_memory_limit_kills_the_program(http):
    code = "x = bytearray(400 * 1024 * 1024)\nprint('allocated')"
    run = execute(http, language="python", files=[{"content": code}], run_memory_limit=64_000_000)[
        "run"
    ]
    assert (run["status"], run["signal"], run["stdout"]) == ("SG", "SIGKILL", ""), run


def test_file_encodings_and_directories(http):
    files = [
        {
            "name": "main.py",
            "content": "print(open('data/b.bin', 'rb').read(), open('h.txt').read())",
        },
        {
            "name": "data/b.bin",
            "content": base64.b64encode(b"\x00\xff").decode(),
            "encoding": "base64",
        },
        {"name": "h.txt", "content": b"hex".hex(), "encoding": "hex"},
    ]
    assert execute(http, language="python", files=files)["run"]["stdout"] == "b'\\x00\\xff' hex\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "language is required as a string"),
        ({"language": 5}, "language is required as a string"),
        ({"language": "python"}, "version is required as a string"),
        ({"language": "python", "version": "*"}, "files is required as an array"),
        ({"language": "python", "version": "*", "files": "x"}, "files is required as an array"),
        (py(files=[{}]), "files[0].content is required as a string"),
        (py(files=[None]), "files[0].content is required as a string"),
        (py(language="html", version="5.0.0"), "html-5.0.0 runtime is unknown"),
        (py(files=[]), "files must include at least one utf8 encoded file"),
        (py(files=[{"content": "AA==", "encoding": "base64"}]),
         "files must include at least one utf8 encoded file"),
        (py(files=[{"content": "!", "encoding": "base64"}]),
         "files[0].content is not valid base64"),
        (py(files=[{"content": "", "name": "../../etc/x"}]),
         'File path "../../etc/x" tries to escape parent directory: ../../etc/x'),
        (py(run_timeout=5000), "run_timeout cannot exceed the configured limit of 3000"),
        (py(compile_cpu_time=10001),
         "compile_cpu_time cannot exceed the configured limit of 10000"),
        (py(run_timeout="1"), "run_timeout must be a number"),
        (py(args="ab"), "args must be an array of strings"),
        (py(stdin=5), "stdin must be a string"),
    ],
)  # fmt: skip
def test_bad_requests(http, body, message):
    r = http.post("/api/v2/execute", json=body)
    assert (r.status_code, r.json()) == (400, {"message": message})


def test_content_type_json_and_routes(http):
    body = json.dumps({"language": "python", "version": "*", "files": [{"content": "print(1)"}]})
    for headers in ({}, {"Content-Type": "text/plain"}, {"Content-Type": "Application/JSON"}):
        r = http.post("/api/v2/execute", content=body, headers=headers)
        assert (r.status_code, r.json()) == (
            415,
            {"message": "requests must be of type application/json"},
        )
    r = http.post("/api/v2/execute", content=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["message"].startswith("the body is not JSON")
    r = http.post("/api/v2/execute", content=b"x" * (1024 * 1024 + 1),
                  headers={"Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 413
    assert (http.get("/api/v2/packages").status_code, http.get("/api/v2/nothing").json()) == (
        404, {"message": "Not Found"})  # fmt: skip
    assert http.delete("/api/v2/packages").status_code == 415


# Piston's tests/ directory: exploits that must be contained
def test_fork_bomb_is_contained(server, http):
    code = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except Exception:\n        pass\n"
    )
    run = execute(http, language="python", files=[{"content": code}], run_timeout=2000)["run"]
    assert run["status"] == "TO" and run["signal"] == "SIGKILL", run
    assert (
        execute(http, language="bash", files=[{"content": "echo alive"}])["run"]["stdout"]
        == "alive\n"
    )


def test_fallocate_is_contained(http):
    code = "with open('beans', 'w') as f:\n    f.write('I love beans\\n' * 2**24)\n"
    run = execute(http, language="python", files=[{"content": code}])["run"]
    # 218 MB: the kernel's memory (256 MiB) or the file size limit stops it
    assert run["status"] in ("RE", "SG") and run["code"] != 0, run
    chunks = (
        "with open('beans', 'w') as f:\n    for _ in range(30):\n        f.write('x' * 10**6)\n"
    )
    run = execute(http, language="python", files=[{"content": chunks}])["run"]
    assert run["status"] == "RE" and "File too large" in run["stderr"], run


def test_runaway_output_is_contained(http):
    run = execute(http, language="bash", files=[{"content": "yes"}])["run"]
    assert (run["status"], run["message"], run["signal"], run["code"]) == (
        "OL", "stdout length exceeded", "SIGKILL", None)  # fmt: skip
    assert len(run["stdout"]) <= 1024


def test_network_is_unreachable(http):
    code = (
        "import urllib.request\ntry:\n    urllib.request.urlopen('http://1.1.1.1', timeout=2)\n"
        "except Exception as e:\n    print(type(e).__name__)\n"
    )
    run = execute(http, language="python", files=[{"content": code}])["run"]
    assert (run["status"], run["stdout"]) == (None, "URLError\n"), run


def test_nothing_persists_between_runs(http):
    code = (
        "import os\n"
        "paths = ('/dev/shm/bean', '/run/lock/bean', '/tmp/bean', '/var/tmp/bean', 'bean')\n"
        "for path in paths:\n"
        "    if os.path.exists(path): print(path, 'exists')\n"
        "for path in paths:\n"
        "    try:\n        open(path, 'w').write('1')\n    except OSError:\n        pass\n"
    )
    for _ in range(2):
        assert execute(http, language="python", files=[{"content": code}])["run"]["stdout"] == ""


# Five JVMs started at once take about 4 s of CPU: on two cores that are slow or
# busy, more than Piston's default 3 s of wall time per run. Piston's own
# multi-request test ran on bigger machines; its point is the outputs, not the time.
ROOMY = PISTON_ON + (
    "[piston]\ncompile_timeout_ms = 60000\ncompile_cpu_time_ms = 60000\n"
    "run_timeout_ms = 60000\nrun_cpu_time_ms = 60000\n"
)


@pytest.fixture(scope="module")
def roomy_server(tmp_path_factory):
    proc, server = start_server(str(tmp_path_factory.mktemp("piston-roomy")), config=ROOMY)
    yield server
    stop_server(proc)


def test_parallel_requests_each_get_their_own_output(roomy_server):
    before = steady(roomy_server)

    def one(i: int) -> dict:
        java = ('public class HelloWorld { public static void main(String[] args) {'
                f' System.out.print("Request #{i}"); }}}}')  # fmt: skip
        files = [{"name": "Test.java", "content": java}]
        with httpx.Client(base_url=roomy_server.endpoint, timeout=120) as http:
            return execute(http, language="java", files=files, stdin="", args=[],
                           compile_timeout=60000, run_timeout=60000)  # fmt: skip

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        results = list(pool.map(one, range(5)))
    assert [r["run"]["stdout"] for r in results] == [f"Request #{i}" for i in range(5)], results
    assert settle(roomy_server, before) == before  # every job's kernel is gone again


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    config = PISTON_ON + "[piston]\nkeyless_networks = []\n"
    proc, server = start_server(str(tmp_path_factory.mktemp("piston-keys")), config=config)
    yield server
    stop_server(proc)


def test_keys_outside_the_keyless_networks(keyed_server):
    body = {"language": "bash", "version": "*", "files": [{"content": "echo ok"}]}
    url = f"{keyed_server.endpoint}/api/v2/execute"
    r = httpx.post(url, json=body)
    assert (r.status_code, r.json()) == (403, {"message": "Missing API key"})
    r = httpx.post(url, json=body, headers={"Authorization": "wrong-key-123"})
    assert (r.status_code, r.json()) == (403, {"message": "Unknown API key"})
    out = subprocess.run(
        [sys.executable, "-m", "server.admin", "--data-dir", keyed_server.data_dir, "face-keys",
         "create", "--face", "piston", "--json"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    key = json.loads(out)["key"]
    for header in (key, f"Bearer {key}"):
        r = httpx.post(url, json=body, headers={"Authorization": header}, timeout=60)
        assert r.status_code == 200 and r.json()["run"]["stdout"] == "ok\n"
    r = httpx.get(f"{keyed_server.endpoint}/api/v2/runtimes")
    assert r.status_code == 403


def test_the_face_is_off_unless_enabled(api_server):
    assert httpx.get(f"{api_server.endpoint}/api/v2/runtimes").status_code == 404
