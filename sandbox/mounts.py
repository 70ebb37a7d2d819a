"""The kernel's root filesystem: a tmpfs of read-only host binds, then pivot_root.

Runs as root, before privileges are dropped, in a mount namespace of its own
(a zygote's or a kernel's). Nothing here can change the host's mount table: a
kernel first makes every mount a slave (nothing flows back to the host), and
last makes its own mounts private.

The root is built in three parts:
* the template (`build_template`), the same for every kernel: a zygote builds it
  once in its mount namespace and seals it read-only; each spare's
  unshare(CLONE_NEWNS) copies it, mounts and all;
* a spare's (`prepare_root`), made ahead while it waits: /proc and devpts, which
  belong to its own pid namespace and ptys;
* the kernel's (`finish_root`), once it is given one: /tmp, /dev/shm, /home/work,
  its /etc/passwd and /etc/group, its binds; then pivot_root. Its mount
  namespace is made before the kernel's `/home/work` exists: the spawner binds
  each one under a shared handover directory (`make_handover_root`) while the
  kernel starts, which reaches the spare's copy of it as a slave.
Exec mode (`build_root`) does all three in the kernel's own namespace.

The root is built from:
* read-only, nosuid, nodev binds of the host's runtime directories (`/usr` and
  the `/etc` entries programs read); where the host has a symlink (`/bin ->
  usr/bin` on merged-usr systems) the root gets the same symlink;
* the `sandbox/rootfs/` skeleton (passwd, group, hosts, ...), written into the
  tmpfs; passwd and group with the kernel's uid are bound over the skeleton's;
* a fresh `/proc` (this pid namespace only), the entries Docker masks masked
  (`_mount_proc`) and /proc/sys, irq, bus and fs read-only;
* a minimal `/dev` in the root's tmpfs: null, zero, full, random, urandom, tty,
  a private devpts;
* `/tmp` and `/dev/shm`, two directories of one size-limited tmpfs, and
  `/home/work` bound from a host directory that the spawner owns (so it
  survives a kernel restart);
* extra binds (`sandbox-exec --bind`), and virtual folders: a loop device's
  ext4 file system mounted (`mount_block_device`).
The root tmpfs is read-only (sealed with the template) and becomes `/` through
pivot_root; the old root is detached so no host path stays reachable.
"""

from __future__ import annotations

import functools
import glob
import os
import stat
from dataclasses import dataclass

from . import idmapped, syscalls
from .spec import WORK_DIR, Bind

# Host paths a kernel sees, read-only. Missing ones are skipped, so one list
# serves hosts with and without merged /usr and optional runtimes.
HOST_PATHS: tuple[str, ...] = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/mime.types",
    "/etc/python3",
    "/etc/python3.11",
    "/etc/fonts",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/bash.bashrc",
    "/etc/inputrc",
    "/etc/terminfo",
    "/etc/java-17-openjdk",
    "/etc/matplotlibrc",  # Debian keeps matplotlib's defaults here
    "/etc/php",  # php.ini and its extensions' .ini files
    "/etc/fpc.cfg",  # Free Pascal's unit paths: -> alternatives -> fpc-<version>.cfg
    *sorted(glob.glob("/etc/fpc-*.cfg")),
)

# The skeleton a kernel's root is built from (etc/passwd, group, hosts, ...).
ROOTFS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rootfs")

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# An empty directory of the root, bound read-only over the /proc directories masked.
EMPTY_DIR = "/var/empty"
# /proc entries that show the host or act on it, masked as Docker (runc's
# maskedPaths) masks them: files by /dev/null, directories by an empty
# read-only directory (EMPTY_DIR). What runc makes read-only (PROC_READONLY)
# stays readable.
PROC_MASKED_FILES = (
    "kcore",  # the host's physical memory, as an ELF core
    "keys",  # every key the kernel holds that the caller may view
    "timer_list",  # pending timers of every CPU: host processes' names and pids
    "timer_stats",
    "sched_debug",  # every runqueue's tasks, host ones too
    "latency_stats",
    "sysrq-trigger",  # reboot, crash, kill-all (runc: read-only)
    "kallsyms",  # kernel addresses (only zeroes without CAP_SYSLOG; masked anyway)
)
PROC_MASKED_DIRS = ("acpi", "scsi", "asound")
PROC_READONLY = ("sys", "irq", "bus", "fs")

