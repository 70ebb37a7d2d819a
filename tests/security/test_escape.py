"""Escape attempts from inside a kernel (threat-model.md): each must fail.

Attacks that do not change the kernel share one (`shared_kernel`); each test
runs its attack as Python code in the kernel and asserts on what it printed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import textwrap

import pytest
from helpers.harness import kernel_spec

from sandbox.kernel_uids import DEFAULT_RANGE
from sandbox.spec import Bind


def run_ok(kernel, code: str) -> str:
    """Run code in the kernel; it must finish cleanly. Returns stdout."""
    out = kernel.run(textwrap.dedent(code))
    assert out.exit_code == 0, f"kernel code failed:\n{out.stderr}"
    return out.stdout


# -- row 10, and the host's files -------------------------------------------------


def test_host_secrets_unreadable(shared_kernel, tmp_path):
    canary = tmp_path / "server-data"
    canary.mkdir()
    (canary / "keys.sqlite").write_text("secret")
    out = run_ok(
        shared_kernel,
        f"""
        import os
        paths = ("/etc/shadow", "/root", "{canary}", "{canary}/keys.sqlite", "/work",
                 "/proc/1/root/etc/shadow")
        for path in paths:
            try:
                os.stat(path)
                print(path, "VISIBLE")
            except OSError as e:
                print(path, "hidden", e.errno)
        """,
    )
    assert "VISIBLE" not in out, out


@pytest.mark.parametrize(
    "path", ["/usr/sandbox-test", "/etc/passwd", "/bin/sandbox-test", "/sandbox-test"]
)
def test_system_paths_read_only(shared_kernel, path):
    out = run_ok(
        shared_kernel,
        f"""
        import errno
        try:
            open({path!r}, "a").close()
            print("WRITABLE")
        except OSError as e:
            print("refused", errno.errorcode[e.errno])
        """,
    )
    assert out.startswith("refused"), out
    assert not os.path.exists("/usr/sandbox-test")


def test_environment_is_allowlisted(shared_kernel, monkeypatch):
    out = run_ok(shared_kernel, "import os; print(sorted(os.environ))")
    names = set(eval(out))
    allowed = {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LC_ALL",
        "PYTHONUNBUFFERED", "PYTHONIOENCODING", "MPLBACKEND", "SANDBOX_MEMORY_LIMIT",
        "PYTHONPATH", "MPLCONFIGDIR", "XDG_CACHE_HOME", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
    }  # fmt: skip
    assert names <= allowed, names - allowed


def test_no_host_paths_in_mountinfo_or_hostname(shared_kernel):
    out = run_ok(
        shared_kernel,
        """
        import socket
        print(socket.gethostname())
        print(open("/proc/self/mountinfo").read())
        print(open("/proc/1/cmdline").read())
        print(open("/proc/self/cmdline").read())
        """,
    )
    assert out.splitlines()[0] == "sandbox"
    for host_path in ("/work/main", "/tmp/sandbox-spawner", ".venv", "/root"):
        assert host_path not in out, host_path


# -- pid 1 (kernel-init) and its file helper ---------------------------------------


def test_pid_1_cannot_be_inspected_or_signalled(shared_kernel):
    # It runs as the kernel's user, so only its being non-dumpable keeps user code
    # out of its memory (/proc/1/mem needs no ptrace call) and its host fds.
    out = run_ok(
        shared_kernel,
        """
        import os, signal
        for what, path in (("read", "/proc/1/mem"), ("read", "/proc/1/environ"),
                           ("link", "/proc/1/exe"), ("link", "/proc/1/cwd"),
                           ("list", "/proc/1/fd")):
            try:
                if what == "read":
                    open(path, "rb").read(1)
                elif what == "link":
                    os.readlink(path)
                else:
                    os.listdir(path)
                print(path, "OPEN")
            except PermissionError:
                print(path, "refused")
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL, signal.SIGSTOP):
            os.kill(1, sig)  # from inside its namespace, pid 1 gets none of these
        print("signalled")
        """,
    )
    assert out.count("refused") == 5 and "OPEN" not in out, out
    assert run_ok(shared_kernel, "print('alive')") == "alive\n"


def test_the_file_helper_shows_no_host_path(shared_kernel):
    reply, _ = shared_kernel.sandbox.run(shared_kernel.k.request("files", path="."))
    assert reply["ok"] is True  # the helper runs now, for a few idle seconds
    out = run_ok(
        shared_kernel,
        """
        import os
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"/proc/self/fd/4" not in f.read():
                        continue
            except OSError:
                continue
            print("HELPER", pid, open(f"/proc/{pid}/cmdline").read())
            print(open(f"/proc/{pid}/stat").read(), open(f"/proc/{pid}/status").read())
        """,
    )
    # its environ, exe, cwd and fds are refused: it is not dumpable (test_file_helper.py)
    assert out.count("HELPER") == 1, out
    for host_path in ("/work/main", "/tmp/sandbox-spawner", ".venv", "/root", "/.cache"):
        assert host_path not in out, out


# -- processes ------------------------------------------------------------------


def test_host_processes_invisible_and_unsignalable(shared_kernel):
    host_pid = os.getpid()
    out = run_ok(
        shared_kernel,
        f"""
        import os
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        print(len(pids), pids[:5])
        try:
            os.kill({host_pid}, 0)
            print("SIGNALABLE")
        except ProcessLookupError:
            print("no such process")
        """,
    )
    count = int(out.split()[0])
    assert count < 10, out
    assert "no such process" in out
    assert os.path.exists(f"/proc/{host_pid}")


def test_only_declared_fds(shared_kernel):
    out = run_ok(
        shared_kernel,
        """
        import os
        listed = os.listdir("/proc/self/fd")
        alive = []
        for fd in map(int, listed):
            try:
                os.fstat(fd)
                alive.append(fd)
            except OSError:
                pass  # the directory fd listdir itself used
        print(sorted(alive))
        print(os.readlink("/proc/self/cwd"))
        """,
    )
    fds, cwd = out.splitlines()
    assert eval(fds) == [0, 1, 2, 3]
    assert cwd == "/home/work"


def test_capabilities_empty_and_no_new_privs(shared_kernel):
    out = run_ok(shared_kernel, "print(open('/proc/self/status').read())")
    status = dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[field], 16) == 0, (field, status[field])
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"
    uids = status["Uid"].split()[:3]
    assert len(set(uids)) == 1 and int(uids[0]) in DEFAULT_RANGE, uids
    limits = run_ok(
        shared_kernel, "import resource; print(resource.getrlimit(resource.RLIMIT_CORE))"
    )
    assert limits.strip() == "(0, 0)"


def test_mount_flags_inside(shared_kernel):
    out = run_ok(shared_kernel, "print(open('/proc/self/mountinfo').read())")
    lines = [line.split() for line in out.splitlines() if line]
    options = {fields[4]: set(fields[5].split(",")) for fields in lines}
    assert "ro" in options["/"]
    for path in ("/usr", "/etc/ld.so.cache", "/etc/alternatives"):
        assert {"ro", "nosuid", "nodev"} <= options[path], (path, options[path])
    for path in ("/tmp", "/home/work", "/dev/shm", "/proc"):
        assert {"rw", "nosuid", "nodev"} <= options[path], (path, options[path])


# -- network --------------------------------------------------------------------


def test_only_loopback_and_host_ports_unreachable(shared_kernel):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        out = run_ok(
            shared_kernel,
            f"""
            import socket
            print(socket.if_nameindex())
            for host in ("127.0.0.1", "10.0.2.2", "169.254.169.254", "8.8.8.8"):
                try:
                    socket.create_connection((host, {port}), timeout=2).close()
                    print(host, "CONNECTED")
                except OSError as e:
                    print(host, "refused", type(e).__name__)
            s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
            c = socket.create_connection(s.getsockname()); print("loopback works")
            """,
        )
    finally:
        listener.close()
    assert out.splitlines()[0] == "[(1, 'lo')]"
    assert "CONNECTED" not in out
    assert "loopback works" in out


# -- syscalls (rows 3, 4, 8) ------------------------------------------------------

SYSCALL_PROBE = """
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
def probe(name, nr, *args):
    r = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
    e = ctypes.get_errno()
    print(name, "ALLOWED" if r >= 0 else errno.errorcode.get(e, e))
