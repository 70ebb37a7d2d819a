"""The peer's own virtualenv: Jupyter Kernel Gateway at the version the comparison names,
and ipykernel, from the package index into .bench/peers/kernel-gateway in the checkout
(git-ignored), made on the system python3, the interpreter our python3 kernels run too.
Only `./scripts/bench --peers` calls it; a virtualenv that already has that version is
used as it is."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable

from .services import ROOT

SYSTEM_PYTHON = "/usr/bin/python3"
GATEWAY_PACKAGE = "jupyter_kernel_gateway"
GATEWAY_VERSION = "3.0.1"
REQUIREMENTS = [f"{GATEWAY_PACKAGE}=={GATEWAY_VERSION}", "ipykernel"]
VENV = os.path.join(ROOT, ".bench", "peers", "kernel-gateway")
# prints the gateway's version if ipykernel is there too (an error otherwise)
PROBE = f"import importlib.metadata as m, ipykernel; print(m.version({GATEWAY_PACKAGE!r}))"


def venv_bin(name: str) -> str:
    return os.path.join(VENV, "bin", name)


def on_system_python() -> bool:
    python = venv_bin("python")
    return os.path.exists(python) and os.path.realpath(python) == os.path.realpath(SYSTEM_PYTHON)


def installed_version() -> str | None:
    """The gateway's version in the virtualenv; None if it or ipykernel is missing."""
    if not on_system_python():
        return None
    probe = subprocess.run([venv_bin("python"), "-c", PROBE], capture_output=True, text=True)
    return probe.stdout.strip() if probe.returncode == 0 else None


def install(argv: list[str]) -> None:
    """Run an installing command quietly; its output only if it fails."""
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise RuntimeError(f"{argv[0]} exited with status {done.returncode}")


def kernel_gateway_venv(step: Callable[[str], None]) -> str:
    """The virtualenv's directory, made or brought to the pinned version first if need be."""
    if installed_version() == GATEWAY_VERSION:
        return VENV
    if not on_system_python():
        shutil.rmtree(VENV, ignore_errors=True)
        step(f"making {os.path.relpath(VENV, ROOT)} on {SYSTEM_PYTHON}")
        install([SYSTEM_PYTHON, "-m", "venv", VENV])
    step(f"installing {' '.join(REQUIREMENTS)} there from the package index")
    install([venv_bin("pip"), "install", "-q", "--disable-pip-version-check", *REQUIREMENTS])
    version = installed_version()
    if version != GATEWAY_VERSION:
        raise RuntimeError(f"{VENV} has {GATEWAY_PACKAGE} {version}, not {GATEWAY_VERSION}")
    return VENV
