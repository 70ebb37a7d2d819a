"""The zygote's pre-import (sandbox/preimport.py) on a real server: python3 kernels
start with numpy, pandas and matplotlib.pyplot imported, as they would import them
themselves (our backend, caches under /tmp, one BLAS thread); the spawner stays a
single thread and writes nothing on the host; `preimport = ""` and
SANDBOX_PREIMPORT turn it off."""

from __future__ import annotations

import os

import psutil
import pytest
from helpers.api_server import spawner_pid, start_server, stop_server
from helpers.jobe import Jobe

PROBE = """
import sys
print(sorted(m for m in ("numpy", "pandas", "matplotlib.pyplot") if m in sys.modules))
"""
AS_IMPORTED = """
import matplotlib, numpy
print(matplotlib.get_backend(), matplotlib.get_cachedir(), matplotlib.get_configdir())
print(numpy.__file__.startswith("/usr/lib/python3/"))
"""


def stdout_of(api, kid: str, code: str) -> str:
    results = api.run(kid, code)
    assert results[-1]["status"] == "finished", results
    return "".join(t for r in results for k, t in r["console"] if k in ("stdout", "stderr"))


@pytest.fixture
def kid(api):
    kernel_id = api.create().json()["kernelId"]
    yield kernel_id
    api.request("DELETE", f"/v2/kernel/{kernel_id}")


def test_kernels_start_with_the_stack_imported_as_they_would_import_it(api_server, api, kid):
    assert stdout_of(api, kid, PROBE) == "['matplotlib.pyplot', 'numpy', 'pandas']\n"
    backend, cachedir, configdir, numpy_from_usr = stdout_of(api, kid, AS_IMPORTED).split()
    assert backend == "module://sandbox_matplotlib"
    assert cachedir == configdir == "/tmp/matplotlib"
    assert numpy_from_usr == "True"
    spawner = psutil.Process(spawner_pid(api_server.pid))
    assert spawner.num_threads() == 1, "the spawner must stay single-threaded to fork"
    assert not os.path.exists("/tmp/matplotlib"), "the pre-import wrote on the host's /tmp"


@pytest.mark.parametrize("how", ["config", "environment"])
def test_preimport_can_be_turned_off(tmp_path, how):
    config, env = ('[sandbox]\npreimport = ""\n', None) if how == "config" else (None, {})
    if how == "environment":
        env = {"SANDBOX_PREIMPORT": ""}
    proc, server = start_server(str(tmp_path / "data"), config=config, env=env)
    try:
        api = server.client()
        kid = api.create().json()["kernelId"]
        assert stdout_of(api, kid, PROBE) == "[]\n"
        assert stdout_of(api, kid, "import numpy; print(numpy.eye(2).sum())") == "2.0\n"
    finally:
        stop_server(proc)


RUNNER_SIZE = "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"


@pytest.mark.parametrize("jobs_too", [False, True])
def test_jobs_and_other_languages_come_from_the_lean_zygote(tmp_path, jobs_too):
    """A Jobe python3 run starts without the pre-imported modules unless
    preimport_jobs says so, and a bash kernel's runner is the lean zygote's too: a
    fraction of a python3 kernel's runner (both measured in the same server)."""
    config = '[faces]\nenabled = ["jobe"]\n'
    if jobs_too:
        config += "[sandbox]\npreimport_jobs = true\n"
    proc, server = start_server(str(tmp_path / "data"), config=config)
    try:
        jobe = Jobe(server.endpoint)
        for _ in range(2):  # a cold kernel, then one from the pool
            run = jobe.run(language_id="python3", sourcecode=PROBE, sourcefilename="t.py")
            assert run["outcome"] == 15, run
            assert run["stdout"] == (
                "['matplotlib.pyplot', 'numpy', 'pandas']\n" if jobs_too else "[]\n"
            )
        api = server.client()
        python = api.create().json()["kernelId"]
        assert stdout_of(api, python, PROBE) == "['matplotlib.pyplot', 'numpy', 'pandas']\n"
        python_rss = int(stdout_of(api, python, RUNNER_SIZE))  # kB: the runner itself
        shell = api.create(lang="bash").json()["kernelId"]
        bash_runner_rss = int(stdout_of(api, shell, "grep VmRSS /proc/$PPID/status").split()[1])
        assert bash_runner_rss * 2 < python_rss, (bash_runner_rss, python_rss)
    finally:
        stop_server(proc)
