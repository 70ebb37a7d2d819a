"""What a kernel sees of the host through /proc, and whether any file it can read
names a host path (sandbox/mounts.py: `_mount_proc`).

Masked files are /dev/null (read empty), masked directories an empty read-only
directory of the root's tmpfs, the read-only ones read-only mounts; entries this host's kernel lacks
are skipped, as the root skips them.
"""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

from sandbox import mounts

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_ok(kernel, code: str) -> str:
    out = kernel.run(textwrap.dedent(code))
    assert out.exit_code == 0, f"kernel code failed:\n{out.stdout}{out.stderr}"
    return out.stdout


def mount_options(kernel) -> dict[str, tuple[str, set[str]]]:
    """Mount point -> (filesystem type, per-mount options) from the kernel's mountinfo."""
    out = run_ok(kernel, "print(open('/proc/self/mountinfo').read(), end='')")
    found = {}
    for line in out.splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        found[fields[4]] = (fstype, set(fields[5].split(",")))
    return found


MASKED_FILES = [name for name in mounts.PROC_MASKED_FILES if os.path.isfile(f"/proc/{name}")]
MASKED_DIRS = [name for name in mounts.PROC_MASKED_DIRS if os.path.isdir(f"/proc/{name}")]


@pytest.mark.parametrize("name", MASKED_FILES)
def test_masked_files_are_dev_null(shared_kernel, name):
    out = run_ok(
        shared_kernel,
        f"""
        import os
        st = os.stat("/proc/{name}")
        print(os.major(st.st_rdev), os.minor(st.st_rdev))
        try:
            print(repr(open("/proc/{name}", "rb").read(4096)))
        except PermissionError:
            print("refused")
        try:  # a write is refused or goes to /dev/null
            with open("/proc/{name}", "wb", buffering=0) as f:
                f.write(b"1")
        except OSError:
            pass
        print(repr(open("/proc/{name}", "rb").read(4096)))
        """,
    )
    assert out.split("\n")[:3] == ["1 3", "b''", "b''"], out


@pytest.mark.parametrize("name", MASKED_DIRS)
def test_masked_dirs_are_empty_and_read_only(shared_kernel, name):
    options = mount_options(shared_kernel)
    fstype, flags = options[f"/proc/{name}"]
    assert fstype == "tmpfs" and "ro" in flags
    out = run_ok(shared_kernel, f"import os; print(os.listdir('/proc/{name}'))")
    assert out == "[]\n"


@pytest.mark.parametrize("name", mounts.PROC_READONLY)
def test_host_wide_proc_dirs_are_read_only(shared_kernel, name):
    if not os.path.isdir(f"/proc/{name}"):
        pytest.skip(f"this host has no /proc/{name}")
    fstype, flags = mount_options(shared_kernel)[f"/proc/{name}"]
    assert fstype == "proc" and {"ro", "nosuid", "nodev", "noexec"} <= flags
    out = run_ok(
        shared_kernel,
        f"""
        import os
        written = []
        for dirpath, _dirs, files in os.walk("/proc/{name}"):
            for f in files:
                try:
                    with open(os.path.join(dirpath, f), "wb", buffering=0) as out:
                        out.write(b"1")
                    written.append(os.path.join(dirpath, f))
                except OSError:
                    pass
        print(written)
        """,
    )
    assert out == "[]\n"


SWEEP = r"""
import os, sys
SKIP = {"mem", "pagemap", "kcore", "kmsg", "clear_refs", "kpagecount", "kpageflags",
        "kpagecgroup"}
NEEDLES = eval(sys.stdin.read())
roots, hits, n = sys.argv[1:], [], 0
needles = [s.encode() for s in NEEDLES]

def check(path):
    global n
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        data = os.read(fd, 1 << 20)
    except OSError:
        return
    finally:
        os.close(fd)
    n += 1
    hits.extend(f"{path}: {s.decode()}" for s in needles if s in data)

for root in roots:
    for dirpath, dirs, files in os.walk(root, followlinks=False):
        # other processes' entries and every thread's copy of ours add nothing
        if dirpath == "/proc":
            dirs[:] = [d for d in dirs if not d.isdigit() and d not in ("self", "thread-self")]
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            try:  # where a link points is readable too (fd/, cwd, exe, map_files/)
                target = os.readlink(path)
                hits.extend(f"{path} -> {s}" for s in NEEDLES if s in target)
            except OSError:
                pass
        for name in files:
            if name not in SKIP:
                check(os.path.join(dirpath, name))
print(n, "files read")
print("\n".join(hits) or "no host path")
"""


@pytest.mark.cgroups
def test_no_host_path_in_any_file_a_kernel_can_read(sandbox, shared_kernel):
    info = sandbox.run(sandbox.client.request({"op": "info"}))[0]
    needles = sorted(
        {
            REPO,  # the repository, the spawner's and this test's cwd
            os.getcwd(),
            sys.prefix,  # the virtualenv
            info["scratch"],  # the spawner's scratch directory, its work dirs
            "sandbox-spawner-",
            "/.cache/sandbox-server",  # kernel-init's binary
        }
        - {"/"}
    )
    roots = ["/proc/self", "/proc/1", "/proc", "/etc", "/sys", "/dev", "/home", "/tmp"]
    # the needles go in through stdin: in its argv they would be in its cmdline
    code = f"""
    import subprocess, sys
    r = subprocess.run([sys.executable, "-c", {SWEEP!r}, *{roots!r}], capture_output=True,
                       input={repr(needles)!r}, text=True, timeout=120)
    print(r.stdout, r.stderr)
    """
    out = run_ok(shared_kernel, code)
    files_read = int(out.split()[0])
    assert files_read > 100, out  # it did read
    assert out.splitlines()[1] == "no host path", out
