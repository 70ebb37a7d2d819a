"""Installed like a service: the wheel, in a virtualenv of its own, serves and
runs kernels away from the checkout (its kernels' root skeleton and kernel-init's
sources come from the package), and `sandbox-admin install-service` writes a
unit that systemd accepts."""

from __future__ import annotations

import glob
import shutil
import subprocess
import sys

import pytest
from helpers.api_server import ROOT, SignedClient, start_server, stop_server

SYSTEM_PYTHON = "/usr/bin/python3"  # kernels run the interpreter under the bound /usr


def run(*argv: str, cwd: str | None = None) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=600)
    assert out.returncode == 0, (argv, out.stdout[-2000:], out.stderr[-2000:])
    return out.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> str:
    """A virtualenv with the project's wheel installed (and its dependencies)."""
    where = tmp_path_factory.mktemp("install")
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
        "-w", str(where / "wheels"), ROOT)  # fmt: skip
    wheel = glob.glob(str(where / "wheels" / "*.whl"))[0]
    venv = str(where / "venv")
    run(SYSTEM_PYTHON, "-m", "venv", venv)
    run(f"{venv}/bin/pip", "install", "-q", "--disable-pip-version-check", wheel)
    return venv


def test_the_wheel_serves_kernels_away_from_the_checkout(installed, tmp_path):
    where = run(f"{installed}/bin/python", "-c", "import sandbox, server; print(sandbox.__file__)",
                cwd=str(tmp_path))  # fmt: skip
    assert where.startswith(installed) and not where.startswith(ROOT), where
    proc, server = start_server(
        str(tmp_path / "data"), command=(f"{installed}/bin/sandbox-server",)
    )
    try:
        client = SignedClient(server.endpoint, server.access_key, server.secret_key, "sorna")
        r = client.create(lang="python3")
        assert r.status_code == 201, r.text
        kid = r.json()["kernelId"]
        results = client.run(
            kid, "import matplotlib, sys\nprint(sys.version_info[0], matplotlib.get_backend())"
        )
        out = "".join(
            text for result in results for kind, text in result["console"] if kind == "stdout"
        )
        assert out == "3 module://sandbox_matplotlib\n", results  # the skeleton's backend
        assert client.request("DELETE", f"/v2/kernel/{kid}").status_code == 204
    finally:
        stop_server(proc)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_install_service_writes_a_unit_systemd_accepts(installed, tmp_path):
    units, etc = tmp_path / "units", tmp_path / "etc"
    said = run(f"{installed}/bin/sandbox-admin", "install-service",
               "--unit-dir", str(units), "--config-dir", str(etc))  # fmt: skip
    assert "systemctl daemon-reload" in said
    unit = (units / "sandbox-server.service").read_text()
    assert f"ExecStart={installed}/bin/sandbox-server --config {etc}/config.toml" in unit
    for line in ("Delegate=yes", "KillMode=mixed", "StateDirectory=sandbox-server"):
        assert line in unit
    assert 'data_dir = "/var/lib/sandbox-server"' in (etc / "config.toml").read_text()
    spawner = (units / "sandbox-spawner.service").read_text()
    assert (
        f"ExecStart={installed}/bin/sandbox-server --config {etc}/config.toml --spawner-only"
        in spawner
    )
    for line in ("Type=notify", "Delegate=yes", "KillMode=mixed", "Restart=always"):
        assert line in spawner
    assert "Wants=sandbox-spawner.service" in unit
    verdict = subprocess.run(
        ["systemd-analyze", "verify", str(units / "sandbox-server.service"),
         str(units / "sandbox-spawner.service")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert (verdict.returncode, verdict.stderr) == (0, ""), verdict.stderr  # not a word
    broken = tmp_path / "broken" / "sandbox-server.service"
    broken.parent.mkdir()
    broken.write_text(unit.replace("KillMode=mixed", "KillMode=sometimes"))
    verdict = subprocess.run(
        ["systemd-analyze", "verify", str(broken)], capture_output=True, text=True
    )
    assert "kill mode" in verdict.stderr  # the same check finds a bad line
    (etc / "config.toml").write_text("# mine\n")
    run(f"{installed}/bin/sandbox-admin", "install-service",
        "--unit-dir", str(units), "--config-dir", str(etc))  # fmt: skip
    assert (etc / "config.toml").read_text() == "# mine\n"  # an existing config is kept
