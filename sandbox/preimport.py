"""The modules every python3 kernel starts with already imported (the scientific stack).

`import numpy, pandas, matplotlib.pyplot` takes about 0.6 s in a fresh kernel, most
of it reading and running the same files every time, and matplotlib scanning the
fonts. Kernels are forks of the zygote, so whatever the spawner imports before it
forks the zygote, every kernel has for nothing: its pages are shared copy-on-write,
and `gc.freeze()` (spawner.main) keeps the collector from writing to them, so an
idle kernel's unique memory hardly moves (scripts/bench reports both figures).

The import runs as it would in a kernel: on the kernel's sys.path, with the
kernel's Python environment (MPLBACKEND, MPLCONFIGDIR, one BLAS thread), and with a
private tmpfs on /tmp (the spawner has a mount namespace of its own), so that
matplotlib's font cache, built at import and its path remembered, is made at the
path kernels use. The font cache is the one thing kept from one start to the next
(in the spawner's cache directory, beside kernel-init): building it scans every
font on the host, tens of seconds on a slow machine at every start. A module that
is not installed, or fails to import, is left for kernels to import themselves.

These modules hold nothing of the host (the zygote's rule): they are the system's
packages, imported in a minimal environment before any request. The spawner must
stay single-threaded to fork safely: a module that started a thread is an error.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import logging
import os
import shutil
import sys
from collections.abc import Iterator

from . import environment, syscalls
from .pid1 import PYTHON_ENVIRONMENT
from .runner import python_repl

log = logging.getLogger("sandbox.preimport")


# matplotlib's font cache, by version: fontlist-v330.json
_FONT_LISTS = "fontlist-v*.json"


class PreimportError(RuntimeError):
    """A pre-imported module left the spawner with more than one thread."""


def _copy_font_lists(source: str, target: str) -> None:
    """Copy the font caches of `source` into `target` (made if missing), each whole
    or not at all; a failure costs only the next start's font scan."""
    with contextlib.suppress(OSError):
        for path in glob.glob(os.path.join(source, _FONT_LISTS)):
            os.makedirs(target, mode=0o700, exist_ok=True)
            partial = os.path.join(target, f".{os.path.basename(path)}.{os.getpid()}")
            shutil.copyfile(path, partial)
            os.replace(partial, os.path.join(target, os.path.basename(path)))


@contextlib.contextmanager
def _as_in_a_kernel() -> Iterator[None]:
    saved_path, saved_env = sys.path[:], dict(os.environ)
    # with the spawner's own environment, not the kernels' (their XDG_CACHE_HOME)
    kept_fonts = os.path.join(environment.spawner_cache_dir(), "matplotlib")
    syscalls.mount("tmpfs", "/tmp", "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, "size=64m")
    try:
        # not "" (the spawner's cwd) nor /opt/sandbox/python, which is not on the
        # host: a path's finder, or its absence, is cached for the kernels too
        sys.path[:] = python_repl.kernel_sys_path()[1:]
        os.environ.update(PYTHON_ENVIRONMENT)
        _copy_font_lists(kept_fonts, PYTHON_ENVIRONMENT["MPLCONFIGDIR"])
        yield
        _copy_font_lists(PYTHON_ENVIRONMENT["MPLCONFIGDIR"], kept_fonts)
    finally:
        sys.path[:] = saved_path
        os.environ.clear()
        os.environ.update(saved_env)
        syscalls.umount("/tmp")


def preimport(names: str) -> list[str]:
    """Import the space-separated module `names` as a kernel would; the ones imported.
    Call in the spawner, in its own mount namespace, before the zygote is forked."""
    wanted = names.split()
    if not wanted:
        return []
    done = []
    with _as_in_a_kernel():
        for name in wanted:
            try:
                importlib.import_module(name)
                done.append(name)
            except Exception as e:  # noqa: BLE001 - not installed, or broken: kernels import it
                log.info("not pre-imported: %s (%s: %s)", name, type(e).__name__, e)
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        raise PreimportError(f"importing {' '.join(done)} started {threads - 1} thread(s)")
    return done
