"""Pid 1's setup: what the process that becomes a kernel's pid 1 does before it
execs the kernel's program.

Pid 1 is the first process in the kernel's new namespaces and still holds the
caller's privileges, so everything that needs both happens here, in the
isolation recipe's order (docs/architecture.md), before anything of the kernel's runs:

    exec mode (`exec_mode_main`, forked by sandbox.kernel_start)
        setsid, keep only its fds, unshare mount/net/ipc/uts; then `become_kernel`:
        build the root and pivot into it, bring up lo, set the hostname; wait
        until the caller has moved it into its cgroup (done meanwhile: slow on
        cgroup v1), unshare the cgroup namespace; drop to the kernel's uid,
        install seccomp, fork the command and wait for it (forking.run_as_pid1)
    server mode (`become_kernel`, in a spare: sandbox.spare)
        with its cgroup, namespaces, lo, hostname, most of its root and its
        runner made ahead: finish the root, send the runner its start frame,
        drop privileges, install seccomp, exec kernel-init (the relay between
        the host and the runner)

Pid 1 (or kernel-init, once pid 1 has exec'd it) writes "ok", or pid 1 the error
that stopped it, to the status pipe, so that a kernel that cannot start is
reported, not silently dead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import traceback

import prctl

from . import mounts, network, oom_score, privileges, syscalls
from .host_modules import forget_host
from .kernel_inputs import Environment, Payload
from .runner import forking, protocol
from .spec import WORK_DIR, KernelSpec

# Pid 1 unshares these (its pid namespace is made by its fork,
# pid_namespace.fork_pid1), then the cgroup namespace once it is in its cgroup,
# so that the namespace's root is the kernel's own cgroup.
NAMESPACES = (
    syscalls.CLONE_NEWNET | syscalls.CLONE_NEWIPC | syscalls.CLONE_NEWUTS | syscalls.CLONE_NEWNS
)
HOSTNAME = "sandbox"
# /opt/sandbox/bin (from sandbox/rootfs/) holds wrappers that tell runtimes the
# kernel's limits (the JVM's heap size); then the host's usual directories.
DEFAULT_PATH = "/opt/sandbox/bin:/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"

# Fd numbers in pid 1. The status and placed pipes are closed before user code runs.
_HOST_FD = 3
STATUS_FD = 4
_PLACED_FD = 5  # pid 1 reads one byte here once the caller has moved it into its cgroup


# What Python's scientific stack reads (also at the zygote's pre-import: see
# sandbox/preimport.py): caches in /tmp, not among the user's files in /home/work
# (fontconfig's, matplotlib's); matplotlib with our backend
# (sandbox/rootfs/opt/sandbox/python); BLAS on one thread.
PYTHON_ENVIRONMENT = {
    "XDG_CACHE_HOME": "/tmp/.cache",
    "PYTHONPATH": "/opt/sandbox/python",
    "MPLBACKEND": "module://sandbox_matplotlib",
    "MPLCONFIGDIR": "/tmp/matplotlib",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
}


# What every kernel's environment starts from (kernel_environment). A zygote
# makes it its own, so that its kernels set only what differs
# (forking.set_environment).
BASE_ENVIRONMENT = {
    "PATH": DEFAULT_PATH,
    "HOME": WORK_DIR,
    "USER": "work",
    "LOGNAME": "work",
    "SHELL": "/bin/bash",
    "TERM": "xterm",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONUNBUFFERED": "1",
    "PYTHONIOENCODING": "utf-8",
    **PYTHON_ENVIRONMENT,
}


def kernel_environment(spec: KernelSpec) -> dict[str, str]:
    """The allowlisted environment a kernel starts with: nothing of the host's."""
    env = dict(BASE_ENVIRONMENT)
    if spec.memory_bytes:
        env["SANDBOX_MEMORY_LIMIT"] = str(spec.memory_bytes)
    env.update(spec.env)
    return env


def exec_mode_main(
    env: Environment,
    spec: KernelSpec,
    work: str,
    payload: Payload,
    rlimits: privileges.Rlimits,
    stdio: tuple[int, int, int] | None,
    status_w: int,
    placed_r: int,
) -> None:
    """Runs in pid 1 forked for an exec-mode kernel (not a spare). Never returns."""
    try:
        oom_score.set_own(oom_score.KERNEL)  # before any fork: they inherit it
        os.setsid()
        arrange_fds(None, stdio, status_w, placed_r)
        syscalls.unshare(NAMESPACES)
    except BaseException as e:
        _report_failure("start", e)
        os._exit(1)
    become_kernel(env, spec, work, payload, rlimits, -1, None, None, b"")