"""


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("keyctl", "probe('keyctl', 250, 0, 0)"),
        ("add_key", "probe('add_key', 248, 0, 0, 0, 0, -4)"),
        ("bpf", "probe('bpf', 321, 0, 0, 0)"),
        ("perf_event_open", "probe('perf_event_open', 298, 0, 0, -1, -1, 0)"),
        ("userfaultfd", "probe('userfaultfd', 323, 0)"),
        ("ptrace", "probe('ptrace', 101, 16, 1, 0, 0)"),
        ("io_uring_setup", "probe('io_uring_setup', 425, 1, 0)"),
        ("kexec_load", "probe('kexec_load', 246, 0, 0, 0, 0)"),
        ("mount", "probe('mount', 165, 0, 0, 0, 0, 0)"),
        ("unshare", "probe('unshare', 272, 0x10000000)"),
        ("setns", "probe('setns', 308, 0, 0)"),
        ("init_module", "probe('init_module', 175, 0, 0, 0)"),
        ("clone_newuser", "probe('clone', 56, 0x10000000 | 17, 0, 0, 0, 0)"),
        ("vsock", "probe('socket', 41, 40, 1, 0)"),
    ],
)
def test_dangerous_syscalls_denied(shared_kernel, name, call):
    out = run_ok(shared_kernel, SYSCALL_PROBE + call)
    assert "ALLOWED" not in out, out
    assert out.split()[1] in ("EPERM", "EAFNOSUPPORT", "ENOSYS"), out


def test_unshare_command_fails(shared_kernel):
    out = run_ok(
        shared_kernel,
        """
        import subprocess
        r = subprocess.run(["unshare", "-U", "-r", "id"], capture_output=True, text=True)
        print(r.returncode, r.stderr.strip())
        """,
    )
    assert not out.startswith("0 "), out


@pytest.mark.parametrize("request_code", [0x5412, 0x5412 | (1 << 32)])
def test_tiocsti_denied(shared_kernel, request_code):
    out = run_ok(
        shared_kernel,
        f"""
        import ctypes, errno, os
        libc = ctypes.CDLL(None, use_errno=True)
        pty = os.open("/dev/ptmx", os.O_RDWR)
        ch = ctypes.c_char(b"x")
        r = libc.ioctl(pty, ctypes.c_ulong({request_code}), ctypes.byref(ch))
        print("ALLOWED" if r == 0 else errno.errorcode[ctypes.get_errno()])
        """,
    )
    assert out.strip() == "EPERM", out


def test_foreign_abi_syscall_kills(shared_kernel):
    source = r"""
    #include <stdio.h>
    int main(void) {
        long r;
        __asm__ volatile("int $0x80" : "=a"(r) : "a"(20) : "memory");
        printf("i386 getpid returned %ld\n", r);
        return 0;
    }
    """
    out = run_ok(
        shared_kernel,
        f"""
        import subprocess
        open("/tmp/i386.c", "w").write({textwrap.dedent(source)!r})
        subprocess.run(["gcc", "-o", "/tmp/i386", "/tmp/i386.c"], check=True)
        r = subprocess.run(["/tmp/i386"], capture_output=True, text=True)
        print(r.returncode, r.stdout.strip())
        """,
    )
    assert out.split()[0] == "-31", out  # SIGSYS


# -- row 11: setuid ---------------------------------------------------------------


def test_setuid_binary_gains_nothing(sandbox, tmp_path):
    src = tmp_path / "euid.c"
    src.write_text(
        "#include <stdio.h>\n#include <unistd.h>\n"
        'int main(void){printf("%d\\n", geteuid());return 0;}\n'
    )
    binary = tmp_path / "bin" / "euid"
    binary.parent.mkdir()
    subprocess.run(["gcc", "-o", str(binary), str(src)], check=True)
    os.chown(binary, 0, 0)
    os.chmod(binary, 0o4755)
    spec = kernel_spec(binds=(Bind(str(binary.parent), "/opt/suid", readonly=True),))
    kernel = sandbox.kernel(spec, name="suid")
    try:
        out = run_ok(
            kernel,
            """
            import os, subprocess
            print(oct(os.stat("/opt/suid/euid").st_mode))
            print(subprocess.run(["/opt/suid/euid"], capture_output=True, text=True).stdout.strip())
            """,
        )
    finally:
        kernel.destroy()
    mode, euid = out.split()
    assert mode == "0o104755"  # really setuid root inside
    assert int(euid) in DEFAULT_RANGE


# -- row 4: nothing crosses from one kernel to another ------------------------------


def test_files_in_tmp_and_shm_do_not_reach_other_kernels(sandbox):
    first = sandbox.kernel(name="writer")
    try:
        run_ok(
            first,
            """
            for path in ("/tmp/left", "/dev/shm/left", "/home/work/left", "/var/tmp/left"):
                open(path, "w").write("from the first kernel")
            """,
        )
        second = sandbox.kernel(name="reader")  # concurrent
    finally:
        first.destroy()
    third = sandbox.kernel(name="later")  # sequential
    try:
        for kernel in (second, third):
            out = run_ok(
                kernel,
                """
                import os
                print([p for p in ("/tmp/left", "/dev/shm/left", "/home/work/left",
                                   "/var/tmp/left") if os.path.exists(p)])
                """,
            )
            assert out.strip() == "[]"
    finally:
        second.destroy()
        third.destroy()


# -- rows 9 and 10: host binaries and host information ------------------------------


def test_interpreter_binary_not_writable_through_proc_self_exe(shared_kernel):
    out = run_ok(
        shared_kernel,
        """
        import errno, os
        print(os.readlink("/proc/self/exe"))
        try:
            open("/proc/self/exe", "r+b").close()
            print("WRITABLE")
        except OSError as e:
            print(errno.errorcode[e.errno])
        """,
    )
    exe, result = out.split()
    assert exe.startswith("/usr/")
    assert result in ("EROFS", "EACCES", "ETXTBSY"), out


@pytest.mark.cgroups
def test_sys_is_not_mounted(shared_kernel):
    out = run_ok(
        shared_kernel, "import os; print(os.path.exists('/sys/fs/cgroup'), os.listdir('/'))"
    )
    assert out.startswith("False"), out


@pytest.mark.cgroups
def test_own_cgroup_is_the_root_of_its_cgroup_namespace(shared_kernel):
    """/proc/self/cgroup names no host cgroup, no sandbox-<pid> parent and no kernel
    id: the kernel's cgroup namespace is rooted at its own cgroup."""
    out = run_ok(shared_kernel, "print(open('/proc/self/cgroup').read(), end='')")
    paths = [line.split(":", 2)[2] for line in out.splitlines()]
    assert paths and all(p == "/" for p in paths), out
    assert shared_kernel.id not in out and "sandbox-" not in out


