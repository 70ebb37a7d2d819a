"""Starting a kernel: the isolation recipe of design.md, in order, in forked children.

    exec mode (sandbox-exec; single-threaded)
      `-- fork into a new pid namespace (`_fork_pid1`): B, its pid 1
            setsid, keep only its fds, unshare mount/net/ipc/uts, build the root
            and pivot into it, bring up lo, set the hostname; wait until the
            caller has moved it into its cgroup (done meanwhile: slow on cgroup
            v1), unshare the cgroup namespace; drop to the kernel's uid, install
            seccomp, fork the command
    server mode (the spawner): B is a spare (below) the zygote forked
      `-- its runner, C: forget the host's modules; on B's start frame drop to
          the kernel's uid and install seccomp itself (beside B doing the same),
          take the kernel's environment, run the runner; B execs kernel-init,
          the relay between the host and C (sandbox.runner.init)

The caller unshares the pid namespace for its next child and setns's back
right after the fork, so B is its own child: no intermediate process, whose
fork and exit would cost every kernel memory and time.

A spare (`Spare`) is a B the zygote forked, ahead of demand or, when none is
ready, at a create: it has moved itself into a
fresh cgroup, started its session, unshared the namespaces, forked C, set up lo
and the hostname and built the part of the root that is the same for every
kernel (`mounts.prepare_root`), and waits for a kernel to become. A kernel
started from one made ahead skips the forks, those steps and, above all, the move, which
waits for an RCU grace period (5-15 ms here) the first time in a while that any
process changes cgroup. A spare has SIGKILL as its parent-death signal.

B (or kernel-init, once B has exec'd it) writes "ok", or B the error that
stopped it, to a status pipe, so a kernel that cannot start is reported, not
silently dead. Killing B kills every process of the kernel (pid namespace)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import pickle
import select
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import prctl

from . import kernel_init, kernel_uids, mounts, network, privileges, seccomp
from . import syscalls as sc
from .cgroups import KILL_TIMEOUT, CgroupError, KernelCgroup
from .runner import init as runner_init
from .runner import main as runner_main
from .runner import protocol
from .spec import WORK_DIR, KernelSpec

# B unshares these (its pid namespace is made by its fork, `_fork_pid1`), then the
# cgroup namespace once it is in its cgroup, so that the namespace's root is the
# kernel's own cgroup.
NAMESPACES = sc.CLONE_NEWNET | sc.CLONE_NEWIPC | sc.CLONE_NEWUTS | sc.CLONE_NEWNS
HOSTNAME = "sandbox"
SERVER_TASKS = 2  # a server-mode kernel's own processes: pid 1 and the runner
# /opt/sandbox/bin (from rootfs/) holds wrappers that tell runtimes the
# kernel's limits (the JVM's heap size); then the host's usual directories.
DEFAULT_PATH = "/opt/sandbox/bin:/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"

START_TIMEOUT = 10.0  # s: a start takes milliseconds; this long means it is stuck

# Fd numbers in B. The status and placed pipes are closed before user code runs.
_HOST_FD = 3
_STATUS_FD = 4
_PLACED_FD = 5  # B reads one byte here once the caller has moved it into its cgroup
# What a spare's B writes to the status pipe when it has taken its kernel: a start
# whose spare never wrote it can be retried without one (SpareLost).
_TOOK = "took"


class KernelStartError(RuntimeError):
    """The kernel could not be set up; the message says which step failed.

    `undead`: the pid of a pid 1 that was killed but would not die (a process stuck
    in uninterruptible sleep, or frozen): the caller's reaper collects it later,
    and only then can its cgroup go.
    """

    def __init__(self, message: str, undead: int | None = None) -> None:
        super().__init__(message)
        self.undead = undead


class SpareLost(KernelStartError):
    """The spare given to start_kernel was gone (killed, exited, stuck) before it
    took the kernel: the kernel may well start without one."""


@dataclass(frozen=True)
class Payload:
    """What the kernel runs, the runner (server mode) or a command (exec mode),
    and as whom: `uid` (and the same gid) is the kernel's own (sandbox.kernel_uids)."""

    uid: int
    argv: tuple[str, ...] = ()  # empty: the runner
    cwd: str = WORK_DIR


@dataclass
class Started:
    pid: int  # host pid of the kernel's pid 1