def arrange_fds(
    host_sock: socket.socket | None,
    stdio: tuple[int, int, int] | None,
    status_w: int,
    placed_r: int | None,
    keep: tuple[int, ...] = (),
) -> tuple[int, ...]:
    """Leave exactly: 0/1/2, the host socket at 3 (server mode), the status pipe at 4,
    the placed pipe at 5 (unless None: a spare's pid 1 is in its cgroup already),
    and `keep`, returned at their new numbers (above those)."""
    # Move everything we keep above the target numbers first, so that a source
    # that happens to be 0-4 cannot be clobbered by another dup2.
    status = fcntl.fcntl(status_w, fcntl.F_DUPFD_CLOEXEC, 10)
    placed = fcntl.fcntl(placed_r, fcntl.F_DUPFD_CLOEXEC, 10) if placed_r is not None else None
    host = fcntl.fcntl(host_sock.fileno(), fcntl.F_DUPFD_CLOEXEC, 10) if host_sock else None
    if stdio is None:
        stdio = (os.open("/dev/null", os.O_RDWR),) * 3
    std = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in stdio]
    kept = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in keep)
    for target, fd in enumerate(std):
        os.dup2(fd, target)
    os.dup2(status, STATUS_FD, inheritable=False)
    if placed is not None:
        os.dup2(placed, _PLACED_FD, inheritable=False)
    if host is not None:
        os.dup2(host, _HOST_FD, inheritable=False)
    else:
        os.closerange(_HOST_FD, _HOST_FD + 1)
    forking.close_fds_from(_PLACED_FD + (placed is not None), keep=kept)
    return kept


def runner_start_frame(spec: KernelSpec, uid: int, rlimits: privileges.Rlimits) -> bytes:
    """The frame a spare's pid 1 sends its runner to let it go on as the kernel's
    (sandbox.bootstrap_runner): encoded by the spawner, where the encoder's pages
    are warm, not by each spare, whose every first touch of one is a page copy."""
    # vars(), not dataclasses.asdict (a deep copy): Rlimits holds ints
    start = {"op": "start", "env": kernel_environment(spec), "rlimits": dict(vars(rlimits))}
    return protocol.encode({**start, "uid": uid})


def network_and_hostname() -> None:
    """In the kernel's new network and UTS namespaces: lo up, the kernel's hostname."""
    network.loopback_up()
    socket.sethostname(HOSTNAME)


def become_kernel(
    env: Environment,
    spec: KernelSpec,
    work: str,
    payload: Payload,
    rlimits: privileges.Rlimits,
    host_fd: int,
    program: forking.KernelInitProgram | None,
    runner: forking.Runner | None,
    start_frame: bytes,
) -> None:
    """Runs in pid 1 of the new namespaces. In server mode pid 1 is a spare's, with
    a `runner`: in its cgroup and cgroup namespace, with lo, the hostname, most of
    its root and its runner set up already; it sends the runner `start_frame`
    (`runner_start_frame`) and execs `program`, kernel-init as pid 1 holds it, on
    `host_fd`. In exec mode (both None, no frame) pid 1 is new and runs the
    payload's command. Never returns."""
    step = "setup"
    kernel_env: dict[str, str] = {}
    try:
        step = "root filesystem"
        plan = mounts.RootPlan(
            skeleton=env.skeleton,
            work=work,
            tmp_bytes=spec.tmp_bytes,
            uid=payload.uid,
            binds=spec.binds,
        )
        if runner is not None:
            mounts.finish_root(plan, env.mountpoint)
        else:
            mounts.build_root(plan, env.mountpoint)
            step = "network"
            network_and_hostname()
            step = "cgroup"
            if os.read(_PLACED_FD, 1) != b"p":
                raise RuntimeError("the caller did not place the kernel in its cgroup")
            os.close(_PLACED_FD)
            syscalls.unshare(syscalls.CLONE_NEWCGROUP)  # its root: the kernel's own cgroup
        if runner is not None:
            step = "runner"
            runner.start(start_frame)  # it drops its privileges itself, beside ours
        step = "privileges"
        os.umask(0o022)
        real_gid = None if payload.argv else privileges.PID1_REAL_GID  # kernel-init's
        privileges.drop_privileges(payload.uid, payload.uid, rlimits, real_gid)
        step = "seccomp"
        syscalls.seccomp_install(env.filter)
        step = "start"
        if payload.argv:
            forget_host(env.host_modules)
            kernel_env = kernel_environment(spec)
            forking.set_environment(kernel_env)
            os.chdir(WORK_DIR)
        if not payload.argv:
            step = "kernel-init"
            runner.serve(host_fd, program, status_fd=STATUS_FD)  # it says "ok"
        prctl.set_name("kernel-init")
        syscalls.set_cmdline("kernel-init", env.argv_area)
        os.write(STATUS_FD, b"ok\n")
        os.close(STATUS_FD)
    except BaseException as e:
        _report_failure(step, e)
        os._exit(1)
    forking.run_as_pid1(list(payload.argv), kernel_env, payload.cwd)


def _report_failure(step: str, error: BaseException) -> None:
    detail = "".join(traceback.format_exception_only(error)).strip()
    message = f"kernel setup failed at {step}: {detail}\n"
    with contextlib.suppress(OSError):  # EPIPE: the spawner is gone, nobody to tell
        os.write(STATUS_FD, message.encode())
