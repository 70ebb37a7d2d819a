"""Every environment variable the sandbox package honours, read here and only here.

Entry points (the spawner's main, sandbox-exec, sandbox-doctor, and the server's,
which passes the layout on with `--cgroup-layout`) call these; nothing deeper
takes a setting from os.environ, so what configures the sandbox is found in one
place:

* ``SANDBOX_CGROUP_LAYOUT``: force a cgroup layout (v2, hybrid, v1 or none);
  unset or empty, the layout is detected (`sandbox.cgroups.detect`).
* ``SANDBOX_PREIMPORT``: the modules python3 kernels start with imported
  (`sandbox.preimport`), overriding ``[sandbox] preimport``; empty: none.
* ``TMPDIR``: where the spawner makes its scratch directory (default /tmp).
* ``XDG_CACHE_HOME``: where the built kernel-init binary is cached (default
  ~/.cache).

The spawner is started with only an allowlist of the server's environment
(`sandbox.spawner_client.SPAWNER_ENVIRONMENT`): the last three and what it needs
to find its tools (PATH, HOME, PYTHONPATH).
"""

from __future__ import annotations

import os

CGROUP_LAYOUT = "SANDBOX_CGROUP_LAYOUT"
PREIMPORT = "SANDBOX_PREIMPORT"


def layout_from_environment() -> str | None:
    """The cgroup layout $SANDBOX_CGROUP_LAYOUT forces, or None to detect it."""
    value = os.environ.get(CGROUP_LAYOUT)
    return value.strip().lower() if value else None


def preimport_from_environment() -> str | None:
    """The modules $SANDBOX_PREIMPORT names (empty: none), or None if it is unset."""
    return os.environ.get(PREIMPORT)


def tmpdir_from_environment() -> str:
    """$TMPDIR, or /tmp."""
    return os.environ.get("TMPDIR") or "/tmp"


def cache_home_from_environment() -> str:
    """$XDG_CACHE_HOME, or ~/.cache."""
    return os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")


def spawner_cache_dir() -> str:
    """Where the spawner keeps what it builds once for its later starts (kernel-init,
    matplotlib's font cache)."""
    return os.path.join(cache_home_from_environment(), "sandbox-server")
