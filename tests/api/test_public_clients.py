"""The public, unmodified Python clients against a real server (spec §10).

`sorna-client==0.9.8` (X-Sorna-* headers, `Sorna` auth) and `backend.ai-client==1.0.0`
(X-BackendAI-* headers, `BackendAI` auth) live in their own venv, .venv-clients
(scripts/setup-clients). Each test writes a small script that uses a client's
synchronous `Kernel` API, runs it with that venv's Python in a subprocess configured
only through the clients' environment variables, and checks the JSON it prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap

import pytest
from helpers.multipart import multipart

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.path.join(ROOT, ".venv-clients")
PYTHON = os.path.join(VENV, "bin", "python")
# bin/lpython is sorna-client's (scripts/setup-clients installs it last: both packages
# declare an `lpython` console script). backend.ai-client's is started the way its own
# console script would start it: argv[0] named lpython, then its cli.main().
LPYTHON = {
    "sorna": [os.path.join(VENV, "bin", "lpython")],
    "backend.ai": [
        PYTHON,
        "-c",
        "import sys; sys.argv[0] = 'lpython'; "
        "from ai.backend.client.cli import main; sys.exit(main())",
    ],
}
CLIENTS = ["sorna", "backend.ai"]
TIMEOUT = 120

if not os.path.exists(PYTHON):
    pytest.skip(
        ".venv-clients is missing: run ./scripts/setup (it calls ./scripts/setup-clients)",
        allow_module_level=True,
    )

# Runs inside .venv-clients. sys.argv[1] names the client. Everything a test needs
# goes into `out`, printed as one JSON line after RESULT_MARK.
PRELUDE = '''
import json, sys, traceback

CLIENT = sys.argv[1]
if CLIENT == "sorna":
    from sorna.kernel import Kernel
    from sorna.exceptions import SornaError as ClientError
else:
    from ai.backend.client.kernel import Kernel
    from ai.backend.client.exceptions import BackendError as ClientError

_kernels = []


def create(lang="python3", token=None):
    kernel = Kernel.get_or_create(lang, token)
    _kernels.append(kernel)
    return kernel


def run(kernel, code, mode="query", opts=None, inputs=()):
    """The CLI's exec_loop, gathering instead of printing: "" on continued, the next
    input line on waiting-input, the same call again on build-finished."""
    inputs = list(inputs)
    statuses, console, results = [], [], []
    for _ in range(300):
        result = kernel.execute(code, mode=mode, opts=opts if opts is not None else {})
        results.append(result)
        statuses.append(result["status"])
        console.extend(result["console"])
        if result["status"] == "finished":
            break
        if result["status"] == "waiting-input":
            code = inputs.pop(0)
        elif result["status"] == "continued":
            code = ""
        elif result["status"] != "build-finished":
            break
    return {
        "statuses": statuses,
        "stdout": "".join(text for kind, text in console if kind == "stdout"),
        "stderr": "".join(text for kind, text in console if kind == "stderr"),
        "console": console,
        "results": results,
    }


def api_error(call):
    """Call; return the client's exception as data (both clients raise BaseException
    subclasses whose args are (status, reason, body))."""
    try:
        call()
    except ClientError as e:
        return {"error": type(e).__name__, "args": [a if isinstance(a, (int, str, dict))
                                                    else str(a) for a in e.args]}
    return None


out = {}
try:
'''

EPILOGUE = """
finally:
    for _k in _kernels:
        if not getattr(_k, "_gone", False):
            try:
                _k.destroy()
            except BaseException:
                pass
