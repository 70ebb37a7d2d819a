"""`sandbox-exec`: the command-line face of the isolation library."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers.harness import HAS_CGROUPS

from sandbox.kernel_uids import DEFAULT_RANGE

pytestmark = pytest.mark.cgroups

SANDBOX_EXEC = [sys.executable, "-m", "sandbox.exec_cli"]


def sandbox_exec(*args: str, stdin: str | None = None, timeout: float = 60):
    return subprocess.run(
        [*SANDBOX_EXEC, *args], input=stdin, capture_output=True, text=True, timeout=timeout
    )


def test_prints_python_output():
    r = sandbox_exec("--", "python3", "-c", "print(1)")
    assert (r.returncode, r.stdout, r.stderr) == (0, "1\n", "")


def test_exit_status_propagates():
    assert sandbox_exec("--", "sh", "-c", "exit 7").returncode == 7


def test_signal_becomes_128_plus_signal():
    assert sandbox_exec("--", "sh", "-c", "kill -TERM $$").returncode == 128 + 15


def test_stdin_passes_through():
    r = sandbox_exec("--", "cat", stdin="hello from stdin\n")
    assert r.stdout == "hello from stdin\n"


def test_lang_prepares_that_languages_environment():
    r = sandbox_exec("--lang", "golang", "--", "sh", "-c", "echo $GOCACHE")
    assert r.stdout == "/tmp/.cache/go-build\n", r.stderr


def test_runs_jailed():
    r = sandbox_exec(
        "--", "sh", "-c", "id -u; hostname; ls /proc | grep -c '^[0-9]'; cat /etc/shadow"
    )
    lines = r.stdout.split()
    assert int(lines[0]) in DEFAULT_RANGE and lines[1] == "sandbox"
    assert int(lines[2]) < 6
    assert r.returncode != 0  # no /etc/shadow in the jail


def test_wall_time_limit_kills_and_says_so():
    r = sandbox_exec("--wall-time", "1", "--", "sleep", "30", timeout=20)
    assert r.returncode == 128 + 9
    assert "wall time limit of 1 s exceeded" in r.stderr


def test_memory_limit_kills_and_says_so():
    r = sandbox_exec("--mem", "64M", "--", "python3", "-c", "x = b'x' * (256 << 20)")
    if not HAS_CGROUPS:  # RLIMIT_AS: the allocation fails instead of an OOM kill
        assert r.returncode == 1 and "MemoryError" in r.stderr
        return
    assert r.returncode == 128 + 9
    assert "out of memory" in r.stderr


def test_cpu_time_limit_says_so():
    r = sandbox_exec("--cpu-time", "1", "--", "python3", "-c", "while True: pass", timeout=30)
    assert r.returncode in (128 + 24, 128 + 9)  # SIGXCPU, then SIGKILL at the hard limit
    assert "CPU time limit" in r.stderr


def test_bind_read_only(tmp_path):
    (tmp_path / "data.txt").write_text("shared data\n")
    tmp_path.chmod(0o755)  # the kernel runs as uid 1000
    r = sandbox_exec(
        "--bind", f"{tmp_path}:/data:ro", "--", "sh", "-c", "cat /data/data.txt; touch /data/x"
    )
    assert r.stdout == "shared data\n"
    assert r.returncode != 0
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--mem", "lots", "--", "true"],
        ["--pids", "-1", "--", "true"],
        ["--bind", "nocolon", "--", "true"],
        [],
    ],
)
def test_bad_arguments_are_usage_errors(args):
    r = sandbox_exec(*args)
    assert r.returncode == 2
    assert "usage:" in r.stderr and "Traceback" not in r.stderr


def test_missing_command_is_127():
    r = sandbox_exec("--", "/no/such/program")
    assert r.returncode == 127
    assert "/no/such/program" in r.stderr


def test_needs_no_c_compiler(tmp_path):
    """Exec mode runs the command itself as pid 1: kernel-init, which only server
    mode execs, is neither built nor looked for (a host without cc runs it)."""
    cache = tmp_path / "cache"
    env = {"PATH": str(tmp_path), "XDG_CACHE_HOME": str(cache)}  # no cc on this PATH
    r = subprocess.run(
        [*SANDBOX_EXEC, "--", "/bin/echo", "hi"], capture_output=True, text=True, env=env
    )
    assert (r.returncode, r.stdout, r.stderr) == (0, "hi\n", "")
    assert not cache.exists()


def _exec_leftovers() -> set[str]:
    found = {f"/tmp/{d}" for d in os.listdir("/tmp") if d.startswith("sandbox-exec-")}
    for root, dirs, _files in os.walk("/sys/fs/cgroup"):
        found |= {os.path.join(root, d) for d in dirs if d.startswith("exec-")}
    return found


def test_leaves_no_cgroup_or_scratch():
    before = _exec_leftovers()
    assert sandbox_exec("--", "sh", "-c", "sleep 100 & echo started").stdout == "started\n"
    assert _exec_leftovers() == before


def test_layout_none_falls_back_to_rlimits(monkeypatch):
    """No cgroups: memory is limited per process by RLIMIT_AS (the documented weaker
    guarantee) and the pid namespace still takes every process down with the command."""
    monkeypatch.setenv("SANDBOX_CGROUP_LAYOUT", "none")
    r = sandbox_exec("--mem", "64M", "--", "python3", "-c", "x = b'x' * (256 << 20)")
    assert r.returncode == 1 and "MemoryError" in r.stderr
    r = sandbox_exec("--", "sh", "-c", "sleep 1000 & echo $!")
    assert r.returncode == 0
    leftover = subprocess.run(["pgrep", "-x", "-f", "sleep 1000"], capture_output=True)
    assert leftover.returncode == 1, leftover.stdout
