"""scripts/doctor on this host: the checks run and name the layout."""

from __future__ import annotations

import json
import subprocess
import sys


def test_doctor_reports_this_host():
    result = subprocess.run(
        [sys.executable, "-m", "sandbox.doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert result.returncode == 0, result.stdout
    for name in ("root", "namespaces", "seccomp", "cgroups", "filesystems", "kernel start"):
        assert checks[name]["status"] == "ok", checks[name]
    assert (
        "layout hybrid" in checks["cgroups"]["detail"] or "layout v2" in checks["cgroups"]["detail"]
    )
    assert checks["runtime python3"]["status"] == "ok"


def test_doctor_fails_loudly_when_a_forced_layout_is_impossible():
    result = subprocess.run(
        [sys.executable, "-m", "sandbox.doctor"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"SANDBOX_CGROUP_LAYOUT": "v2", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert "FAIL  cgroups" in result.stdout
