"""Building kernel-init, pid 1's program in server mode (runner/kernel_init.c),
on the host, and the zip its file helper runs.

The binary is compiled once, static (it runs inside kernels, whose roots bind
the host's /usr but whose pid 1 should not map a libc it does not need), and
cached by the hash of its source and compiler command in the user's cache
directory, so that a spawner start compiles only after the source changed. The
helper's zip holds runner/files.py and runner/protocol.py as they are on disk,
with a __main__ that runs `files.serve`. Each spawner keeps it in a sealed
memfd that every kernel's pid 1 inherits: no host path shows in a helper's
/proc/<pid>/fd, and no kernel can change what another's helper runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import io
import marshal
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from . import environment
from .runner import protocol

RUNNER_DIR = Path(__file__).parent / "runner"
SOURCE = RUNNER_DIR / "kernel_init.c"
# included by SOURCE: part of the cache key
HEADERS = tuple(
    RUNNER_DIR / name for name in ("helper_reply.h", "file_helper.h", "pty_relay.h", "job_watch.h")
)
COMPILE = ["cc", "-O2", "-static", "-Wall", "-Wextra", "-Werror"]
HELPER_MAIN = "import sys\nfrom sandbox.runner import files\nfiles.serve(3, sys.argv[1])\n"


class BuildError(Exception):
    """kernel-init could not be compiled; str() says why (the compiler's output)."""


@dataclass(frozen=True)
class KernelInit:
    """kernel-init, opened once (every kernel's pid 1 inherits the fd and execs
    it; `binary` is its path, for messages), the helper's zip (a sealed memfd),
    and the interpreter that runs the helper, at its path inside a kernel. Both
    fds are close-on-exec: forks inherit them, nothing the kernel runs does."""

    binary: str
    binary_fd: int
    helper_fd: int
    python: str


def prepare(cache_dir: str | None = None) -> KernelInit:
    """Build (or find) kernel-init, open it, and put the helper's zip in a memfd."""
    binary, binary_fd = build(cache_dir or environment.spawner_cache_dir())
    return KernelInit(
        binary=binary,
        binary_fd=binary_fd,
        helper_fd=_sealed_memfd("file-helper.zip", _helper_zip()),
        python=os.path.join(sys.base_prefix, "bin", "python3"),
    )


def build(cache_dir: str) -> tuple[str, int]:
    """kernel-init compiled from the current source, as its path and an fd open on
    it (close-on-exec), compiled first if cache_dir does not hold it yet.

    The file is written whole, then renamed, so that spawners starting at once never
    see half of one. A compile then removes the binaries of other source versions:
    every spawner opens its binary once, at start, so one running an older version
    keeps its own, and one about to open it compiles it again."""
    source = b"\0".join(path.read_bytes() for path in (SOURCE, *HEADERS))
    key = hashlib.sha256(" ".join(COMPILE).encode() + b"\0" + source).hexdigest()[:16]
    binary = os.path.join(cache_dir, f"kernel-init-{key}")
    try:
        return binary, os.open(binary, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        pass
    os.makedirs(cache_dir, mode=0o755, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=".kernel-init-", dir=cache_dir)
    os.close(fd)
    try:
        try:
            result = subprocess.run(
                [*COMPILE, "-o", partial, str(SOURCE)], capture_output=True, text=True
            )
        except FileNotFoundError as e:
            raise BuildError(f"cannot compile {SOURCE}: no C compiler ({e.filename})") from None
        if result.returncode != 0:
            raise BuildError(f"cannot compile {SOURCE}: {result.stderr.strip()}")
        os.chmod(partial, 0o755)
        # opened before the rename: another version's compile may remove it after
        binary_fd = os.open(partial, os.O_RDONLY | os.O_CLOEXEC)
        os.replace(partial, binary)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    for old in Path(cache_dir).glob("kernel-init-*"):
        if old.name != os.path.basename(binary):
            old.unlink(missing_ok=True)
    return binary, binary_fd


def _sealed_memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    protocol.write_all(fd, data)
    seals = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


def _helper_zip() -> bytes:
    """The modules as bytecode only (.pyc): the helper starts on a user's first
    file operation, and compiling them there took about 5 ms of it. The kernel
    runs this same interpreter (the spawner's venv is built on /usr/bin/python3)."""
    modules = {
        "sandbox/__init__": "",
        "sandbox/runner/__init__": "",
        "sandbox/runner/files": (RUNNER_DIR / "files.py").read_text(),
        "sandbox/runner/protocol": (RUNNER_DIR / "protocol.py").read_text(),
        "__main__": HELPER_MAIN,
    }
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as z:
        for name, source in modules.items():
            code = compile(source, f"{name}.py", "exec", dont_inherit=True)
            # a timestamp .pyc (flags 0) whose source is not in the zip: never checked
            header = importlib.util.MAGIC_NUMBER + bytes(12)
            z.writestr(f"{name}.pyc", header + marshal.dumps(code))
    return data.getvalue()
