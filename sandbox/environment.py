"""Every environment variable the sandbox package honours, read here and only here.

Entry points call these; nothing deeper takes a setting from os.environ, so what
configures the sandbox is found in one place:

* ``TMPDIR``: where the spawner makes its scratch directory (default /tmp).
* ``XDG_CACHE_HOME``: where the built kernel-init binary is cached (default
  ~/.cache).

The spawner is started with only an allowlist of the server's environment
(`sandbox.spawner_client.SPAWNER_ENVIRONMENT`): these two, what it needs to find
its tools (PATH, HOME, PYTHONPATH) and, until the cgroups read it at the entry
points too, SANDBOX_CGROUP_LAYOUT.
"""

from __future__ import annotations

import os


def tmpdir_from_environment() -> str:
    """$TMPDIR, or /tmp."""
    return os.environ.get("TMPDIR") or "/tmp"


def cache_home_from_environment() -> str:
    """$XDG_CACHE_HOME, or ~/.cache."""
    return os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