print("RESULT:" + json.dumps(out))
"""


def client_env(api_server, client: str, **overrides: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SORNA_", "BACKEND_")) and "proxy" not in k.lower()
    }
    # backend.ai-client 1.0.0 reads SORNA_* first, then BACKEND_*: give it only the
    # latter so its own names are the ones exercised.
    prefix = "SORNA_" if client == "sorna" else "BACKEND_"
    env[prefix + "ENDPOINT"] = overrides.get("endpoint", api_server.endpoint)
    env[prefix + "ACCESS_KEY"] = overrides.get("access_key", api_server.access_key)
    env[prefix + "SECRET_KEY"] = overrides.get("secret_key", api_server.secret_key)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_script(api_server, client: str, body: str, cwd, **env_overrides: str) -> dict:
    script = PRELUDE + textwrap.indent(textwrap.dedent(body).strip() + "\n", "    ") + EPILOGUE
    path = os.path.join(str(cwd), "client_script.py")
    with open(path, "w") as f:
        f.write(script)
    proc = subprocess.run(
        [PYTHON, path, client],
        cwd=str(cwd),
        env=client_env(api_server, client, **env_overrides),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    marks = [line for line in proc.stdout.splitlines() if line.startswith("RESULT:")]
    assert proc.returncode == 0 and marks, (
        f"client script failed (exit {proc.returncode})\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )
    return json.loads(marks[-1][len("RESULT:") :])


@pytest.fixture(params=CLIENTS)
def client(request) -> str:
    return request.param


def test_get_or_create(api_server, client, tmp_path):
    out = run_script(
        api_server,
        client,
        """
        token = "public-client-" + CLIENT.replace(".", "-")
        first = create("python3", token)
        again = Kernel.get_or_create("python3", token)
        anonymous = create("python3")
        out["first"] = first.kernel_id
        out["again"] = again.kernel_id
        out["anonymous"] = anonymous.kernel_id
        """,
        tmp_path,
    )
    assert isinstance(out["first"], str) and out["first"]
    assert out["again"] == out["first"]  # same token: the same session comes back
    assert out["anonymous"] != out["first"]


def test_execute_continued_chunks(api_server, client, tmp_path):
    out = run_script(
        api_server,
        client,
        """
        kernel = create()
        out["run"] = run(kernel, (
            "import time\\n"
            "for i in range(4):\\n"
            "    print('tick', i, flush=True)\\n"
            "    time.sleep(1)\\n"
            "print('done')\\n"
        ))
        out["after"] = run(kernel, "print(6 * 7)")
        """,
        tmp_path,
    )
    run = out["run"]
    assert run["stdout"] == "tick 0\ntick 1\ntick 2\ntick 3\ndone\n"
    assert run["statuses"][-1] == "finished"
    assert "continued" in run["statuses"], run["statuses"]
    assert set(run["statuses"][:-1]) == {"continued"}
    for result in run["results"]:
        assert set(result) >= {"status", "console", "options", "files"}
    assert out["after"]["stdout"] == "42\n"
    assert out["after"]["statuses"] == ["finished"]


def test_input_through_waiting_input(api_server, client, tmp_path):
    out = run_script(
        api_server,
        client,
        """
        kernel = create()
        out["run"] = run(kernel, "name = input('Who? ')\\nprint('Hi,', name)",
                         inputs=["Alice"])
        """,
        tmp_path,
    )
    run = out["run"]
    assert "waiting-input" in run["statuses"], run["statuses"]
    waiting = run["results"][run["statuses"].index("waiting-input")]
    assert waiting["options"].get("is_password") is False
    assert run["statuses"][-1] == "finished"
    assert run["stdout"] == "Who? Hi, Alice\n"


def test_exception_goes_to_stderr(api_server, client, tmp_path):
    out = run_script(
        api_server,
        client,
        """
        kernel = create()
        out["run"] = run(kernel, "print('before')\\nraise ValueError('boom')")
        out["after"] = run(kernel, "print('still alive')")
        """,
        tmp_path,
    )
    run = out["run"]
    assert run["statuses"][-1] == "finished"
    assert run["stdout"] == "before\n"
    assert "Traceback" in run["stderr"]
    assert "ValueError: boom" in run["stderr"]
    assert out["after"]["stdout"] == "still alive\n"


def test_get_info(api_server, client, tmp_path):
    out = run_script(
        api_server,
        client,
        """
        kernel = create()
        run(kernel, "x = 1")
        out["info"] = kernel.get_info()
        """,
        tmp_path,
    )
    info = out["info"]
    expected = {"lang", "age", "numQueriesExecuted", "memoryLimit", "queryTimeout", "idle"}
    assert expected <= set(info), info
    assert info["lang"] == "python3"
    assert info["age"] >= 0
    assert info["numQueriesExecuted"] >= 1


def test_restart_loses_state(api_server, client, tmp_path):
    out = run_script(
        api_server,
        client,
        """
        kernel = create()
        out["before"] = run(kernel, "remembered = 'yes'\\nprint(remembered)")
        kernel.restart()
        out["after"] = run(kernel, "print(remembered)")
        out["fresh"] = run(kernel, "print('works')")
        """,
        tmp_path,
    )
    assert out["before"]["stdout"] == "yes\n"
    assert out["after"]["statuses"][-1] == "finished"
    assert "NameError" in out["after"]["stderr"]
    assert out["fresh"]["stdout"] == "works\n"


def test_destroy(api_server, client, tmp_path):
    out = run_script(
        api_server,
        client,
        """
        kernel = create()
        run(kernel, "print(1)")
        kernel.destroy()
        kernel._gone = True
        out["info_after"] = api_error(kernel.get_info)
        out["execute_after"] = api_error(lambda: kernel.execute("print(1)"))
        """,
        tmp_path,
    )
    for key in ("info_after", "execute_after"):
        error = out[key]
        assert error is not None, f"{key}: the destroyed kernel still answered"
        assert error["args"][0] == 404


def test_api_errors(api_server, client, tmp_path):
    """Non-2xx answers become the client's exception; backend.ai-client json.loads the
    body, so an error body that is not JSON would crash it with a JSONDecodeError."""
    out = run_script(
        api_server,
        client,
        """
        out["unknown"] = api_error(Kernel("no-such-kernel-id").get_info)
        """,
        tmp_path,
    )
    assert out["unknown"]["args"][0] == 404
    if client == "backend.ai":
        assert out["unknown"]["args"][2]["type"].endswith("kernel-not-found")
    else:
        assert "kernel-not-found" in out["unknown"]["args"][2]

    out = run_script(
        api_server,
        client,
        """
        out["bad_key"] = api_error(lambda: Kernel.get_or_create("python3"))
        """,
        tmp_path,
        secret_key="not-the-secret-key",
    )
    assert out["bad_key"]["args"][0] == 401


def test_upload_then_batch(api_server, client, tmp_path):
    (tmp_path / "main.py").write_text(
        "import sys\nprint(open('data/input.txt').read(), end='')\n"
        "print('to stderr', file=sys.stderr)\n"
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "input.txt").write_text("hello from an uploaded file\nline two\n")
    out = run_script(
        api_server,
        client,
        """
        kernel = create()
        resp = kernel.upload(["main.py", "data/input.txt"])
        out["upload"] = [resp.status, resp.text()]  # upload() returns the raw Response
        if resp.status // 100 == 2:
            out["run"] = run(kernel, "", mode="batch",
                             opts={"build": "", "exec": "python3 main.py"})
        """,
        tmp_path,
    )
    assert out["upload"][0] // 100 == 2, out["upload"]
    run = out["run"]
    assert "build-finished" in run["statuses"], run["statuses"]
    assert run["statuses"][-1] == "finished"
    assert run["stdout"] == "hello from an uploaded file\nline two\n"
    assert run["stderr"] == "to stderr\n"


def run_lpython(api_server, client: str, args: list[str], cwd, stdin: str = ""):
    proc = subprocess.run(
        LPYTHON[client] + args,
        cwd=str(cwd),
        env=client_env(api_server, client),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    # The CLI catches everything and exits 0; its failures show on stderr (and a
    # failed upload's HTTP answer on stdout).
    shown = f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    assert proc.returncode == 0, shown
    assert "failed" not in proc.stderr.lower(), shown
    assert "Traceback" not in proc.stderr, shown
    assert "Cleaned up the kernel." in proc.stderr, shown
    return proc


def test_lpython_snippet(api_server, client, tmp_path):
    proc = run_lpython(api_server, client, ["-c", "print(6 * 7)"], tmp_path)
    assert proc.stdout == "42\n"
    # the CLI reads input() lines from its own stdin on waiting-input
    proc = run_lpython(
        api_server, client, ["-c", "name = input('Who? '); print('Hi,', name)"], tmp_path, "Bob\n"
    )
    assert proc.stdout == "Who? Hi, Bob\n"


def test_lpython_files(api_server, client, tmp_path):
    (tmp_path / "main.py").write_text("print(open('data.txt').read().upper(), end='')\n")
    (tmp_path / "data.txt").write_text("from a file\n")
    # No -b/-e: the CLI sends build "*" and exec "*" (python: run main.py).
    proc = run_lpython(api_server, client, ["main.py", "data.txt"], tmp_path)
    assert proc.stdout == "FROM A FILE\n"
    assert "Uploading done." in proc.stderr
    assert "Build finished." in proc.stderr


# sorna-client's `lcc` is its CLI with `run c` put in front of the arguments (main()
# picks the mode from argv[0]): `lcc main.c` uploads main.c and runs a batch with
# build "*" (gcc every .c file into ./main) and exec "*" (run ./main).
LCC = os.path.join(VENV, "bin", "lcc")


def run_lcc(api_server, args: list[str], cwd) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [LCC, *args],
        cwd=str(cwd),
        env=client_env(api_server, "sorna"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    shown = f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    assert proc.returncode == 0, shown
    assert "Traceback" not in proc.stderr, shown
    assert "Execution failed!" not in proc.stderr, shown
    assert "Uploading done." in proc.stderr, shown
    assert "Cleaned up the kernel." in proc.stderr, shown
    return proc


def test_lcc_builds_and_runs_a_c_file(api_server, tmp_path):
    (tmp_path / "main.c").write_text(
        "#include <stdio.h>\n"
        "\n"
        "int main(void) {\n"
        "    int sum = 0;\n"
        "    for (int i = 1; i <= 100; i++)\n"
        "        sum += i;\n"
        '    printf("hello from C\\n");\n'
        '    printf("sum=%d\\n", sum);\n'
        "    return 0;\n"
        "}\n"
    )
    proc = run_lcc(api_server, ["main.c"], tmp_path)
    shown = f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    assert proc.stdout == "hello from C\nsum=5050\n", shown
    assert "Build finished." in proc.stderr, shown
    assert "error" not in proc.stderr.lower(), shown


def test_lcc_shows_a_compile_error(api_server, tmp_path):
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n\nint main(void) {\n    printf("hello from C\\n")\n    return 0;\n}\n'
    )
    proc = run_lcc(api_server, ["main.c"], tmp_path)
    output = proc.stdout + proc.stderr
    shown = f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    assert "main.c:4" in output, shown  # gcc's diagnostic names the file and line
    assert "error:" in output, shown
    assert "expected ';'" in output.replace("\u2018", "'").replace("\u2019", "'"), shown
    assert "hello" not in proc.stdout, shown


def test_sorna_mounts_folders_with_an_alias(api_server, tmp_path):
    """sorna-client 0.9.8's `mounts` (top-level, DOC-v2): `name` and `name:alias`."""
    api = api_server.client()  # the key the client scripts use
    for name, text in (("data", b"from data\n"), ("lib", b"from lib\n")):
        assert api.request("POST", "/v2/folders", {"name": name}).status_code == 201
        body, ctype = multipart([("file.txt", text)])
        r = api.request("POST", f"/v2/folders/{name}/upload", raw=body, content_type=ctype)
        assert r.status_code == 201
    try:
        out = run_script(
            api_server,
            "sorna",
            """
            kernel = Kernel.get_or_create("python3", mounts=["data", "lib:pkgs"])
            _kernels.append(kernel)
            code = "print(open('data/file.txt').read() + open('pkgs/file.txt').read(), end='')"
            out["stdout"] = run(kernel, code)["stdout"]
            """,
            tmp_path,
        )
        assert out["stdout"] == "from data\nfrom lib\n"
    finally:
        for name in ("data", "lib"):
            api.request("DELETE", f"/v2/folders/{name}")
