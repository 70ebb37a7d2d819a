"""The spawner: a single-threaded, pre-warmed process that forks kernels on request.

The server never forks (forking a threaded asyncio process is unsafe, and exec'ing
a fresh interpreter per kernel costs 10-60 ms). It starts one spawner at boot,
which imports the runner, builds the seccomp filter and reads the root skeleton
once, then starts a kernel per request in about a millisecond.

The spawner knows every kernel, so no kernel is forked from it: before its first
request it forks the zygote (sandbox.zygote), which knows none, and every kernel
starts from a spare the zygote forked (sandbox.spare), ahead of demand or, when
none is ready, at the request.

The spawner runs in its own private mount namespace, so the per-kernel
`/home/work` tmpfs mounts it makes never appear in the host's mount table and
vanish with it. It talks to the server over one connected unix socket with the
frames of `sandbox.runner.protocol`; a kernel's socket is handed to the server
with SCM_RIGHTS and the spawner keeps no copy, so no kernel ever holds another
kernel's socket. When the server's connection closes, the spawner kills every
kernel and exits.

Requests (one at a time, each answered in order):
  {"op": "spawn", "id": str, "spec": KernelSpec JSON, "keep_work": bool}
      -> {"ok": true, "pid": int} + the kernel's socket as SCM_RIGHTS
  {"op": "destroy", "id": str, "keep_work": bool} -> {"ok": true, "status": int|null}
  {"op": "stats", "id": str} -> {"ok": true, "alive": bool, "pid": int,
                                  "cgroups": [its directories], ...CgroupStats}
  {"op": "info"} -> {"ok": true, "layout": str, "cgroups": {...}, "pid": int,
                     "scratch": str (in the spawner's mount namespace),
                     "spares": [pids of the spares ready now], "zygote": pid}
Errors: {"ok": false, "kind": "bad-request"|"not-found"|"start-failed", "error": str}
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import gc
import itertools
import os
import re
import select
import shutil
import signal
import socket
import sys
from dataclasses import dataclass

from . import (
    cgroups,
    environment,
    kernel_init_build,
    kernel_inputs,
    kernel_start,
    kernel_uids,
    mounts,
    pid_namespace,
    preimport,
    syscalls,
    zygote,
)
from .runner import forking, protocol, python_repl
from .settings import SandboxSettings
from .spare import Spare
from .spec import KernelSpec, SpecError, validate_kernel_id


@dataclass
class _Kernel:
    pid: int
    cgroup: cgroups.KernelCgroup
    work: str
    uid: int
    status: int | None = None  # wait status once pid 1 has exited


class Spawner:
    """The spawner's state and request handlers (runs in the spawner process)."""

    def __init__(
        self,
        cgroup_manager: cgroups.CgroupManager,
        scratch: str,
        spares: int = 0,
        start_timeout: float = kernel_start.START_TIMEOUT,
        uids: kernel_uids.UidRange = kernel_uids.DEFAULT_RANGE,
    ) -> None:
        self.cgroups = cgroup_manager
        self.scratch = scratch
        self.start_timeout = start_timeout
        self.uids = kernel_uids.UidAllocator(uids)
        self.kernels: dict[str, _Kernel] = {}
        self.undead: dict[str, _Kernel] = {}  # destroyed, but some process would not die
        self.env = kernel_inputs.Environment.prepare(
            scratch,
            layout_has_cgroup=cgroup_manager.layout is not cgroups.Layout.NONE,
            server_mode=True,
        )
        # Kept ready when there are cgroups to move into (sandbox.spare); a cgroup is
        # made for a spare before anyone knows which kernel it will be, so cgroups
        # are named k0, k1, ... (ask `stats` for a kernel's), not after kernels.
        self.spares_wanted = spares if self.env.layout_has_cgroup else 0
        self.spares: list[Spare] = []
        self._cgroup_names = (f"k{n}" for n in itertools.count())
        self.zygote: zygote.Zygote | None = None  # fork_zygote, before any request

    def fork_zygote(self) -> None:
        """Fork the process every kernel comes from (sandbox.zygote), while this one
        has served no request and knows no kernel."""
        program = self.env.kernel_init
        self.zygote = zygote.Zygote.fork(self.env, keep=(program.binary_fd, program.helper_fd))

    # -- requests -------------------------------------------------------------

    def spawn(self, kernel_id: str, spec: KernelSpec, keep_work: bool) -> tuple[int, socket.socket]:
        if kernel_id in self.kernels:
            raise SpecError(f"id: kernel {kernel_id} already exists")
        if spec.pids and spec.pids < kernel_start.SERVER_TASKS:
            raise kernel_start.KernelStartError(
                f"kernel setup failed at runner: a kernel needs {kernel_start.SERVER_TASKS} "
                f"processes (its pid 1 and runner), and its pids limit is {spec.pids}"
            )
        try:
            uid = self.uids.take(kernel_id)
        except kernel_uids.UidsExhausted as e:
            raise kernel_start.KernelStartError(f"kernel setup failed at uid: {e}") from e
        payload = kernel_inputs.Payload(uid)
        work = None
        try:
            work = self._work_dir(kernel_id, spec, keep_work, uid)
            try:
                pid, cgroup, host_end = self._start(spec, work, payload, self._take_spare())
            except kernel_start.SpareLost as e:
                print(f"spawner: kernel {kernel_id}: a spare was lost ({e}); starting it "
                      "from a new one", file=sys.stderr, flush=True)  # fmt: skip
                pid, cgroup, host_end = self._start(spec, work, payload, None)
        except BaseException as e:
            if not keep_work:
                if work is not None:
                    self._remove_work(work)
                if isinstance(e, kernel_start.KernelStartError) and e.undead:
                    self.uids.detach(kernel_id)  # freed once the undead pid 1 is reaped
                else:
                    self.uids.release(kernel_id)
            raise
        cgroup.track(functools.partial(_namespace_pids, pid))
        self.kernels[kernel_id] = _Kernel(pid, cgroup, work, uid)
        return pid, host_end

    def _take_spare(self) -> Spare | None:
        """The oldest spare, if any is ready."""
        return self.spares.pop(0) if self.spares else None

    def _new_spare(self, limits: cgroups.CgroupLimits) -> Spare:
        """A spare from the zygote, in a new cgroup with `limits`."""
        cgroup = self.cgroups.create(next(self._cgroup_names), limits)
        try:
            return self.zygote.spare(cgroup, self.start_timeout)
        except BaseException:
            cgroup.remove()
            raise

    def _start(
        self, spec: KernelSpec, work: str, payload: kernel_inputs.Payload, spare: Spare | None
    ) -> tuple[int, cgroups.KernelCgroup, socket.socket]:
        """Start a kernel from the spare, or from a new one made now (every kernel
        comes from the zygote). Leaves nothing behind when it fails (the work
        directory aside)."""
        limits = cgroups.CgroupLimits(spec.memory_bytes, spec.pids, spec.cpu_quota)
        if spare is None:
            try:
                spare = self._new_spare(limits)
            except (OSError, cgroups.CgroupError) as e:
                raise kernel_start.KernelStartError(f"kernel setup failed at spare: {e}") from e
        else:
            try:
                spare.cgroup.set_limits(limits)
            except cgroups.CgroupError as e:
                self._drop_spare(spare)
                raise kernel_start.SpareLost(f"its cgroup: {e}") from e
        cgroup = spare.cgroup
        host_end, kernel_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            started = kernel_start.start_kernel(
                self.env, spec, work, cgroup, payload,
                host_sock=kernel_end, spare=spare, timeout=self.start_timeout,
            )  # fmt: skip
        except BaseException as e:
            host_end.close()
            undead = e.undead if isinstance(e, kernel_start.KernelStartError) else None
            if undead is None:
                cgroup.remove()
            else:  # as for a destroy (see there): its cgroup goes once it is reaped
                print(f"spawner: pid {undead} of a failed start will not die",
                      file=sys.stderr, flush=True)  # fmt: skip
                self.undead[f"start-{undead}"] = _Kernel(undead, cgroup, work, payload.uid)
            raise
        finally:
            kernel_end.close()
        return started.pid, cgroup, host_end

    def destroy(self, kernel_id: str, keep_work: bool) -> int | None:
        """Kill the kernel and free what it holds. A kernel that will not die (a
        process stuck in the kernel's uninterruptible sleep, or frozen) is given up
        on after cgroups.KILL_TIMEOUT, logged, and kept in `undead` until its pid 1
        is reaped (see reap): the spawner must stay responsive for every other kernel."""
        kernel = self.kernels.pop(kernel_id)
        if kernel.status is None:  # once reaped, its pid may be another process's
            pid_namespace.kill_kernel(kernel.pid)
        try:
            kernel.cgroup.remove()
            if kernel.status is None:
                kernel.status = pid_namespace.wait_for_exit(kernel.pid, cgroups.KILL_TIMEOUT)
            if kernel.status is None:
                raise cgroups.CgroupError(f"pid {kernel.pid} did not exit")
        except cgroups.CgroupError as e:
            print(f"spawner: kernel {kernel_id} will not die: {e}", file=sys.stderr, flush=True)
            self.undead[kernel_id] = kernel
        if not keep_work:  # else a restart: its work and uid are kept for it
            self._remove_work(kernel.work)
            if kernel_id in self.undead:
                self.uids.detach(kernel_id)  # freed once its pid 1 is reaped
            else:
                self.uids.release(kernel_id)
        return kernel.status

    def set_limits(self, kernel_id: str, limits: cgroups.CgroupLimits) -> None:
        self.kernels[kernel_id].cgroup.set_limits(limits)

    def cpu_usage(self) -> dict[str, int]:
        """Every live kernel's CPU time (microseconds), for the server's credit checks."""
        usage = {}
        for kernel_id, kernel in self.kernels.items():
            with contextlib.suppress(cgroups.CgroupError, OSError):
                usage[kernel_id] = kernel.cgroup.cpu_usec()
        return usage

    def stats(self, kernel_id: str) -> dict:
        kernel = self.kernels[kernel_id]
        data = {
            "alive": kernel.status is None,
            "pid": kernel.pid,
            "uid": kernel.uid,
            "cgroups": kernel.cgroup.paths(),
        }
        data.update(dataclasses.asdict(kernel.cgroup.stats()))
        return data

    def refill_spares(self) -> None:
        """Fork spares up to the number wanted (after a request has been answered)."""
        while len(self.spares) < self.spares_wanted:
            try:
                self.spares.append(self._new_spare(cgroups.CgroupLimits.unlimited()))
            except (OSError, cgroups.CgroupError) as e:
                print(f"spawner: no spare: {e}", file=sys.stderr, flush=True)
                return

    @staticmethod
    def _drop_spare(spare: Spare, reaped: bool = False) -> None:
        """End a spare that will start no kernel, and remove its cgroup."""
        spare.discard(reaped)
        with contextlib.suppress(cgroups.CgroupError):
            spare.cgroup.remove()

    def reap(self) -> None:
        """Collect exited kernels' pid 1 (they come back to us as subreaper). An
        undead kernel whose pid 1 is finally gone has its cgroups removed now, and
        a spare that died unused is dropped with its cgroup."""
        by_pid = {k.pid: k for k in self.kernels.values()}
        undead = {k.pid: kernel_id for kernel_id, k in self.undead.items()}
        spares = {spare.pid: spare for spare in self.spares}
        for pid, status in forking.reap_exited().items():
            if self.zygote is not None and pid == self.zygote.pid:
                self.zygote.status = status
                print(f"spawner: the zygote exited (status {status}): no kernel can "
                      "start", file=sys.stderr, flush=True)  # fmt: skip
            elif pid in spares:
                self.spares.remove(spares[pid])
                self._drop_spare(spares[pid], reaped=True)
            elif pid in by_pid:
                by_pid[pid].status = status
            elif pid in undead:
                kernel = self.undead.pop(undead[pid])
                self.uids.free(kernel.uid)
                try:
                    kernel.cgroup.remove()
                except cgroups.CgroupError as e:
                    print(f"spawner: kernel {undead[pid]}: {e}", file=sys.stderr, flush=True)
                else:
                    print(
                        f"spawner: kernel {undead[pid]} died at last", file=sys.stderr, flush=True
                    )

    def shutdown(self) -> None:
        self.spares_wanted = 0
        spares, self.spares = self.spares, []
        for spare in spares:
            spare.discard()
        for spare in spares:  # reaped here: none outlives us, not even as a zombie
            pid_namespace.wait_for_exit(spare.pid, cgroups.KILL_TIMEOUT)
            with contextlib.suppress(cgroups.CgroupError):
                spare.cgroup.remove()
        self.reap()  # any kernel that has exited (keeping its status)
        for kernel_id in list(self.kernels):
            with contextlib.suppress(Exception):
                self.destroy(kernel_id, keep_work=False)
        for kernel in self.undead.values():  # one last try
            with contextlib.suppress(Exception):
                kernel.cgroup.remove()
        if self.zygote is not None:
            self.zygote.close(cgroups.KILL_TIMEOUT)
        self.cgroups.cleanup()

    # -- work directories -----------------------------------------------------

    def _work_dir(self, kernel_id: str, spec: KernelSpec, keep_work: bool, uid: int) -> str:
        """The kernel's /home/work tmpfs, owned by its uid; reused when a restart keeps it."""
        work = f"{self.scratch}/{WORK_ROOT}/{kernel_id}"
        if not (keep_work and os.path.ismount(work)):
            mounts.mount_work(work, spec.work_bytes, uid)
        return work

    def _remove_work(self, work: str) -> None:
        with contextlib.suppress(OSError):
            syscalls.umount(work)
        with contextlib.suppress(OSError):
            os.rmdir(work)


