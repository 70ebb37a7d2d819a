"""HostModules: the names a kernel drops are found once, and what was imported
after that is read from the newest entries of sys.modules only; a zygote forgets
them for its kernels, but for those it still needs by name."""

from __future__ import annotations

import os
import sys
import types

from sandbox.host_modules import HostModules, forget_host, forget_in_zygote


def fake_module(name: str, path: str | None) -> types.ModuleType:
    module = types.ModuleType(name)
    if path is not None:
        module.__file__ = path
    return module


def test_modules_imported_after_the_listing_are_added(monkeypatch):
    found = HostModules.find()
    assert "pytest" in found.names  # the test venv's, not under the system prefix
    assert not any(n.startswith("sandbox.runner") for n in found.names)
    monkeypatch.setitem(sys.modules, "late_host_module", fake_module("x", "/opt/venv/x.py"))
    monkeypatch.setitem(
        sys.modules, "late_system_module", fake_module("y", sys.base_prefix + "/y.py")
    )
    monkeypatch.setitem(sys.modules, "late_builtin", fake_module("z", None))
    names = found.now()
    assert names[: len(found.names)] == found.names
    assert set(names[len(found.names) :]) == {"late_host_module"}


def test_a_shorter_sys_modules_is_listed_again(monkeypatch):
    found = HostModules.find()
    shorter = HostModules(found.names, found.seen + 5)  # as if modules were removed since
    monkeypatch.setitem(sys.modules, "late_host_module", fake_module("x", "/opt/venv/x.py"))
    assert "late_host_module" in shorter.now()


def in_a_fork(check) -> str:
    """Run `check` in a forked child (forgetting would wreck this process's imports)
    and return what it printed to the pipe."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, check().encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


def test_a_zygote_forgets_for_its_kernels():
    def check() -> str:
        system = sys.base_prefix.rstrip("/") + "/"
        found = HostModules.find()
        assert "sandbox.spec" in found.names and "pytest" in found.names
        left = forget_in_zygote(found)
        still = [name for name in found.names if name in sys.modules]
        paths_ok = all(p.startswith(system) for p in sys.path)
        sys.modules["late_host_module"] = fake_module("x", "/opt/venv/x.py")
        forget_host(left)  # what a kernel forked from that zygote does
        late = "late_host_module" in sys.modules
        return f"{left.names} {still} {paths_ok} {late}"

    assert in_a_fork(check) == "() [] True False"
