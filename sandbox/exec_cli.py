"""`sandbox-exec`: run one command in a fresh kernel, in the spirit of bwrap and nsjail.

    sandbox-exec [--mem SIZE] [--pids N] [--cpu-time S] [--wall-time S]
                 [--bind SRC:DST[:ro|rw]]... [--lang L] -- CMD [ARGS...]

The command gets the full isolation recipe (the same code path as the server's
kernels, without the spawner), the caller's stdin/stdout/stderr, and `/home/work`
as a private tmpfs. sandbox-exec exits with the command's status, 128 + signal
when it was killed, and says on stderr when a limit killed it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import select
import shutil
import signal
import sys
import tempfile

from . import (
    cgroups,
    environment,
    kernel_inputs,
    kernel_start,
    kernel_uids,
    languages,
    mounts,
    pid_namespace,
    syscalls,
)
from .run_result import wait_status_to_exit_code
from .settings import SandboxSettings
from .spec import Bind, KernelSpec, SpecError

_SIZE_RE = re.compile(r"^(\d+)([kKmMgG]?)[iI]?[bB]?$")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """`256M`, `1G`, `512k`, `1048576` -> bytes."""
    match = _SIZE_RE.match(text.strip())
    if not match or int(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (try 256M or 1G)")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


MIN_MEMORY = 16 * 1024**2  # below this no kernel starts (and "512" was surely not bytes)
# sandbox-exec's own default for --mem; every other limit is the [sandbox] settings' default
EXEC_MEMORY = 256 * 1024**2
DEFAULTS = SandboxSettings()


def parse_memory(text: str) -> int:
    """A memory limit: a size of at least MIN_MEMORY."""
    size = parse_size(text)
    if size < MIN_MEMORY:
        raise argparse.ArgumentTypeError(
            f"memory limit {text!r} is {size} bytes; at least 16M (a bare number is bytes)"
        )
    return size


def _positive(kind: type) -> callable:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sandbox-exec",
        description="Run a command in a fresh isolated kernel.",
        usage="sandbox-exec [options] -- CMD [ARGS...]",
    )
    p.add_argument("--mem", type=parse_memory, default=EXEC_MEMORY, help="memory limit")
    p.add_argument(
        "--pids", type=_positive(int), default=DEFAULTS.pids_per_kernel, help="process limit"
    )
    p.add_argument("--cpu-time", type=_positive(float), help="CPU seconds per process")
    p.add_argument("--wall-time", type=_positive(float), help="wall-clock seconds")
    p.add_argument(
        "--bind", action="append", default=[], metavar="SRC:DST[:ro|rw]", help="bind a host path"
    )
    p.add_argument(
        "--lang", help="prepare the environment a kernel of this language gets (e.g. go's caches)"
    )
    p.add_argument("--check", action="store_true", help="report what this host supports")
    p.add_argument("command", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.check:
        from . import doctor

        sys.exit(doctor.main([]))
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        _parser().error("no command given (sandbox-exec [options] -- CMD [ARGS...])")
    try:
        binds = tuple(Bind.parse(b) for b in args.bind)
        for bind in binds:
            if not os.path.exists(bind.src):
                raise SpecError(f"bind {bind.src}: no such file or directory")
        env: dict[str, str] = {}
        if args.lang is not None:
            row = languages.resolve(args.lang)
            if row is None:
                raise SpecError(
                    f"--lang: unknown {args.lang!r}; known: {', '.join(languages.names())}"
                )
            env = dict(row.env)
        spec = DEFAULTS.kernel_spec(
            args.mem, binds, env=env, pids=args.pids, cpu_time=args.cpu_time
        )
        spec.validate()
    except SpecError as e:
        _parser().error(str(e))
    if os.geteuid() != 0:
        print("sandbox-exec: must run as root (namespaces and cgroups)", file=sys.stderr)
        sys.exit(125)
    sys.exit(run(spec, command, args.wall_time, environment.layout_from_environment()))


def run(
    spec: KernelSpec,
    command: list[str],
    wall_time: float | None,
    cgroup_layout: str | None = None,
) -> int:
    """Run `command` in a kernel; return the exit status sandbox-exec should exit with.
    `cgroup_layout`: the layout to force (None: detect it)."""
    pid_namespace.become_subreaper()
    syscalls.unshare(syscalls.CLONE_NEWNS)
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    scratch = tempfile.mkdtemp(prefix="sandbox-exec-")
    manager = cgroups.detect(cgroup_layout)
    cgroup = manager.create(
        f"exec-{os.getpid()}",
        cgroups.CgroupLimits(spec.memory_bytes, spec.pids, spec.cpu_quota),
    )
    uid = kernel_uids.for_exec()
    try:
        mounts.mount_work(f"{scratch}/work", spec.work_bytes, uid)
        env = kernel_inputs.Environment.prepare(
            scratch,
            layout_has_cgroup=manager.layout is not cgroups.Layout.NONE,
            server_mode=False,
        )
        try:
            started = kernel_start.start_kernel(
                env,
                spec,
                f"{scratch}/work",
                cgroup,
                kernel_inputs.Payload(uid, tuple(command)),
                stdio=(0, 1, 2),
            )
        except kernel_start.KernelStartError as e:
            print(f"sandbox-exec: {e}", file=sys.stderr)
            return 125
        status, timed_out = _wait(started.pid, wall_time)
        code = wait_status_to_exit_code(status)
        _explain(spec, cgroup, code, timed_out, wall_time)
        return code
    finally:
        cgroup.remove()
        manager.cleanup()
        with contextlib.suppress(OSError):
            syscalls.umount(f"{scratch}/work")
        shutil.rmtree(scratch, ignore_errors=True)


def _wait(pid: int, wall_time: float | None) -> tuple[int, bool]:
    """Wait for the kernel's pid 1, forwarding SIGINT/SIGTERM/SIGHUP; kill it at wall_time."""

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    pidfd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([pidfd], [], [], wall_time)
        timed_out = not ready
        if timed_out:
            pid_namespace.kill_kernel(pid)
        return os.waitpid(pid, 0)[1], timed_out
    finally:
        os.close(pidfd)


def _explain(
    spec: KernelSpec,
    cgroup: cgroups.KernelCgroup,
    code: int,
    timed_out: bool,
    wall_time: float | None,
) -> None:
    """Say on stderr which limit stopped the command, if one did."""
    say = lambda text: print(f"sandbox-exec: {text}", file=sys.stderr)  # noqa: E731
    if timed_out:
        say(f"wall time limit of {wall_time:g} s exceeded; killed")
        return
    stats = cgroup.stats()
    if stats.oom_kills:
        say(f"out of memory: the memory limit of {spec.memory_bytes} bytes was reached")
    # RLIMIT_CPU sends SIGXCPU at the soft limit and SIGKILL at the hard one
    oom = stats.oom_kills
    cpu_signal = code == 128 + signal.SIGXCPU or (code == 128 + signal.SIGKILL and not oom)
    if spec.cpu_time and cpu_signal:
        say(f"CPU time limit of {spec.cpu_time:g} s per process reached")
    if stats.pids_limit_hits:
        say(f"the process limit of {spec.pids} was reached {stats.pids_limit_hits} time(s)")


if __name__ == "__main__":
    main()
