"""`doctor`: what this host supports for kernels, what will not work, and the fix.

Each check is small and independent; a failed check is one line that says what
to do. The exit status is 1 when something the sandbox needs is missing, so the
script can gate a deployment.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass

from . import (
    cgroups,
    environment,
    kernel_init_build,
    kernel_uids,
    languages,
    pid1,
    syscalls,
)

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def check_root() -> Check:
    if os.geteuid() == 0:
        return Check("root", OK, "running as uid 0")
    return Check("root", FAIL, f"running as uid {os.geteuid()}", "run as root (sudo)")


def check_namespaces() -> Check:
    pid = os.fork()
    if pid == 0:
        try:
            syscalls.unshare(pid1.NAMESPACES)
            os._exit(0)
        except OSError as e:
            os._exit(min(e.errno or 1, 255))
    status = os.waitpid(pid, 0)[1]
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return Check("namespaces", OK, "mount, pid, net, ipc, uts, cgroup")
    return Check(
        "namespaces",
        FAIL,
        f"unshare failed (errno {os.WEXITSTATUS(status)})",
        "run on a kernel with namespaces enabled, outside a restricted container",
    )


def check_user_namespaces() -> Check:
    limit = _read_int("/proc/sys/user/max_user_namespaces")
    restricted = _read_int("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    if restricted:
        return Check(
            "user namespaces",
            WARN,
            "AppArmor restricts unprivileged user namespaces (not needed when run as root)",
            "only a future rootless mode needs them: "
            "sysctl kernel.apparmor_restrict_unprivileged_userns=0",
        )
    if not limit:
        return Check("user namespaces", WARN, "disabled (not needed when run as root)")
    return Check("user namespaces", OK, f"available (max {limit})")


def check_seccomp() -> Check:
    actions = _read("/proc/sys/kernel/seccomp/actions_avail").split()
    if "kill_process" not in actions:
        return Check("seccomp", FAIL, "the kernel lacks seccomp kill_process", "Linux >= 4.14")
    try:
        from . import seccomp

        seccomp.build_filter()
    except Exception as e:  # libseccomp missing or too old
        return Check(
            "seccomp", FAIL, f"cannot build the filter: {e}", "apt-get install libseccomp2"
        )
    return Check("seccomp", OK, f"filter builds; actions: {' '.join(actions)}")


def check_cgroups(layout: str | None = None) -> Check:
    """The layout `layout` forces (None: the detected one) and what it can do here."""
    try:
        info = cgroups.detect(layout).describe()
    except cgroups.CgroupError as e:
        return Check(
            "cgroups", FAIL, str(e), "mount cgroupfs read-write or unset SANDBOX_CGROUP_LAYOUT"
        )
    limits = info.get("limits", {})
    have = ", ".join(k for k, v in limits.items() if v) or "none"
    detail = f"layout {info.get('layout')}; limits: {have}; kill: {info.get('kill')}"
    problems = info.get("problems") or []
    if info.get("layout") == "none":
        return Check(
            "cgroups",
            WARN,
            detail + "; rlimits only (weaker: memory as address space per process, a"
            " fork budget counted on the uid all kernels share, no CPU quota)",
            "run as root on a host with a writable cgroup tree",
        )
    if problems or not all(limits.values()):
        return Check("cgroups", WARN, detail + "; " + "; ".join(problems))
    return Check("cgroups", OK, detail)


def check_filesystems() -> Check:
    available = {line.split()[-1] for line in _read("/proc/filesystems").splitlines() if line}
    missing = [fs for fs in ("tmpfs", "proc", "devpts") if fs not in available]
    if missing:
        return Check("filesystems", FAIL, f"missing {', '.join(missing)}")
    overlay = "overlay available" if "overlay" in available else "no overlay (not needed yet)"
    return Check("filesystems", OK, f"tmpfs, proc, devpts; {overlay}")


def check_kernel_uids(uids: kernel_uids.UidRange) -> Check:
    """Kernels run as uids of the range, and folders' files belong to FOLDER_UID:
    an account, a subordinate id range or another process with one of those
    would share a kernel's per-uid budgets, and could signal its processes."""
    found = kernel_uids.conflicts(uids)
    others = [f for f in found if not f.startswith("process ")]
    processes = [f for f in found if f.startswith("process ")]
    where = f"{uids.first}-{uids.last} and {kernel_uids.FOLDER_UID} (folders)"
    if others:
        return Check(
            "kernel uids",
            FAIL,
            f"{where} in use: {'; '.join(others[:5])}",
            "set kernel_uid_first and kernel_uid_count to a range no one uses",
        )
    if processes:
        return Check(
            "kernel uids",
            WARN,
            f"{where}: {len(processes)} processes run as them ({processes[0]}, ...)",
            "a running server's kernels do: run the doctor with the server stopped",
        )
    return Check("kernel uids", OK, f"{where}: no account, id range or process uses them")