_RO_FLAGS = (
    syscalls.MS_BIND
    | syscalls.MS_REMOUNT
    | syscalls.MS_RDONLY
    | syscalls.MS_NOSUID
    | syscalls.MS_NODEV
)


@dataclass(frozen=True)
class RootPlan:
    """Everything `build_root` needs, computed before the fork where possible."""

    skeleton: dict[str, tuple[int, bytes]]  # path in root -> (mode, content)
    work: str  # host directory bound at /home/work
    tmp_bytes: int
    uid: int  # the kernel's (and its gid): sandbox.kernel_uids
    host_paths: tuple[str, ...] = HOST_PATHS
    binds: tuple[Bind, ...] = ()


def load_skeleton(rootfs: str) -> dict[str, tuple[int, bytes]]:
    """Read the `sandbox/rootfs/` skeleton once (in the spawner), keyed by path inside the root."""
    files: dict[str, tuple[int, bytes]] = {}
    for dirpath, _dirs, names in os.walk(rootfs):
        for name in names:
            host = os.path.join(dirpath, name)
            inside = "/" + os.path.relpath(host, rootfs)
            with open(host, "rb") as f:
                files[inside] = (stat.S_IMODE(os.stat(host).st_mode), f.read())
    return files


def mount_work(path: str, size: int, uid: int) -> None:
    """A kernel's /home/work on the host side: a size-limited tmpfs owned by its uid."""
    os.makedirs(path, exist_ok=True)
    options = f"size={size},mode=0755,uid={uid},gid={uid}"
    syscalls.mount("tmpfs", path, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, options)


def make_handover_root(path: str) -> None:
    """Make `path` (in the caller's private mount namespace) the shared mount that
    kernels' /home/work mounts are bound under while they start, so that each also
    appears in the mount namespaces of spares made before it (`prepare_root`)."""
    os.makedirs(path, exist_ok=True)
    syscalls.mount(path, path, None, syscalls.MS_BIND)
    syscalls.mount(None, path, None, syscalls.MS_SHARED)


def build_root(plan: RootPlan, mountpoint: str) -> None:
    """Build the kernel's root at `mountpoint` and pivot into it, all in this mount
    namespace (exec mode). Leaves cwd at `/`."""
    _isolate_mounts()
    _own_root(plan, mountpoint.rstrip("/"))


def build_template(
    skeleton: dict[str, tuple[int, bytes]],
    mountpoint: str,
    host_paths: tuple[str, ...] = HOST_PATHS,
) -> None:
    """The part of a root that is the same for every kernel: a tmpfs at
    `mountpoint` with the host binds, the skeleton, /dev's nodes and links, and
    the directories the rest is mounted on.

    A zygote builds it once in its own mount namespace (then `seal_template`s
    it), and every spare's unshare(CLONE_NEWNS) copies it: a few mounts copied
    in the kernel, where each spare used to make them one syscall at a time from
    Python (0.7 ms of a spare's CPU here). Kernels then share its tmpfs, read-only:
    nothing in it is any kernel's own (`finish_root` binds the kernel's
    /etc/passwd and /etc/group over the skeleton's), and sharing it shows a
    kernel no more of the others than the host binds beside it do."""
    _mount_tmpfs(mountpoint, 4 * 1024 * 1024, 0o755)
    root = mountpoint.rstrip("/")
    for path in host_paths:
        _mirror_host_path(root, path)
    for inside, (mode, content) in skeleton.items():
        _write_file(root + inside, mode, content)
    _mkdir(root + EMPTY_DIR, 0o555)
    _mkdir(root + "/proc", 0o555)
    _make_dev(root)
    os.symlink("/tmp", root + "/var/tmp")
    for path in ("/tmp", "/dev/shm"):
        _mkdir(root + path, 0o1777)
    _mkdir(root + WORK_DIR, 0o755)
    _proc_entries()  # asked here, once: the spares made from this process inherit it