def test_server_packages_not_importable(shared_kernel):
    out = run_ok(
        shared_kernel,
        """
        import importlib, sys
        inside = ("/usr/", "/opt/sandbox/python", "/home/work/.local/")  # the kernel's own
        print(all(p == "" or p.startswith(inside) for p in sys.path), sys.executable)
        kept = [name for name, m in list(sys.modules.items())
                if not (getattr(m, "__file__", None) or "/usr/").startswith("/usr/")
                and name not in ("sandbox", "sandbox.runner")
                and not name.startswith("sandbox.runner.")]
        print("kept from the host:", kept)
        for name in ("prctl", "pyseccomp", "cgroupspy", "sandbox.spawner", "sandbox.cgroups"):
            sys.modules.pop(name, None)
            try:
                importlib.import_module(name)
                print(name, "IMPORTED")
            except ImportError:
                print(name, "absent")
        """,
    )
    assert out.splitlines()[0] == "True /usr/bin/python3"
    assert out.splitlines()[1] == "kept from the host: []", out
    assert "IMPORTED" not in out, out


@pytest.mark.cgroups
def test_cgroups_cannot_be_reached_or_mounted(shared_kernel):
    """No cgroup filesystem inside, and none can be mounted: a kernel cannot raise
    its own limits or move itself out of its cgroup."""
    out = run_ok(
        shared_kernel,
        """
        import ctypes, errno, os
        libc = ctypes.CDLL(None, use_errno=True)
        os.makedirs('/tmp/cg', exist_ok=True)
        for fstype, options in ((b'cgroup2', None), (b'cgroup', b'memory')):
            rc = libc.mount(fstype, b'/tmp/cg', fstype, 0, options)
            print(fstype.decode(), rc, errno.errorcode.get(ctypes.get_errno()))
        """,
    )
    lines = out.split("\n")
    assert lines[0] == "cgroup2 -1 EPERM" and lines[1] == "cgroup -1 EPERM", out
