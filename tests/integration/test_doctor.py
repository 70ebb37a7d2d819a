"""scripts/doctor on this host: the checks run and name the layout."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sandbox import cgroups
from sandbox.environment import layout_from_environment

pytestmark = pytest.mark.cgroups

LAYOUT = cgroups.detect(layout_from_environment()).layout  # the doctor's, too


def test_doctor_reports_this_host():
    result = subprocess.run(
        [sys.executable, "-m", "sandbox.doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert result.returncode == 0, result.stdout
    for name in ("root", "namespaces", "seccomp", "filesystems", "kernel-init", "kernel start"):
        assert checks[name]["status"] == "ok", checks[name]
    # other tests' servers may have kernels running as uids of the range
    assert checks["kernel uids"]["status"] in ("ok", "warn"), checks["kernel uids"]
    assert f"layout {LAYOUT.value}" in checks["cgroups"]["detail"]
    # no cgroups is allowed, and said to be weaker; any real layout is fine
    assert checks["cgroups"]["status"] == ("warn" if LAYOUT is cgroups.Layout.NONE else "ok")
    assert checks["runtime python3"]["status"] == "ok"


def test_doctor_fails_loudly_when_a_forced_layout_is_impossible():
    # pure v2 hosts have no v1 hierarchy; hybrid and v1 hosts have no v2-only tree
    impossible = "v1" if cgroups.detect().layout is cgroups.Layout.V2 else "v2"
    result = subprocess.run(
        [sys.executable, "-m", "sandbox.doctor"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"SANDBOX_CGROUP_LAYOUT": impossible, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert "FAIL  cgroups" in result.stdout


def test_doctor_fails_a_kernel_uid_range_that_an_account_uses():
    """`nobody` (65534) has a uid of 65000-65999: kernels must not run as it."""
    result = subprocess.run(
        [sys.executable, "-m", "sandbox.doctor", "--uids", "65000:1000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "FAIL  kernel uids" in result.stdout and "nobody" in result.stdout, result.stdout


def test_doctor_warns_of_a_process_that_runs_as_a_kernel_uid():
    uid = 1_800_000_000
    sleeper = subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                                "sleep", "60"])  # fmt: skip
    try:
        result = subprocess.run(
            [sys.executable, "-m", "sandbox.doctor", "--json", "--uids", f"{uid}:10"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        sleeper.kill()
        sleeper.wait()
    check = {c["name"]: c for c in json.loads(result.stdout)}["kernel uids"]
    assert check["status"] == "warn" and f"process {sleeper.pid}" in check["detail"], check
