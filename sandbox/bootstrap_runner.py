"""The runner's first steps, in the process a spare's pid 1 forked to be the
kernel's runner, before it runs `sandbox.runner.main`.

Pid 1 forks the runner before it has a kernel (sandbox.spare), and before
either has dropped privileges, so the runner does its own part of pid 1's
setup (sandbox.pid1) once pid 1's start frame says it may: forget the host's
modules, drop to the kernel's uid, install seccomp, take the kernel's
environment. This is host code (it imports prctl and the host's syscalls), so
it lives outside sandbox/runner/, which meets the host only through the wire
protocol; and its name does not start with "runner", so that the runner's
forgetting of the host (sandbox.host_modules) drops it too.
"""

from __future__ import annotations

import os

import prctl

from . import privileges, syscalls
from .host_modules import forget_host
from .kernel_inputs import Environment
from .runner import forking, protocol
from .runner import main as runner_main
from .spec import WORK_DIR


def main(env: Environment, fd: int) -> None:
    """Runs in the runner, fds 0-3 set up: pid 1's setup for the runner's own sake
    (pid 1 may have forked it before it had a kernel), once pid 1's start frame
    has come; then the runner."""
    prctl.set_name("kernel-runner")
    syscalls.set_cmdline("kernel-runner", env.argv_area)
    forget_host(env.host_modules)
    try:
        start, _blob = protocol.read_frame(fd)
    except EOFError:
        os._exit(0)  # pid 1 is gone (a spare discarded)
    os.umask(0o022)
    uid = start["uid"]
    privileges.drop_privileges(uid, uid, privileges.Rlimits(**start["rlimits"]))
    syscalls.seccomp_install(env.filter)
    forking.set_environment(start["env"])
    os.chdir(WORK_DIR)
    runner_main.serve(fd)
