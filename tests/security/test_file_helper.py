"""Pid 1's file helper against the user code of its own kernel.

The helper (`python3 -I -S`, runner/files.py) runs as the kernel's user, like
user code, and pid 1 forwards its frames flagged FOR_PID1, which the host
believes. The attack: take the helper's socket to pid 1 (pidfd_getfd, or
its memory through /proc/<pid>/mem, opened in the milliseconds between its
exec and its first act), stop the helper, read the host's next file
operation from that socket and answer it with a reply that says "exited" a
second time. What stops it: the seccomp filter denies pidfd_getfd; pid 1 and
so the helper have another real gid than user code (privileges.PID1_REAL_GID),
which fails the kernel's ptrace access check from the helper's exec on (and
leaves it non-dumpable); and pid 1 parses its replies (tested in
tests/unit/test_kernel_init.py).
"""

from __future__ import annotations

import textwrap

from sandbox.kernel import KernelGone

FIND_HELPER = """
import os
def helper_pid():
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"/proc/self/fd/4" in f.read():
                    return int(pid)
        except OSError:
            continue
    raise SystemExit("no helper")
"""


def run_ok(kernel, code: str) -> str:
    out = kernel.run(code)
    assert out.exit_code == 0, f"kernel code failed:\n{out.stdout}{out.stderr}"
    return out.stdout


def start_helper(kernel) -> None:
    """A file operation starts the helper; it stays 5 s once idle."""
    reply, _ = kernel.sandbox.run(kernel.k.request("files", path="."))
    assert reply["ok"] is True


def test_the_helper_is_out_of_reach(shared_kernel):
    start_helper(shared_kernel)
    out = run_ok(
        shared_kernel,
        FIND_HELPER
        + textwrap.dedent(
            """
        import ctypes, errno
        libc = ctypes.CDLL(None, use_errno=True)
        pid = helper_pid()
        for what, path in (("read", "mem"), ("write", "mem"), ("read", "environ"),
                           ("read", "auxv"), ("read", "syscall"), ("link", "exe"),
                           ("link", "cwd"), ("list", "fd"), ("list", "map_files")):
            path = f"/proc/{pid}/{path}"
            try:
                if what in ("read", "write"):
                    open(path, "rb" if what == "read" else "r+b").close()
                elif what == "link":
                    os.readlink(path)
                else:
                    os.listdir(path)
                print(what, path, "OPEN")
            except PermissionError:
                print(what, path, "refused")
        pidfd = libc.syscall(434, pid, 0)  # pidfd_open: any process may
        fd = libc.syscall(438, pidfd, 3, 0)  # pidfd_getfd: its socket to pid 1
        print("pidfd_getfd", "OPEN" if fd >= 0 else errno.errorcode[ctypes.get_errno()])
        """
        ),
    )
    assert "OPEN" not in out, out
    assert out.count("refused") == 9, out


ATTACK = """
import ctypes, errno, os, signal, socket, struct
libc = ctypes.CDLL(None, use_errno=True)
pid = helper_pid()
fd = -1
pidfd = libc.syscall(434, pid, 0)
if pidfd >= 0:
    fd = libc.syscall(438, pidfd, 3, 0)
if fd < 0:
    print("refused", errno.errorcode[ctypes.get_errno()])
else:
    os.kill(pid, signal.SIGSTOP)  # the host's next operation is ours to answer
    if os.fork() == 0:
        sock = socket.socket(fileno=fd)
        sock.settimeout(30)
        header = sock.recv(8, socket.MSG_WAITALL)
        jlen, blen = struct.unpack(">II", header)
        op = sock.recv(jlen + blen, socket.MSG_WAITALL)
        rid = int(op[op.index(b'"rid":') + 6:].split(b",")[0].rstrip(b"}"))
        forged = b'{"ev":"reply","rid":%d,"ok":true,"ev":"exited","status":0}' % rid
        sock.sendall(struct.pack(">II", len(forged), 0) + forged)
        os._exit(0)
    print("stolen")
"""


def test_user_code_cannot_forge_an_exited_through_the_helper(kernel):
    run_ok(kernel, "kept = 'variables live'")
    start_helper(kernel)
    out = run_ok(kernel, FIND_HELPER + ATTACK)
    assert out.startswith("refused"), out
    try:
        reply, _ = kernel.sandbox.run(kernel.k.request("files", path=".", timeout=10))
    except KernelGone:  # a forged reply does not answer the request
        reply = {}
    assert kernel.k.exit_status is None, "a forged 'exited' reached the host"
    assert reply.get("ok") is True, reply
    assert run_ok(kernel, "print(kept)") == "variables live\n"


RACE = r"""
import os, sys, time
seen = set(os.listdir("/proc"))
open("/tmp/race-ready", "w").close()
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    for pid in set(os.listdir("/proc")) - seen:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"/proc/self/fd/4" not in f.read():
                    continue  # not (yet) the helper's exec
            os.close(os.open(f"/proc/{pid}/mem", os.O_RDWR))
            print("OPENED")
        except PermissionError:
            print("refused")
        except OSError:  # gone, or not exec'd yet
            continue
        sys.exit()
print("missed")
"""


KILL_HELPER = """
import time
pid = helper_pid()
os.kill(pid, 9)
for _ in range(1000):
    if not os.path.exists(f"/proc/{pid}"):
        break
    time.sleep(0.01)
"""


def test_the_helper_is_out_of_reach_from_its_exec(kernel):
    """User code that waits for the helper's exec and opens its memory at once: the
    fd would stay usable after the helper's prctl, so the open must fail."""
    for _ in range(3):
        run_ok(
            kernel,
            f"""
import os, subprocess, sys, time
if os.path.exists("/tmp/race-ready"):
    os.unlink("/tmp/race-ready")
p = subprocess.Popen([sys.executable, "-c", {RACE!r}], stdout=subprocess.PIPE, text=True)
for _ in range(1000):
    if os.path.exists("/tmp/race-ready"):
        break
    time.sleep(0.01)
""",
        )
        start_helper(kernel)
        out = run_ok(kernel, "print(p.communicate(timeout=30)[0], end='')")
        assert out == "refused\n", out
        # the next operation starts another, once pid 1 has reaped this one
        run_ok(kernel, FIND_HELPER + KILL_HELPER)
