"""Piston's interactive socket (GET /api/v2/connect) through a real server: the
frames of a run, stdin while it runs, compile then run, and every close code."""

from __future__ import annotations

import json
import time

import pytest
from helpers.api_server import start_server, stop_server
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    proc, server = start_server(
        str(tmp_path_factory.mktemp("piston-ws")), config='[faces]\nenabled = ["piston"]\n'
    )
    yield server.endpoint.replace("http://", "ws://") + "/api/v2/connect"
    stop_server(proc)


def init(language: str, content: str, **fields: object) -> dict:
    return {"type": "init", "language": language, "version": "*",
            "files": [{"content": content}], **fields}  # fmt: skip


def session(url: str, frames: list[dict], on_run: list[dict] = ()) -> tuple[list[dict], int, str]:
    """Send `frames`, then `on_run` once the run stage starts; every frame received
    and the close code and reason."""
    received = []
    with connect(url, open_timeout=10) as ws:
        for frame in frames:
            ws.send(json.dumps(frame))
        try:
            while True:
                message = json.loads(ws.recv(timeout=30))
                received.append(message)
                if message == {"type": "stage", "stage": "run"}:
                    for frame in on_run:
                        ws.send(json.dumps(frame))
        except ConnectionClosed:
            pass
        return received, ws.close_code, ws.close_reason


def test_a_run_with_stdin_while_it_runs(url):
    frames, code, reason = session(
        url, [init("bash", "read x; echo got $x; echo err >&2; exit 4")],
        on_run=[{"type": "data", "stream": "stdin", "data": "Hello World!\n"}],
    )  # fmt: skip
    assert frames == [
        {"type": "runtime", "language": "bash", "version": frames[0]["version"]},
        {"type": "stage", "stage": "run"},
        {"type": "data", "stream": "stdout", "data": "got Hello World!\n"},
        {"type": "data", "stream": "stderr", "data": "err\n"},
        {"type": "exit", "stage": "run", "code": 4, "signal": None},
    ]
    assert (code, reason) == (4999, "Job Completed")


def test_output_comes_as_it_is_printed(url):
    code = "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.4)\n"
    arrivals = []
    with connect(url, open_timeout=10) as ws:
        ws.send(json.dumps(init("python", code)))
        with pytest.raises(ConnectionClosed):
            while True:
                message = json.loads(ws.recv(timeout=30))
                if message["type"] == "data":
                    arrivals.append((time.monotonic(), message["data"]))
    assert "".join(text for _, text in arrivals) == "0\n1\n2\n"
    assert arrivals[-1][0] - arrivals[0][0] > 0.5  # not all at the end


def test_compile_then_run_and_a_failed_compile(url):
    program = (
        '#include <stdio.h>\nint main(void) { char s[9]; scanf("%8s", s); printf("C %s\\n", s); }'
    )
    stdin = {"type": "data", "stream": "stdin", "data": "in\n"}
    frames, code, _ = session(url, [init("c", program)], on_run=[stdin])
    kinds = [(f["type"], f.get("stage")) for f in frames]
    assert kinds == [("runtime", None), ("stage", "compile"), ("exit", "compile"),
                     ("stage", "run"), ("data", None), ("exit", "run")]  # fmt: skip
    assert frames[4]["data"] == "C in\n" and frames[-1]["code"] == 0 and code == 4999
    frames, code, _ = session(url, [init("c", "int main(void) { return x; }")])
    assert [f["type"] for f in frames[:2]] == ["runtime", "stage"]
    assert frames[-1]["type"] == "exit" and frames[-1]["stage"] == "compile"
    assert frames[-1]["code"] == 1 and code == 4999  # no run stage


def test_timeout_and_kill(url):
    frames, code, _ = session(
        url, [init("python", "import time\ntime.sleep(30)", run_timeout=1000)]
    )
    assert frames[-1] == {"type": "exit", "stage": "run", "code": None, "signal": "SIGKILL"}
    frames, code, _ = session(url, [init("python", "import time\ntime.sleep(30)")],
                              on_run=[{"type": "signal", "signal": "SIGKILL"}])  # fmt: skip
    assert frames[-1] == {"type": "exit", "stage": "run", "code": None, "signal": "SIGKILL"}
    assert code == 4999


@pytest.mark.parametrize(
    ("frames", "on_run", "code", "reason"),
    [
        ([], [], 4001, "Initialization Timeout"),
        ([{"type": "data", "stream": "stdin", "data": "x"}], [], 4003, "Not yet initialized"),
        ([{"type": "signal", "signal": "SIGINT"}], [], 4003, "Not yet initialized"),
        ([init("bash", "sleep 5")], [init("bash", "true")], 4000, "Already Initialized"),
        ([init("bash", "sleep 5")], [{"type": "data", "stream": "stdout", "data": "x"}],
         4004, "Can only write to stdin"),
        ([init("bash", "sleep 5")], [{"type": "signal", "signal": "SIGNOPE"}],
         4005, "Invalid signal"),
        ([init("bash", "sleep 5")], [{"type": "signal", "signal": 9}], 4005, "Invalid signal"),
    ],
)  # fmt: skip
def test_close_codes(url, frames, on_run, code, reason):
    _, got_code, got_reason = session(url, frames, on_run)
    assert (got_code, got_reason) == (code, reason)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (init("nope", ""), "nope-* runtime is unknown"),
        ({"type": "init", "language": "bash"}, "version is required as a string"),
        (init("bash", "", run_timeout=99999),
         "run_timeout cannot exceed the configured limit of 3000"),
    ],
)  # fmt: skip
def test_a_bad_init_is_an_error_frame_then_4002(url, frame, message):
    frames, code, reason = session(url, [frame])
    assert frames == [{"type": "error", "message": message}]
    assert (code, reason) == (4002, "Notified Error")


def test_a_non_json_frame_is_an_error_then_4002(url):
    with connect(url, open_timeout=10) as ws:
        ws.send("{nope")
        assert json.loads(ws.recv(timeout=10))["type"] == "error"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 4002
