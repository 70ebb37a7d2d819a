"""What the spawner holds and does (sandbox.spawner is the process and its wire):
the zygotes, the spares they fork ahead of demand, and the kernels started from
them, each with its cgroup, its /home/work tmpfs and its uid; how a kernel is
started, accounted, limited, destroyed and reaped. Runs in the spawner process,
which is single-threaded (starts under way are served between requests), so
nothing here takes a lock.

There are two zygotes when python3 kernels pre-import modules
(sandbox.preimport): one forked before the pre-import, one after. A kernel's
spec says which it comes from (`KernelSpec.preimported`): python3 kernels that
want numpy at hand from the second; every other kernel, and one-shot jobs, from
the first, whose smaller heap makes each of the kernel's forks and exits cheaper
(a fork copies the page tables of the whole heap)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import os
import socket
import sys
import time
from dataclasses import dataclass

from . import (
    cgroups,
    kernel_inputs,
    kernel_start,
    kernel_uids,
    mounts,
    pid_namespace,
    privileges,
    syscalls,
    zygote,
)
from .runner import forking
from .spare import Spare
from .spec import KernelSpec, SpecError

# Under the scratch directory: each kernel's /home/work tmpfs, in a private
# directory, and where it is handed over to its pid 1 (mounts.make_handover_root).
WORK_ROOT = "work"
HANDOVER_ROOT = "handover"
# After a request, spares are forked once the spawner has had no request for this
# long (at once when none is left): a fork beside the start of the kernel just
# asked for would compete with it for the CPUs.
REFILL_IDLE_SECONDS = 0.01


@dataclass
class _Line:
    """A zygote and the spares it forked ahead of demand (`wanted` of them)."""

    zygote: zygote.Zygote
    wanted: int
    spares: list[Spare] = dataclasses.field(default_factory=list)


@dataclass
class Starting:
    """A kernel whose pid 1 is setting itself up (Spawner.begin_spawn)."""

    kernel_id: str
    spec: KernelSpec
    keep_work: bool
    payload: kernel_inputs.Payload
    work: str | None = None
    handover: str | None = None  # where its pid 1 finds `work`, while it starts
    cgroup: cgroups.KernelCgroup | None = None
    host_end: socket.socket | None = None
    pending: kernel_start.PendingStart | None = None
    tag: object = None  # the spawn request's, for its reply

    def cleanup_failed_start(self, spawner: Spawner, error: BaseException) -> None:
        """Free what this try held: the host's socket end, and the cgroup, unless its
        pid 1 would not die (then it goes once that is reaped, as for a destroy)."""
        if self.host_end is not None:
            self.host_end.close()
            self.host_end = None
        undead = error.undead if isinstance(error, kernel_start.KernelStartError) else None
        if undead is None:
            with contextlib.suppress(cgroups.CgroupError):
                self.cgroup.remove()
        else:
            print(f"spawner: pid {undead} of a failed start will not die",
                  file=sys.stderr, flush=True)  # fmt: skip
            spawner.undead[f"start-{undead}"] = _Kernel(
                undead, self.cgroup, self.work or "", self.payload.uid
            )


@dataclass
class _Kernel:
    pid: int
    cgroup: cgroups.KernelCgroup
    work: str
    uid: int
    status: int | None = None  # wait status once pid 1 has exited
    # A copy of the host's end of its socket, while kernels outlive their server
    # (sandbox.spawner, --keep-for): pid 1 exits when every copy has closed.
    host: socket.socket | None = None


@dataclass
class Ending:
    """A kernel being destroyed (Spawner.begin_destroy): its pid 1 has had SIGKILL,
    and the kernel is freed once that pid 1 is reaped, or at `deadline`."""

    kernel_id: str
    kernel: _Kernel
    keep_work: bool
    pids_limit_hits: int
    deadline: float
    tag: object = None  # the destroy request's, for its reply
    reply_to: object = None  # the connection it came on

    @property
    def done(self) -> bool:
        return self.kernel.status is not None or time.monotonic() >= self.deadline


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
        self.starting: dict[str, Starting] = {}  # begun, their pid 1 still setting up
        self.undead: dict[str, _Kernel] = {}  # destroyed, but some process would not die
        self.ending: dict[str, Ending] = {}  # being destroyed, their pid 1 not yet reaped
        self.env = kernel_inputs.Environment.prepare(
            scratch,
            layout_has_cgroup=cgroup_manager.layout is not cgroups.Layout.NONE,
            server_mode=True,
        )
        # Kept ready when there are cgroups to move into (sandbox.spare); a cgroup is
        # made for a spare before anyone knows which kernel it will be, so cgroups
        # are named k0, k1, ... (ask `stats` for a kernel's), not after kernels.
        self.spares_wanted = spares if self.env.layout_has_cgroup else 0
        self._cgroup_names = (f"k{n}" for n in itertools.count())
        # by KernelSpec.preimported; one line for both without a pre-import
        self.lines: dict[bool, _Line] = {}  # fork_zygote, before any request

    def fork_zygote(self, preimported: bool, env: kernel_inputs.Environment | None = None) -> None:
        """Fork the process the kernels of that kind come from (sandbox.zygote),
        while this one has served no request and knows no kernel. `env`: what the
        zygote's kernels get, if not this spawner's (its host modules listed after
        the pre-import). The first zygote serves both kinds until a second is forked."""
        program = self.env.kernel_init
        forked = zygote.Zygote.fork(env or self.env, keep=(program.binary_fd, program.helper_fd))
        # the pre-imported kernels' spares are wanted from the start, the others' once asked for
        line = _Line(forked, self.spares_wanted if preimported else 0)
        self.lines[preimported] = line
        self.lines.setdefault(not preimported, line)

    @property
    def zygote(self) -> zygote.Zygote:
        """The zygote of python3 kernels (the one `info` reports)."""
        return self.lines[True].zygote

    def _distinct_lines(self) -> list[_Line]:
        return list({id(line): line for line in self.lines.values()}.values())

    @property
    def spares(self) -> list[Spare]:
        """Every spare ready now."""
        return [spare for line in self._distinct_lines() for spare in line.spares]

    def refill_timeout(self) -> float | None:
        """How long the spawner may wait for a request before it forks spares: None
        when none is missing, 0 when a kind has none left."""
        short = [line for line in self._distinct_lines() if len(line.spares) < line.wanted]
        if not short:
            return None
        return 0 if any(not line.spares for line in short) else REFILL_IDLE_SECONDS

    def has_spare(self, preimported: bool) -> bool:
        return bool(self.lines[preimported].spares)

    # -- requests -------------------------------------------------------------

    def begin_spawn(self, kernel_id: str, spec: KernelSpec, keep_work: bool) -> Starting:
        """Hand a new kernel to a spare and return while its pid 1 sets it up: the
        caller waits for `Starting.pending` and then calls `finish_spawn`, serving
        other requests meanwhile. Raises (SpecError, KernelStartError) when it cannot
        even begin, with nothing left behind."""
        if kernel_id in self.kernels or kernel_id in self.starting:
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
        starting = Starting(kernel_id, spec, keep_work, kernel_inputs.Payload(uid))
        try:
            starting.work = self._work_dir(kernel_id, spec, keep_work, uid)
            starting.handover = self._hand_over(kernel_id, starting.work)
            self._begin(starting, self._take_spare(spec.preimported))
        except BaseException as e:
            self._abandon(starting, e)
            raise
        self.starting[kernel_id] = starting
        return starting

    def finish_spawn(
        self, starting: Starting, timed_out: bool = False, retry: bool = True
    ) -> tuple[int, socket.socket] | None:
        """The kernel's pid 1 and the host's end of its socket, once its status pipe
        ended (or at its deadline: `timed_out`); None when its spare was lost and it
        began again from a new one (wait for `starting.pending` again). Raises
        KernelStartError when it failed, with nothing left behind."""
        self.starting.pop(starting.kernel_id, None)
        try:
            try:
                pid = starting.pending.finish(timed_out).pid
            except kernel_start.SpareLost as e:
                starting.cleanup_failed_start(self, e)
                if not retry:
                    raise
                print(f"spawner: kernel {starting.kernel_id}: a spare was lost ({e}); "
                      "starting it from a new one", file=sys.stderr, flush=True)  # fmt: skip
                self._begin(starting, None)
                self.starting[starting.kernel_id] = starting
                return None
            except BaseException as e:
                starting.cleanup_failed_start(self, e)
                raise
        except BaseException as e:
            self._abandon(starting, e)
            raise
        self._end_handover(starting)
        cgroup, host_end = starting.cgroup, starting.host_end
        cgroup.track(functools.partial(_namespace_pids, pid))
        self.kernels[starting.kernel_id] = _Kernel(pid, cgroup, starting.work, starting.payload.uid)
        return pid, host_end

    def _abandon(self, starting: Starting, error: BaseException) -> None:
        """What a start that failed leaves: its work directory and uid (kept for a
        restart's next try)."""
        self._end_handover(starting)
        if starting.keep_work:
            return
        if starting.work is not None:
            self._remove_work(starting.work)
        if isinstance(error, kernel_start.KernelStartError) and error.undead:
            self.uids.detach(starting.kernel_id)  # freed once the undead pid 1 is reaped
        else:
            self.uids.release(starting.kernel_id)

    def _take_spare(self, preimported: bool) -> Spare | None:
        """The oldest spare of that kind, if any is ready; from now on that kind's
        spares are kept ready."""
        line = self.lines[preimported]
        line.wanted = self.spares_wanted
        return line.spares.pop(0) if line.spares else None

    def _new_spare(self, limits: cgroups.CgroupLimits, preimported: bool) -> Spare:
        """A spare from that kind's zygote, in a new cgroup with `limits`."""
        cgroup = self.cgroups.create(next(self._cgroup_names), limits)
        try:
            return self.lines[preimported].zygote.spare(cgroup, self.start_timeout)
        except BaseException:
            cgroup.remove()
            raise

    def _begin(self, starting: Starting, spare: Spare | None) -> None:
        """Start the kernel from the spare, or from a new one made now (every kernel
        comes from a zygote), and return while it sets itself up. Leaves nothing
        behind when it fails (the work directory aside)."""
        spec = starting.spec
        limits = cgroups.CgroupLimits(spec.memory_bytes, spec.pids, spec.cpu_quota)
        if spare is not None:
            try:
                spare.cgroup.set_limits(limits)
            except cgroups.CgroupError as e:
                self._drop_spare(spare)
                spare = None
                print(f"spawner: kernel {starting.kernel_id}: a spare was lost (its cgroup: "
                      f"{e}); starting it from a new one", file=sys.stderr, flush=True)  # fmt: skip
        if spare is None:
            try:
                spare = self._new_spare(limits, spec.preimported)
            except (OSError, cgroups.CgroupError) as e:
                raise kernel_start.KernelStartError(f"kernel setup failed at spare: {e}") from e
        starting.cgroup = spare.cgroup
        rlimits = privileges.kernel_rlimits(
            spec, self.env.layout_has_cgroup, starting.payload.uid, forked=True
        )
        host_end, kernel_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            starting.pending = kernel_start.begin_start(
                spec, starting.handover, starting.payload, rlimits, kernel_end, spare,
                self.start_timeout,
            )  # fmt: skip
        except BaseException:
            host_end.close()
            starting.cgroup.remove()
            raise
        finally:
            kernel_end.close()
        starting.host_end = host_end

    def destroy(self, kernel_id: str, keep_work: bool) -> tuple[int | None, int]:
        """Kill the kernel and free what it holds, waiting for it to die (see
        begin_destroy and finish_destroy)."""
        return self.finish_destroy(self.begin_destroy(kernel_id, keep_work))

    def begin_destroy(self, kernel_id: str, keep_work: bool) -> Ending:
        """SIGKILL the kernel's pid 1, which takes its whole pid namespace down; the
        spawner serves other requests while that happens (a few milliseconds, more
        on a busy host), and frees the kernel once pid 1 is reaped (finish_destroy)."""
        kernel = self.kernels.pop(kernel_id)
        if kernel.host is not None:
            kernel.host.close()
            kernel.host = None
        try:
            pids_limit_hits = kernel.cgroup.pids_limit_hits()
        except (cgroups.CgroupError, OSError, ValueError):
            pids_limit_hits = 0
        if kernel.status is None:  # once reaped, its pid may be another process's
            pid_namespace.kill_kernel(kernel.pid)
        deadline = time.monotonic() + cgroups.KILL_TIMEOUT
        ending = Ending(kernel_id, kernel, keep_work, pids_limit_hits, deadline)
        self.ending[kernel_id] = ending
        return ending

    def finish_destroy(self, ending: Ending) -> tuple[int | None, int]:
        """Free a kernel begin_destroy killed: its wait status and the forks its pids
        limit refused over its life (for the operators' metrics). A kernel that
        will not die (a process stuck in the kernel's uninterruptible sleep, or
        frozen) is given up on after cgroups.KILL_TIMEOUT, logged, and kept in
        `undead` until its pid 1 is reaped (see reap): the spawner must stay
        responsive for every other kernel."""
        kernel_id, kernel = ending.kernel_id, ending.kernel
        self.ending.pop(kernel_id, None)
        try:
            kernel.cgroup.remove()
            if kernel.status is None:
                kernel.status = pid_namespace.wait_for_exit(kernel.pid, cgroups.KILL_TIMEOUT)
            if kernel.status is None:
                raise cgroups.CgroupError(f"pid {kernel.pid} did not exit")
        except cgroups.CgroupError as e:
            print(f"spawner: kernel {kernel_id} will not die: {e}", file=sys.stderr, flush=True)
            self.undead[kernel_id] = kernel
        if not ending.keep_work:  # else a restart: its work and uid are kept for it
            self._remove_work(kernel.work)
            if kernel_id in self.undead:
                self.uids.detach(kernel_id)  # freed once its pid 1 is reaped
            else:
                self.uids.release(kernel_id)
        return kernel.status, ending.pids_limit_hits

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
        for preimported, line in list(self.lines.items()):
            while len(line.spares) < line.wanted:
                try:
                    spare = self._new_spare(cgroups.CgroupLimits.unlimited(), preimported)
                except (OSError, cgroups.CgroupError) as e:
                    print(f"spawner: no spare: {e}", file=sys.stderr, flush=True)
                    return
                line.spares.append(spare)

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
        by_pid.update((e.kernel.pid, e.kernel) for e in self.ending.values())
        undead = {k.pid: kernel_id for kernel_id, k in self.undead.items()}
        lines = self._distinct_lines()
        zygotes = {line.zygote.pid: line.zygote for line in lines}
        spares = {spare.pid: (spare, line) for line in lines for spare in line.spares}
        starting = {s.pending.pid: s.pending for s in self.starting.values() if s.pending}
        for pid, status in forking.reap_exited().items():
            if pid in starting:  # it failed: its status pipe says why
                starting[pid].exit_status = status
            elif pid in zygotes:
                zygotes[pid].status = status
                print(f"spawner: a zygote exited (status {status}): no kernel of its "
                      "kind can start", file=sys.stderr, flush=True)  # fmt: skip
            elif pid in spares:
                spare, line = spares[pid]
                line.spares.remove(spare)
                self._drop_spare(spare, reaped=True)
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

    def end_kernels(self) -> None:
        """Destroy every kernel (their server is gone for good)."""
        self.reap()  # any kernel that has exited (keeping its status)
        for kernel_id in list(self.kernels):
            with contextlib.suppress(Exception):
                self.begin_destroy(kernel_id, keep_work=False)
        for ending in list(self.ending.values()):
            with contextlib.suppress(Exception):
                self.finish_destroy(ending)

    def shutdown(self) -> None:
        for starting in list(self.starting.values()):
            with contextlib.suppress(Exception):
                self.finish_spawn(starting, timed_out=True, retry=False)  # killed
        spares = self.spares
        for line in self._distinct_lines():
            line.wanted, line.spares = 0, []
        for spare in spares:
            spare.discard()
        for spare in spares:  # reaped here: none outlives us, not even as a zombie
            pid_namespace.wait_for_exit(spare.pid, cgroups.KILL_TIMEOUT)
            with contextlib.suppress(cgroups.CgroupError):
                spare.cgroup.remove()
        self.end_kernels()
        for kernel in self.undead.values():  # one last try
            with contextlib.suppress(Exception):
                kernel.cgroup.remove()
        for line in self._distinct_lines():
            line.zygote.close(cgroups.KILL_TIMEOUT)
        self.cgroups.cleanup()

    # -- work directories -----------------------------------------------------

    def _work_dir(self, kernel_id: str, spec: KernelSpec, keep_work: bool, uid: int) -> str:
        """The kernel's /home/work tmpfs, owned by its uid; reused when a restart keeps it."""
        work = f"{self.scratch}/{WORK_ROOT}/{kernel_id}"
        if not (keep_work and os.path.ismount(work)):
            mounts.mount_work(work, spec.work_bytes, uid)
        return work

    def _hand_over(self, kernel_id: str, work: str) -> str:
        """Bind the kernel's work directory where its pid 1 finds it: under the shared
        handover directory, whose mounts reach the zygotes' mount namespaces and the
        spares made from them.

        Only while the kernel starts (`_end_handover`): a spare's unshare(CLONE_NEWNS)
        copies every mount of its zygote's namespace, and its pivot_root drops them
        again; with every kernel's work mount there, each start copied and dropped
        one mount per live kernel (create+destroy 13 ms with 10 alive, 19 ms with 400)."""
        path = f"{self.scratch}/{HANDOVER_ROOT}/{kernel_id}"
        os.makedirs(path, exist_ok=True)
        syscalls.mount(work, path, None, syscalls.MS_BIND)
        return path

    def _end_handover(self, starting: Starting) -> None:
        """Undo `_hand_over` once the kernel's pid 1 has bound its work (or failed)."""
        if starting.handover is not None:
            self._remove_work(starting.handover)
            starting.handover = None

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