def _namespace_pids(pid1: int) -> list[int]:
    """The kernel's pid 1 and every process below it: all of its pid namespace,
    since orphans there are re-parented to that pid 1 (accounting for the none
    layout, which has no cgroup to ask)."""
    import psutil  # only the none layout asks; keeps the spawner's import light

    try:
        children = psutil.Process(pid1).children(recursive=True)
        return [pid1, *(p.pid for p in children)]
    except psutil.NoSuchProcess:
        return []


def _reply(conn: socket.socket, message: dict, fds: list[int] = ()) -> None:
    data = protocol.encode(message)
    if fds:
        sent = socket.send_fds(conn, [data], fds)
        if sent < len(data):
            conn.sendall(data[sent:])
    else:
        conn.sendall(data)


def _handle(spawner: Spawner, conn: socket.socket, request: dict) -> None:
    op = request.get("op")
    try:
        if op == "spawn":
            kernel_id = validate_kernel_id(request.get("id"))
            spec = KernelSpec.from_json(request.get("spec", {}))
            pid, host_end = spawner.spawn(kernel_id, spec, bool(request.get("keep_work")))
            with host_end:
                _reply(conn, {"ok": True, "pid": pid}, [host_end.fileno()])
            return
        if op == "info":
            info = {
                "pid": os.getpid(),
                "scratch": spawner.scratch,
                "cgroups": spawner.cgroups.describe(),
                "zygote": spawner.zygote.pid,
                "uids": str(spawner.uids.range),
            }
            info["spares"] = [spare.pid for spare in spawner.spares]
            _reply(conn, {"ok": True, "layout": spawner.cgroups.layout.value, **info})
            return
        if op == "cpu":
            _reply(conn, {"ok": True, "usec": spawner.cpu_usage()})
            return
        kernel_id = validate_kernel_id(request.get("id"))
        if kernel_id not in spawner.kernels:
            _reply(conn, {"ok": False, "kind": "not-found", "error": f"no kernel {kernel_id}"})
        elif op == "destroy":
            status = spawner.destroy(kernel_id, bool(request.get("keep_work")))
            if kernel_id in spawner.undead:
                error = f"a process of kernel {kernel_id} would not die; it is freed once it does"
                _reply(conn, {"ok": False, "kind": "undead", "error": error})
            else:
                _reply(conn, {"ok": True, "status": status})
        elif op == "stats":
            _reply(conn, {"ok": True, **spawner.stats(kernel_id)})
        elif op == "limit":
            limits = request.get("limits") or {}
            try:
                spawner.set_limits(kernel_id, cgroups.CgroupLimits(**limits))
            except (TypeError, ValueError, cgroups.CgroupError) as e:
                _reply(conn, {"ok": False, "kind": "bad-request", "error": str(e)})
            else:
                _reply(conn, {"ok": True})
        else:
            _reply(conn, {"ok": False, "kind": "bad-request", "error": f"unknown op {op!r}"})
    except SpecError as e:
        _reply(conn, {"ok": False, "kind": "bad-request", "error": str(e)})
    except kernel_start.KernelStartError as e:
        _reply(conn, {"ok": False, "kind": "start-failed", "error": str(e)})