@dataclass(frozen=True)
class Environment:
    """Data computed once by the caller and shared by every kernel it starts."""

    skeleton: dict[str, tuple[int, bytes]]
    filter: bytes  # the seccomp filter compiled to BPF (seccomp.compile_filter)
    mountpoint: str  # an empty host directory; each kernel mounts its root there privately
    layout_has_cgroup: bool
    host_modules: HostModules
    kernel_init: kernel_init.KernelInit | None  # pid 1's program; None: exec mode only
    argv_area: tuple[int, int]  # sc.argv_area(), the same in every fork

    @classmethod
    def prepare(cls, scratch: str, layout_has_cgroup: bool, server_mode: bool) -> Environment:
        """Read the skeleton and build the filter once; kernels mount their roots
        at `scratch`/root, privately, each in its own mount namespace. Only a caller
        that starts server-mode kernels (the runner) builds kernel-init."""
        os.makedirs(f"{scratch}/root", exist_ok=True)
        return cls(
            skeleton=mounts.load_skeleton(mounts.ROOTFS),
            filter=seccomp.compile_filter(),
            mountpoint=f"{scratch}/root",
            layout_has_cgroup=layout_has_cgroup,
            host_modules=HostModules.find(),
            kernel_init=kernel_init.prepare() if server_mode else None,
            argv_area=sc.argv_area(),
        )


def become_subreaper() -> None:
    """Orphaned descendants (a kernel's processes whose pid 1 died first) come back
    to us, to be reaped."""
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)


def kernel_environment(spec: KernelSpec) -> dict[str, str]:
    """The allowlisted environment a kernel starts with: nothing of the host's."""
    env = {
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
        "MPLBACKEND": "Agg",
    }
    if spec.memory_bytes:
        env["SANDBOX_MEMORY_LIMIT"] = str(spec.memory_bytes)
    env.update(spec.env)
    return env


def start_kernel(
    env: Environment,
    spec: KernelSpec,
    work: str,
    cgroup: KernelCgroup,
    payload: Payload,
    host_sock: socket.socket | None = None,
    stdio: tuple[int, int, int] | None = None,
    spare: Spare | None = None,
    timeout: float = START_TIMEOUT,
) -> Started:
    """Fork a kernel and wait until it is set up (or failed). Returns its pid 1.

    A start that takes longer than `timeout` seconds (B stuck, or a spare stopped)
    is killed and fails: the caller serves every other kernel too.
    `host_sock` is the kernel's end of its socket (server mode); `stdio` are fds
    that become the command's 0/1/2 (exec mode). The caller keeps its own copies.
    A server-mode kernel starts from a `spare`, which becomes the kernel: `cgroup`
    must be the spare's, its limits already the kernel's (the caller sets them).
    SpareLost if the spare was gone before it took the kernel. An exec-mode
    kernel is forked here.
    """
    if (spare is None) == (not payload.argv):
        raise ValueError("a spare starts a server-mode kernel; exec mode starts without one")
    rlimits = _rlimits(spec, env, payload)
    problems: list[str] = []
    placed_w = -1
    if spare is not None:
        if host_sock is None:
            raise ValueError("a server-mode kernel needs its host socket")
        pid, status_r = spare.pid, spare.take_status()
        try:
            spare.send(spec, work, payload, rlimits, host_sock)
        except OSError as e:  # it died: what it wrote before, if anything, follows
            problems.append(f"kernel setup failed at spare: {e}")
    else:
        placed_r, placed_w = os.pipe2(os.O_CLOEXEC)
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        pid = _fork_pid1()
        if pid == 0:
            try:
                _new_b(env, spec, work, payload, rlimits, stdio, status_w, placed_r)
            finally:  # B never returns into the caller's code, whatever happens: in
                os._exit(1)  # the spawner, its error path would destroy every other kernel
        os.close(status_w)
        os.close(placed_r)
    try:
        # B builds its root meanwhile; moving it into its cgroup (slow: see Spare)
        # happens now, beside that work, and B waits for the byte on the placed pipe
        # before it drops privileges. B writes "ok" or its error (a spare _TOOK first).
        reader = _LineReader(status_r, time.monotonic() + timeout)
        try:
            if placed_w >= 0:
                try:
                    cgroup.attach(pid)
                    os.write(placed_w, b"p")
                except (OSError, CgroupError) as e:
                    problems.append(f"kernel setup failed at cgroup: {e}")
                os.close(placed_w)
                placed_w = -1
            problems += list(reader)
        except TimeoutError:
            problems.append(f"kernel setup timed out after {timeout:g} s")
    finally:
        if placed_w >= 0:
            os.close(placed_w)
        os.close(status_r)
    took = spare is None or _TOOK in problems
    problems = [p for p in problems if p != _TOOK]
    if problems == ["ok"]:
        return Started(pid=pid)
    undead = None
    kill_kernel(pid)  # it is our child and not reaped yet: the pid is still its own
    if wait_for_exit(pid, KILL_TIMEOUT) is None:  # the caller must go on serving
        undead = pid
        problems.append(f"its pid 1 ({pid}) would not die")
    others = [p for p in problems if p != "ok"]
    message = "; ".join(others) or "kernel setup died before reporting"
    raise KernelStartError(message, undead) if took else SpareLost(message, undead)


