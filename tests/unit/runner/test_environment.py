"""forking.set_environment: os.environ and the C environment become exactly what is
wanted, and what is already right is not written again (in a fresh fork each
write copies a page)."""

from __future__ import annotations

import os
import subprocess

from sandbox.runner.forking import set_environment


def test_environment_becomes_exactly_the_wanted_one():
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update({"KEEP": "same", "CHANGE": "old", "DROP": "x"})
        kept = os.environ._data[b"KEEP"]  # type: ignore[attr-defined]
        set_environment({"KEEP": "same", "CHANGE": "new", "ADD": "1"})
        assert dict(os.environ) == {"KEEP": "same", "CHANGE": "new", "ADD": "1"}
        assert os.environ._data[b"KEEP"] is kept  # type: ignore[attr-defined]
        seen = subprocess.run(["/usr/bin/env"], capture_output=True, env=None, check=True)
        lines = seen.stdout.decode().splitlines()  # the C environment, as a child gets it
        assert {"ADD=1", "CHANGE=new", "KEEP=same"} <= set(lines)
        assert not [line for line in lines if line.startswith(("DROP=", "CHANGE=old"))]
    finally:
        os.environ.clear()
        os.environ.update(saved)