def seal_template(mountpoint: str) -> None:
    """Make a built template read-only (its file system: every copy of it too)."""
    flags = syscalls.MS_REMOUNT | syscalls.MS_RDONLY | syscalls.MS_NOSUID | syscalls.MS_NODEV
    syscalls.mount(None, mountpoint.rstrip("/"), None, flags)


def prepare_root(mountpoint: str) -> None:
    """A spare's part of its root, in its new mount namespace, on its copy of the
    zygote's template at `mountpoint`: what belongs to its namespaces, a /proc of
    its pid namespace and a devpts of its own."""
    _isolate_mounts()
    _mount_namespace_parts(mountpoint.rstrip("/"))


def finish_root(plan: RootPlan, mountpoint: str) -> None:
    """The kernel's own part of its root (/tmp, /dev/shm, /home/work, its
    identity, binds), then pivot into it (a prepare_root'ed `mountpoint`).
    Leaves cwd at `/`.

    A bind outside /home/work may need directories made for it, which the
    read-only template cannot take: such a kernel gets a root of its own, built
    over the template as exec mode builds one (a millisecond more)."""
    root = mountpoint.rstrip("/")
    if any(not _in_work_dir(bind.dst) for bind in plan.binds):
        _own_root(plan, root)
        return
    _mount_kernel_parts(plan, root)
    _pivot(root)


def _in_work_dir(inside: str) -> bool:
    parts = [part for part in inside.split("/") if part]
    return parts[:2] == WORK_DIR.strip("/").split("/") and ".." not in parts


def _own_root(plan: RootPlan, root: str) -> None:
    """A root made whole here (a writable template until its binds are in)."""
    build_template(plan.skeleton, root, plan.host_paths)
    _mount_namespace_parts(root)
    _mount_kernel_parts(plan, root)
    seal_template(root)  # after the binds, which may have made directories
    _pivot(root)


def _isolate_mounts() -> None:
    """Slaves, not private: a work directory mounted later by the caller still
    arrives here (make_handover_root); nothing flows back. `_pivot` makes the
    kernel's mounts private."""
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_SLAVE)


def _mount_namespace_parts(root: str) -> None:
    _mount_proc(root)
    syscalls.mount(
        "devpts",
        root + "/dev/pts",
        "devpts",
        syscalls.MS_NOSUID | syscalls.MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
    )


def _mount_kernel_parts(plan: RootPlan, root: str) -> None:
    made = _mount_tmp_and_shm(root, plan.tmp_bytes)
    syscalls.mount(plan.work, root + WORK_DIR, None, syscalls.MS_BIND)
    syscalls.mount(
        None,
        root + WORK_DIR,
        None,
        syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_NOSUID | syscalls.MS_NODEV,
    )
    _bind_identity(root, made, identity_files(plan.skeleton, plan.uid))
    maps: dict[int, int] = {}  # owner -> its idmapping's user namespace
    try:
        for bind in plan.binds:
            if _is_block_device(bind.src):
                target = mount_block_device(root, bind, plan.uid)
            else:
                target = _bind(root, bind, plan.uid)
            if bind.owner is not None:
                if bind.owner not in maps:
                    maps[bind.owner] = idmapped.user_namespace(root + "/proc", bind.owner, plan.uid)
                idmapped.remap(target, maps[bind.owner])
    finally:
        for fd in maps.values():
            os.close(fd)