def _fork_pid1(sibling: bool = False) -> int:
    """A fork (runner_init.lean_fork), the child as pid 1 of a new pid namespace.
    The caller's later children are in its own namespace again. The caller must
    be single-threaded. `sibling`: the child is the caller's parent's child
    (sc.fork_sibling), and the caller gets -1, not its pid."""
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        sc.unshare(sc.CLONE_NEWPID)  # for the children made from now on
        pid = -1
        try:
            pid = (0 if sc.fork_sibling() else -1) if sibling else runner_init.lean_fork()
        finally:
            if pid != 0:
                sc.setns(own, sc.CLONE_NEWPID)  # back to ours; raises if it cannot
        return pid
    finally:
        os.close(own)


def fork_spare(env: Environment, cgroup_dirs: tuple[int, ...]) -> tuple[int, int]:
    """Fork a spare (see Spare) that joins the cgroup whose directories (one per
    hierarchy) are open as `cgroup_dirs`; the caller keeps and closes those.
    Returns the spare's request socket and status pipe, for Spare.adopt. The
    spare is the caller's parent's child (`_fork_pid1(sibling=True)`): the zygote
    forks spares for the spawner. The socket passes credentials: the spare's first
    message tells its pid."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    pid = -1
    try:
        pid = _fork_pid1(sibling=True)
    except BaseException:
        ours.close()
        os.close(status_r)
        raise
    finally:
        if pid != 0:
            theirs.close()
            os.close(status_w)
    if pid == 0:
        try:
            _spare_main(env, cgroup_dirs, theirs.detach(), status_w)
        finally:  # as in start_kernel: never back into the caller's code
            os._exit(1)
    return ours.detach(), status_r


class Spare:
    """A kernel's B, forked by the zygote, that moves itself into a fresh cgroup,
    forks its runner and builds its root's common part, then waits to become some
    kernel (`start_kernel(spare=...)`).

    The move and the forks cost the spare, not its parent: the parent goes on
    serving meanwhile. The spawner has the zygote fork them (sandbox.zygote), so
    that no kernel is a copy of the spawner. A spare holds only its request
    socket and the status pipe; it exits when its parent closes the socket
    (`discard`) or dies. Its cgroup has no limits until the parent gives it a
    kernel's.
    """

    def __init__(self, pid: int, cgroup: KernelCgroup, conn: socket.socket, status_r: int):
        self.pid = pid
        self.cgroup = cgroup
        self._conn = conn
        self.status_r = status_r

    @classmethod
    def adopt(
        cls, cgroup: KernelCgroup, conn_fd: int, status_r: int, timeout: float = START_TIMEOUT
    ) -> Spare:
        """Take on the spare at the end of fork_spare's socket and pipe: read its
        first message, whose credentials give its pid in our pid namespace. The
        spare is our child, or was forked by the zygote as our child. OSError if
        it died or said nothing within `timeout` seconds (both fds closed)."""
        conn = socket.socket(fileno=conn_fd)
        try:
            if not select.select([conn], [], [], timeout)[0]:
                raise OSError(errno.ETIMEDOUT, "the spare did not say hello")
            space = socket.CMSG_SPACE(struct.calcsize("3i"))
            message, ancillary, _flags, _addr = conn.recvmsg(8, space)
            pid = next(
                (struct.unpack("3i", data)[0] for level, kind, data in ancillary
                 if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS),
                0,
            )  # fmt: skip
            if message != _HELLO or pid <= 0:
                raise OSError(errno.EPROTO, "the spare died before its hello")
        except BaseException:
            conn.close()
            os.close(status_r)
            raise
        return cls(pid, cgroup, conn, status_r)

    def send(
        self,
        spec: KernelSpec,
        work: str,
        payload: Payload,
        rlimits: privileges.Rlimits,
        host_sock: socket.socket,
    ) -> None:
        """Hand the spare its kernel (start_kernel reads the rest)."""
        request = pickle.dumps((spec, work, payload, rlimits))
        try:
            socket.send_fds(self._conn, [request], [host_sock.fileno()])
        finally:
            self._conn.close()

    def take_status(self) -> int:
        """The status pipe, now the caller's to read and close."""
        fd, self.status_r = self.status_r, -1
        return fd

    def discard(self, reaped: bool = False) -> None:
        """End an unused spare (the caller reaps it, unless `reaped` already, and
        removes its cgroup)."""
        self._conn.close()
        if self.status_r >= 0:
            os.close(self.status_r)
            self.status_r = -1
        if not reaped:  # else its pid may be another process's by now
            kill_kernel(self.pid)


