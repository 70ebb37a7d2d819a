"""sorna-client 0.9.8's terminal, `AsyncKernel.stream_pty()`, unmodified, against a
real server.

Its async API needs Python 3.6 and aiohttp 2.2.5, so it lives in a venv of its own,
.venv-clients-async (scripts/setup-clients builds it where pyenv has a 3.6). The
script below runs with that venv's Python, configured only through the client's
environment variables. The client opens the terminal without signing it (its
connect_websocket sends no Authorization header), which the server lets in from
loopback by default (`[v2] unsigned_terminal`).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON = os.path.join(ROOT, ".venv-clients-async", "bin", "python")
TIMEOUT = 120

if not os.path.exists(PYTHON):
    pytest.skip(
        ".venv-clients-async is missing: run ./scripts/setup-clients "
        "(it needs a Python 3.6 under pyenv)",
        allow_module_level=True,
    )

# Types commands, reads `out` frames until each command's marker, resizes, restarts
# the kernel through the terminal, and prints what it saw as one JSON line.
SCRIPT = r"""
import asyncio, base64, json, sys
import aiohttp
from sorna.asyncio.kernel import AsyncKernel

seen = b""


async def until(stream, marker):
    global seen
    while marker.encode() not in seen:
        msg = await asyncio.wait_for(stream.__anext__(), 30)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        frame = json.loads(msg.data)
        assert frame["type"] == "out", frame
        seen += base64.b64decode(frame["data"])
    head, _, seen = seen.partition(marker.encode())
    return head.decode(errors="replace")


def type_line(stream, line):
    chars = base64.b64encode(line.encode()).decode()
    stream.send_str(json.dumps({"type": "stdin", "chars": chars}))


async def main():
    kernel = await AsyncKernel.get_or_create("python3")
    stream = await kernel.stream_pty()
    out = {}
    type_line(stream, "echo $((6 * 7))-$(whoami)-$PWD'<'DONE'>'\n")
    out["echo"] = (await until(stream, "<DONE>")).splitlines()[-1]
    stream.resize(33, 111)
    type_line(stream, "echo size=$(stty size)'<'DONE'>'\n")
    out["size"] = (await until(stream, "<DONE>")).splitlines()[-1]
    stream.restart()
    type_line(stream, "echo after-restart'<'DONE'>'\n")
    out["restart"] = (await until(stream, "<DONE>")).splitlines()[-1]
    await stream.close()
    out["closed"] = stream.closed
    info = await kernel.get_info()
    out["alive"] = info.get("lang")
    await kernel.destroy()
    print("RESULT:" + json.dumps(out))


asyncio.get_event_loop().run_until_complete(main())
"""


def test_sorna_client_098_stream_pty(api_server, tmp_path):
    path = tmp_path / "pty_client.py"
    path.write_text(SCRIPT)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "SORNA_ENDPOINT": api_server.endpoint,
        "SORNA_ACCESS_KEY": api_server.access_key,
        "SORNA_SECRET_KEY": api_server.secret_key,
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    proc = subprocess.run(
        [PYTHON, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=TIMEOUT,
    )  # fmt: skip
    marks = [line for line in proc.stdout.splitlines() if line.startswith("RESULT:")]
    assert proc.returncode == 0 and marks, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    out = json.loads(marks[-1][len("RESULT:") :])
    assert out["echo"].endswith("42-work-/home/work"), out
    assert out["size"].endswith("size=33 111"), out
    assert out["restart"].endswith("after-restart"), out
    assert out["closed"] is True and out["alive"] == "python3", out