def _bind_identity(root: str, made: str, files: dict[str, bytes]) -> None:
    """The kernel's /etc/passwd and /etc/group: written beside its /tmp (in the
    file system `_mount_tmp_and_shm` made, out of the kernel's reach but through
    these binds) and bound read-only over the template's."""
    for path, content in files.items():
        written = f"{made}{path}"
        _write_file(written, 0o644, content)  # makes {made}/etc too
        syscalls.mount(written, root + path, None, syscalls.MS_BIND)
        syscalls.mount(None, root + path, None, _RO_FLAGS)


def _pivot(root: str) -> None:
    os.chdir(root)
    syscalls.pivot_root(".", ".")
    syscalls.umount(".", syscalls.MNT_DETACH)
    os.chdir("/")
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)


def _mirror_host_path(root: str, path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    target = root + path
    _mkdir(os.path.dirname(target), 0o755)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(path), target)
        return
    if stat.S_ISDIR(st.st_mode):
        _mkdir(target, 0o755)
    else:
        _write_file(target, 0o644, b"")
    syscalls.mount(path, target, None, syscalls.MS_BIND)
    syscalls.mount(None, target, None, _RO_FLAGS)


@functools.cache
def _proc_entries() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Which of PROC_READONLY, PROC_MASKED_FILES and PROC_MASKED_DIRS this host's
    kernel has (they are the same in every pid namespace's /proc). Asked once, by
    the zygote's `build_template`: its spares inherit the answer."""
    return (
        tuple(name for name in PROC_READONLY if os.path.exists(f"/proc/{name}")),
        tuple(name for name in PROC_MASKED_FILES if os.path.isfile(f"/proc/{name}")),
        tuple(name for name in PROC_MASKED_DIRS if os.path.isdir(f"/proc/{name}")),
    )


def _mount_proc(root: str) -> None:
    """A /proc of this pid namespace, its host-wide entries masked or read-only.
    Made by a spare ahead of its kernel, so a create does not pay for these
    mounts. An entry this host's kernel lacks is skipped."""
    proc = root + "/proc"
    syscalls.mount(
        "proc", proc, "proc", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC
    )
    readonly, masked_files, masked_dirs = _proc_entries()
    for name in readonly:
        path = f"{proc}/{name}"
        syscalls.mount(path, path, None, syscalls.MS_BIND | syscalls.MS_REC)
        syscalls.mount(None, path, None, _RO_FLAGS | syscalls.MS_NOEXEC)
    for name in masked_files:  # reads are empty, writes go nowhere (as with runc)
        syscalls.mount("/dev/null", f"{proc}/{name}", None, syscalls.MS_BIND)
    for name in masked_dirs:  # the root's empty directory, bound read-only
        path = f"{proc}/{name}"
        syscalls.mount(root + EMPTY_DIR, path, None, syscalls.MS_BIND)
        syscalls.mount(None, path, None, _RO_FLAGS | syscalls.MS_NOEXEC)


def _make_dev(root: str) -> None:
    """A minimal /dev, in the root's own tmpfs (read-only once the root is built):
    the device nodes are binds, which keep their own mount's flags."""
    dev = root + "/dev"
    _mkdir(dev, 0o755)
    for name in DEVICES:
        _write_file(f"{dev}/{name}", 0o666, b"")
        syscalls.mount(f"/dev/{name}", f"{dev}/{name}", None, syscalls.MS_BIND)
    _mkdir(dev + "/pts", 0o755)  # a devpts of each kernel's own: _mount_namespace_parts
    os.symlink("pts/ptmx", dev + "/ptmx")
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, f"{dev}/{name}")


def tmp_mountpoint(mountpoint: str) -> str:
    """An empty directory beside a kernel's root, where its /tmp's file system is
    made before it is bound in (`_mount_tmp_and_shm`)."""
    return mountpoint.rstrip("/") + "-tmp"