_HELLO = b"hello"  # a spare's first message, which carries its credentials


def _join_cgroup(dirs: tuple[int, ...]) -> None:
    """Move this process into the cgroup whose directories are open as `dirs`
    (writing 0 to cgroup.procs moves the writer), then close them."""
    for fd in dirs:
        try:
            procs = os.open("cgroup.procs", os.O_WRONLY | os.O_CLOEXEC, dir_fd=fd)
            try:
                os.write(procs, b"0")
            finally:
                os.close(procs)
        finally:
            os.close(fd)


def _spare_main(
    env: Environment, cgroup_dirs: tuple[int, ...], conn_fd: int, status_w: int
) -> None:
    """Runs in a spare, pid 1 of its pid namespace. Never returns."""
    status = status_w
    try:
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)  # the parent gone: so is the spare
        os.write(conn_fd, _HELLO)  # first: the parent waits for it, and our pid in it
        prctl.set_name("sandbox-spare")
        # The runner is forked first, as soon as it can be in the kernel's cgroup and
        # namespaces (its own session it starts itself). Pages this process wrote
        # before that fork would be the runner's own once this process execs
        # kernel-init; what it writes after, it copies for itself alone.
        _join_cgroup(cgroup_dirs)
        sc.unshare(NAMESPACES | sc.CLONE_NEWCGROUP)  # the cgroup one: after the move
        runner = runner_init.fork_runner(functools.partial(_runner_main, env))
        signal.set_wakeup_fd(-1)  # a parent's: about to be closed
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # fork_runner set the others
        os.setsid()
        # Nothing of the caller's but stdio: another spare's socket held here would
        # keep that spare from seeing its end.
        init = env.kernel_init
        runner_fds = (runner.ctl_fd, runner.out_r, runner.err_r)
        keep = (conn_fd, init.binary_fd, init.helper_fd, *runner_fds)
        conn_fd, binary_fd, helper_fd, *runner_fds = _arrange_fds(
            None, None, status_w, None, keep=keep
        )
        program = runner_init.InitProgram(binary_fd, helper_fd, init.python)
        runner = runner_init.Runner(runner.pid, *runner_fds)
        status = _STATUS_FD
        _network_and_hostname()
        mounts.prepare_root(env.skeleton, env.mountpoint)
        conn = socket.socket(fileno=conn_fd)
        request, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 1)
        if not request:
            os._exit(0)  # discarded
        spec, work, payload, rlimits = pickle.loads(request)
        (host_fd,) = fds
        conn.close()
        if not runner.alive():
            raise RuntimeError("its runner has exited")
        os.write(_STATUS_FD, f"{_TOOK}\n".encode())
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.write(status, f"kernel setup failed at spare: {e}\n".encode())
        os._exit(1)
    _child_b(env, spec, work, payload, rlimits, host_fd, program, runner)


def _network_and_hostname() -> None:
    """In the kernel's new network and UTS namespaces: lo up, the kernel's hostname."""
    network.loopback_up()
    socket.sethostname(HOSTNAME)


class _LineReader:
    """The lines of a pipe, as they arrive, until EOF; TimeoutError at `deadline`
    (time.monotonic())."""

    def __init__(self, fd: int, deadline: float) -> None:
        self.fd = fd
        self.deadline = deadline
        self.buffer = b""

    def __iter__(self) -> Iterator[str]:
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                yield line.decode(errors="replace")
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(self.fd, 4096)
            if not chunk:
                if self.buffer:
                    yield self.buffer.decode(errors="replace")
                    self.buffer = b""
                return
            self.buffer += chunk