# After a request, spares are forked once the spawner has had no request for this
# long (at once when none is left): a fork beside the start of the kernel just
# asked for would compete with it for the CPUs.
REFILL_IDLE_SECONDS = 0.01


def serve(conn: socket.socket, spawner: Spawner) -> None:
    """Answer requests until the server closes its end, then clean up everything."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    reader = protocol.FrameReader()
    try:
        while True:
            if len(spawner.spares) >= spawner.spares_wanted:
                timeout = None
            else:
                timeout = REFILL_IDLE_SECONDS if spawner.spares else 0
            ready, _, _ = select.select([conn, wake_r], [], [], timeout)
            if not ready:
                spawner.refill_spares()
                continue
            if wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                spawner.reap()
            if conn not in ready:
                continue
            data = conn.recv(65536)
            if not data:
                return
            reader.feed(data)
            for request, _blob, _raw in reader.frames():
                spawner.reap()
                if request.get("op") == "spawn" and not spawner.spares:
                    # Forked here rather than the kernel without a spare: a fork in
                    # the middle of a request leaves the child the spawner's stack and
                    # transient objects of that moment, which the spawner then rewrites
                    # (0.35 MiB more per kernel), and it starts slower too.
                    spawner.refill_spares()
                _handle(spawner, conn, request)
    finally:
        spawner.shutdown()


SCRATCH_PREFIX = "sandbox-spawner-"
WORK_ROOT = "work"  # under the scratch directory: mounts.make_work_root


def _sweep_stale_scratch(root: str) -> None:
    """Remove the scratch directories of spawners that were killed: their tmpfs
    lived in their own mount namespace, so here each is an empty directory."""
    pattern = re.compile(rf"^{SCRATCH_PREFIX}(\d+)-")
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            m = pattern.match(entry.name)
            if m and not os.path.exists(f"/proc/{m.group(1)}"):
                with contextlib.suppress(OSError):
                    os.rmdir(entry.path)


def main() -> None:
    """Entry point of the spawner process: `python -m sandbox.spawner FD [--spares N]
    [--start-timeout S] [--uids FIRST:COUNT] [--cgroup-layout L] [--preimport M]`, FD connected to
    the server; N spares kept ready (default: [sandbox] spare_processes), S seconds before a kernel
    start is given up on, the kernels' uids (sandbox.kernel_uids), the cgroup
    layout forced (v2, hybrid, v1, none) or auto, detected (sandbox.cgroups); M the
    modules python3 kernels start with (sandbox.preimport)."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.spawner")
    parser.add_argument("fd", type=int)
    parser.add_argument("--spares", type=int, default=SandboxSettings().spare_processes)
    parser.add_argument("--start-timeout", type=float, default=kernel_start.START_TIMEOUT)
    uids = kernel_uids.UidRange.parse
    parser.add_argument("--uids", type=uids, default=kernel_uids.DEFAULT_RANGE)
    layouts = ["auto", *(layout.value for layout in cgroups.Layout)]
    parser.add_argument("--cgroup-layout", choices=layouts, default="auto")
    from_env = environment.preimport_from_environment()
    default_preimport = SandboxSettings().preimport if from_env is None else from_env
    parser.add_argument("--preimport", default=default_preimport)
    args = parser.parse_args()
    conn = socket.socket(fileno=args.fd)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when we stop
    pid_namespace.become_subreaper()
    syscalls.unshare(syscalls.CLONE_NEWNS)
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    try:
        preimport.preimport(args.preimport)
    except preimport.PreimportError as e:
        _reply(conn, {"ok": False, "ready": False, "error": str(e)})
        return
    # Every kernel is a fork of this process: what every python3 kernel does first
    # (the system site's .pth files) is done here once, before the modules a kernel
    # must forget are listed (kernel_inputs.Environment, host_modules).
    python_repl.kernel_sys_path()
    tmp = environment.tmpdir_from_environment()
    _sweep_stale_scratch(tmp)
    scratch = os.path.join(tmp, f"{SCRATCH_PREFIX}{os.getpid()}-{os.urandom(6).hex()}")
    os.mkdir(scratch, 0o700)
    syscalls.mount(
        "tmpfs", scratch, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, "size=64m,mode=700"
    )
    try:
        mounts.make_work_root(f"{scratch}/{WORK_ROOT}")
        try:
            manager = cgroups.detect(None if args.cgroup_layout == "auto" else args.cgroup_layout)
            spawner = Spawner(manager, scratch, args.spares, args.start_timeout, args.uids)
        except kernel_init_build.BuildError as e:  # the host lacks a C compiler or libc.a
            _reply(conn, {"ok": False, "ready": False, "error": str(e)})
            return
        # Objects that exist now are moved out of the collector's sight, so that a
        # collection in a kernel does not write to (and so copy) every page that
        # holds them.
        gc.freeze()
        spawner.fork_zygote()
        spawner.refill_spares()
        _reply(conn, {"ok": True, "ready": True, "pid": os.getpid()})
        serve(conn, spawner)
    finally:
        with contextlib.suppress(OSError):
            syscalls.umount(scratch)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