def check_kernel_init() -> Check:
    """Pid 1 of a server-mode kernel is a small C program, compiled on this host."""
    try:
        built = kernel_init_build.prepare()
    except kernel_init_build.BuildError as e:
        return Check("kernel-init", FAIL, str(e)[-300:], "apt-get install gcc libc6-dev")
    os.close(built.binary_fd)
    os.close(built.helper_fd)
    return Check("kernel-init", OK, f"compiled: {built.binary}")


def check_kernel_start() -> Check:
    """The whole recipe, end to end: start a kernel that runs /bin/true."""
    result = subprocess.run(
        [sys.executable, "-m", "sandbox.exec_cli", "--", "/bin/true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode == 0:
        return Check("kernel start", OK, "a kernel ran /bin/true with the full recipe")
    return Check("kernel start", FAIL, result.stderr.strip()[-300:] or f"exit {result.returncode}")


def check_runtimes() -> list[Check]:
    checks = []
    for row in languages.LANGUAGES:
        missing = row.missing()
        if not missing:
            paths = [shutil.which(c, path=languages.HOST_SEARCH_PATH) for c in row.requires]
            checks.append(Check(f"runtime {row.name}", OK, ", ".join(p or "" for p in paths)))
            continue
        # Found only elsewhere (root's ~/.cargo/bin, say)? Kernels see /usr and /bin only.
        elsewhere = [shutil.which(c) for c in missing]
        detail = f"{' '.join(missing)} not found"
        if all(elsewhere):
            detail = f"found at {', '.join(p or '' for p in elsewhere)}, which kernels cannot see"
        checks.append(Check(f"runtime {row.name}", WARN, detail, f"apt-get install {row.packages}"))
    bwrap = shutil.which("bwrap")
    checks.append(
        Check("bubblewrap", OK, bwrap)
        if bwrap
        else Check(
            "bubblewrap",
            WARN,
            "not found (only the benchmark's baseline uses it)",
            "apt-get install bubblewrap",
        )
    )
    return checks


def run_checks(
    uids: kernel_uids.UidRange = kernel_uids.DEFAULT_RANGE, cgroup_layout: str | None = None
) -> list[Check]:
    checks = [check_root()]
    if checks[0].status == FAIL:
        return checks
    checks += [
        check_namespaces(),
        check_user_namespaces(),
        check_seccomp(),
        check_cgroups(cgroup_layout),
        check_filesystems(),
        check_kernel_uids(uids),
        check_kernel_init(),
        check_kernel_start(),
    ]
    return checks + check_runtimes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="doctor", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.add_argument(
        "--uids",
        type=kernel_uids.UidRange.parse,
        default=kernel_uids.DEFAULT_RANGE,
        metavar="FIRST:COUNT",
        help="the kernels' uids, as the server's kernel_uid_first and kernel_uid_count",
    )
    args = parser.parse_args(argv)
    checks = run_checks(args.uids, environment.layout_from_environment())
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        for c in checks:
            print(f"{c.status:>4}  {c.name:<18} {c.detail}")
            if c.fix and c.status != OK:
                print(f"{'':>4}  {'':<18} fix: {c.fix}")
    return 1 if any(c.status == FAIL for c in checks) else 0


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _read_int(path: str) -> int | None:
    text = _read(path).strip()
    return int(text) if text.lstrip("-").isdigit() else None


if __name__ == "__main__":
    sys.exit(main())