def _mount_tmp_and_shm(root: str, size: int) -> str:
    """/tmp and /dev/shm: two directories of one tmpfs of `size` bytes between them,
    made beside the root, bound in, and left behind with the old root. Returns
    where that file system is mounted (beside the root, out of the kernel's view).

    One file system where there were two, as the root holds /dev and the masks of
    /proc its own directories: every tmpfs is a superblock, every superblock a
    shrinker that memory cgroups know of, and each memory cgroup keeps a slot for
    every such shrinker on the host (kmalloc-1k units of 64). With thousands of
    kernels, each with its memory cgroup, that table grows with the square of their
    number: 0.58 MiB per kernel with 4,000 alive, when each kernel had 8 superblocks
    (root, /proc, /dev, devpts, /dev/shm, /tmp, /home/work, a masked /proc directory)."""
    made = tmp_mountpoint(root)
    _mount_tmpfs(made, size, 0o755)
    for name, target in (("tmp", "/tmp"), ("shm", "/dev/shm")):
        _mkdir(f"{made}/{name}", 0o1777)
        syscalls.mount(f"{made}/{name}", root + target, None, syscalls.MS_BIND)
    return made


def _mount_tmpfs(
    path: str, size: int, mode: int, flags: int = syscalls.MS_NOSUID | syscalls.MS_NODEV
) -> None:
    _mkdir(path, mode)
    syscalls.mount("tmpfs", path, "tmpfs", flags, f"size={size},mode={mode:o}")


def identity_files(skeleton: dict[str, tuple[int, bytes]], uid: int) -> dict[str, bytes]:
    """The skeleton's /etc/passwd and /etc/group with `work` given the kernel's
    uid and gid (the skeleton's own are placeholders)."""
    files = {}
    for path, id_fields in (("/etc/passwd", (2, 3)), ("/etc/group", (2,))):
        lines = skeleton[path][1].decode().splitlines()
        for i, line in enumerate(lines):
            fields = line.split(":")
            if fields[0] == "work":
                for at in id_fields:
                    fields[at] = str(uid)
                lines[i] = ":".join(fields)
        files[path] = ("\n".join(lines) + "\n").encode()
    return files


def _bind(root: str, bind: Bind, uid: int) -> str:
    """Bind a host path into the root; returns the target. Its directories are
    created without following symlinks: under /home/work they are the kernel's
    own files (owned by `uid`), which a previous run of the same kernel may have
    turned into symlinks."""
    target = _safe_makedirs(root, bind.dst, uid)
    syscalls.mount(bind.src, target, None, syscalls.MS_BIND | syscalls.MS_REC)
    flags = syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_NOSUID | syscalls.MS_NODEV
    syscalls.mount(None, target, None, flags | (syscalls.MS_RDONLY if bind.readonly else 0))
    return target


def _is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def mount_block_device(root: str, bind: Bind, uid: int) -> str:
    """A bind whose source is a block device (a folder image's loop device, see
    `folder_images`) mounts the ext4 file system on it rather than the device node.
    Every kernel mounting one device shares its superblock, so kernels see each
    other's writes at once; the kernel's mountinfo shows the device, no host path."""
    target = _safe_makedirs(root, bind.dst, uid)
    flags = syscalls.MS_NOSUID | syscalls.MS_NODEV | (syscalls.MS_RDONLY if bind.readonly else 0)
    syscalls.mount(bind.src, target, "ext4", flags)
    return target


def _safe_makedirs(root: str, inside: str, uid: int) -> str:
    path = root
    for part in [p for p in inside.split("/") if p]:
        if part in (".", ".."):
            raise ValueError(f"bind target {inside!r} contains {part!r}")
        path = f"{path}/{part}"
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o755)
            if path.startswith(root + WORK_DIR):
                os.chown(path, uid, uid)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise ValueError(f"bind target {inside!r}: {path[len(root) :]} is not a directory")
    return path


def _mkdir(path: str, mode: int) -> None:
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return
    except FileNotFoundError:
        _mkdir(os.path.dirname(path), 0o755)
        os.mkdir(path, mode)
    os.chmod(path, mode)


def _write_file(path: str, mode: int, content: bytes) -> None:
    _mkdir(os.path.dirname(path), 0o755)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        if content:
            os.write(fd, content)
    finally:
        os.close(fd)