def wait_for_exit(pid: int, timeout: float) -> int | None:
    """Reap `pid` and return its wait status; None if it is not our child or is
    still there after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        try:
            reaped, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        except InterruptedError:
            continue
        if reaped:
            return status
        if time.monotonic() >= deadline:
            return None
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _new_b(
    env: Environment,
    spec: KernelSpec,
    work: str,
    payload: Payload,
    rlimits: privileges.Rlimits,
    stdio: tuple[int, int, int] | None,
    status_w: int,
    placed_r: int,
) -> None:
    """Runs in B forked for an exec-mode kernel (not a spare). Never returns."""
    try:
        os.setsid()
        _arrange_fds(None, stdio, status_w, placed_r)
        sc.unshare(NAMESPACES)
    except BaseException as e:
        _report_failure("start", e)
        os._exit(1)
    _child_b(env, spec, work, payload, rlimits, -1, None, None)


def _arrange_fds(
    host_sock: socket.socket | None,
    stdio: tuple[int, int, int] | None,
    status_w: int,
    placed_r: int | None,
    keep: tuple[int, ...] = (),
) -> tuple[int, ...]:
    """Leave exactly: 0/1/2, the host socket at 3 (server mode), the status pipe at 4,
    the placed pipe at 5 (unless None: a spare's B is in its cgroup already), and
    `keep`, returned at their new numbers (above those)."""
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
    os.dup2(status, _STATUS_FD, inheritable=False)
    if placed is not None:
        os.dup2(placed, _PLACED_FD, inheritable=False)
    if host is not None:
        os.dup2(host, _HOST_FD, inheritable=False)
    else:
        os.closerange(_HOST_FD, _HOST_FD + 1)
    runner_init.close_fds_from(_PLACED_FD + (placed is not None), keep=kept)
    return kept


def _child_b(
    env: Environment,
    spec: KernelSpec,
    work: str,
    payload: Payload,
    rlimits: privileges.Rlimits,
    host_fd: int,
    program: runner_init.InitProgram | None,
    runner: runner_init.Runner | None,
) -> None:
    """Runs in B, pid 1 of the new namespaces. In server mode B is a spare's, with
    a `runner`: in its cgroup and cgroup namespace, with lo, the hostname, most of
    its root and its runner (C) set up already; it execs `program`, kernel-init
    as B holds it, on `host_fd`. In exec mode (both None) B is new and runs the
    payload's command. Never returns."""
    step = "setup"
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
            _network_and_hostname()
            step = "cgroup"
            if os.read(_PLACED_FD, 1) != b"p":
                raise RuntimeError("the caller did not place the kernel in its cgroup")
            os.close(_PLACED_FD)
            sc.unshare(sc.CLONE_NEWCGROUP)  # its root: the kernel's own cgroup
        kernel_env = kernel_environment(spec)
        if runner is not None:
            step = "runner"
            # C drops its privileges itself, beside B's doing the same
            start = {"op": "start", "env": kernel_env, "rlimits": asdict(rlimits)}
            runner.start({**start, "uid": payload.uid})
        step = "privileges"
        os.umask(0o022)
        real_gid = None if payload.argv else privileges.PID1_REAL_GID  # kernel-init's
        privileges.drop_privileges(payload.uid, payload.uid, rlimits, real_gid)
        step = "seccomp"
        sc.seccomp_install(env.filter)
        step = "start"
        if payload.argv:
            _forget_host(env.host_modules)
            os.environ.clear()
            os.environ.update(kernel_env)
            os.chdir(WORK_DIR)
        if not payload.argv:
            step = "kernel-init"
            runner.serve(host_fd, program, status_fd=_STATUS_FD)  # it says "ok"
        prctl.set_name("kernel-init")
        sc.set_cmdline("kernel-init", env.argv_area)
        os.write(_STATUS_FD, b"ok\n")
        os.close(_STATUS_FD)
    except BaseException as e:
        _report_failure(step, e)
        os._exit(1)
    runner_init.exec_as_init(list(payload.argv), kernel_env, payload.cwd)


def _rlimits(spec: KernelSpec, env: Environment, payload: Payload) -> privileges.Rlimits:
    """The kernel's rlimits, computed in the caller before the fork (the kernel
    starts with the caller's mappings, and sees only its own pid namespace)."""
    # Without a cgroup, rlimits are all we have (README: the none layout). They are
    # weaker: RLIMIT_AS counts address space, not memory in use, and RLIMIT_NPROC
    # counts the tasks of the kernel's uid: a kernel may start `pids` tasks beyond
    # those its uid has when it starts (none, unless a process of a kernel that had
    # it before has outlived it).
    weak = not env.layout_has_cgroup
    address_space = nproc = None
    if weak and spec.memory_bytes:
        # A runner is a fork of the zygote and starts with its mappings: the limit
        # is on what the kernel maps beyond them. A payload is exec'd and starts afresh.
        address_space = spec.memory_bytes + (0 if payload.argv else _address_space())
    if weak and spec.pids:
        nproc = spec.pids + _tasks_of(payload.uid)
    return privileges.Rlimits(
        nofile=spec.nofile,
        fsize=spec.fsize_bytes,
        cpu_seconds=int(spec.cpu_time + 0.999) if spec.cpu_time else None,
        address_space=address_space,
        nproc=nproc,
    )


def _tasks_of(uid: int) -> int:
    """Tasks of the processes whose real uid is `uid`: what RLIMIT_NPROC counts."""
    return sum(threads for _pid, owner, threads in kernel_uids.process_uids() if owner == uid)


def _address_space() -> int:
    """This process's mapped address space, bytes (VmSize)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class HostModules:
    """The caller's modules that a kernel must not keep: those from outside the
    system interpreter's prefix (the server's virtualenv), except the runner.

    Found once in the caller. A kernel that looked for them itself would read
    every module object, and each object read after the fork is a page copied
    into that kernel: about 0.8 MiB more per kernel (scripts/bench).
    """

    names: tuple[str, ...]
    seen: int  # len(sys.modules) when they were found

    @classmethod
    def find(cls) -> HostModules:
        system = sys.base_prefix.rstrip("/") + "/"
        names = []
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None)
            if name.startswith("sandbox.runner") or name == "sandbox":
                continue
            if path and not path.startswith(system):
                names.append(name)
        return cls(tuple(names), len(sys.modules))


# The host's modules a kernel dropped from sys.modules, kept alive: freeing them
# would write to (and so copy) every page their objects share with the spawner.
_forgotten: list[object] = []


def _forget_host(modules: HostModules) -> None:
    """Drop what the forked interpreter knows of the host before user code runs.

    The kernel is a fork of the spawner: its memory holds the spawner's modules
    and paths. Keep only what lives under the system interpreter's prefix (the
    standard library, under the bound /usr) and the runner itself, so nothing of
    the server's virtualenv is importable or reachable by name. The python3
    REPL then adds the system's site directories (sandbox.runner.python_repl).
    """
    system = sys.base_prefix.rstrip("/") + "/"
    sys.path[:] = [p for p in sys.path if p.startswith(system)]
    sys.executable = os.path.join(sys.base_prefix, "bin", "python3")
    if len(sys.modules) != modules.seen:  # the caller imported more since: look again
        modules = HostModules.find()
    for name in modules.names:
        _forgotten.append(sys.modules.pop(name, None))


def _runner_main(env: Environment, fd: int) -> None:
    """Runs in C, fds 0-3 set up: B's setup for C's own sake (B may have forked it
    before it had a kernel), once B's start frame has come; then the runner."""
    prctl.set_name("kernel-runner")
    sc.set_cmdline("kernel-runner", env.argv_area)
    _forget_host(env.host_modules)
    try:
        start, _blob = protocol.read_frame(fd)
    except EOFError:
        os._exit(0)  # B is gone (a spare discarded)
    os.umask(0o022)
    uid = start["uid"]
    privileges.drop_privileges(uid, uid, privileges.Rlimits(**start["rlimits"]))
    sc.seccomp_install(env.filter)
    os.environ.clear()
    os.environ.update(start["env"])
    os.chdir(WORK_DIR)
    runner_main.serve(fd)


def _report_failure(step: str, error: BaseException) -> None:
    detail = "".join(traceback.format_exception_only(error)).strip()
    message = f"kernel setup failed at {step}: {detail}\n"
    with contextlib.suppress(OSError):  # EPIPE: the spawner is gone, nobody to tell
        os.write(_STATUS_FD, message.encode())


def kill_kernel(pid: int) -> None:
    """SIGKILL a kernel's pid 1: the kernel then kills the whole pid namespace."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
