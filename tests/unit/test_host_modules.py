"""HostModules: the names a kernel drops are found once, and what was imported
after that is read from the newest entries of sys.modules only."""

from __future__ import annotations

import sys
import types

from sandbox.host_modules import HostModules


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
