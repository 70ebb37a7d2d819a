"""`sandbox-admin kernels`, `kernels destroy` and `status` against a real server
(its loopback-only admin routes), and the routes refusing anyone else
(`sandbox-admin pool`: tests/api/test_pool_api.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from helpers.api_server import ROOT, non_loopback_address, start_server, stop_server


def admin(server, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """sandbox-admin with the server's port (before a "--" in `args`: a kernel id may
    start with "-")."""
    port = ["--port", server.endpoint.rsplit(":", 1)[1]]
    at = args.index("--") if "--" in args else len(args)
    command = [sys.executable, "-m", "server.admin", "--data-dir", server.data_dir]
    return subprocess.run(
        [*command, *args[:at], *port, *args[at:]],
        capture_output=True, text=True, cwd=ROOT, check=check,
    )  # fmt: skip


def test_kernels_lists_and_destroys(api_server):
    client = api_server.client(**api_server.new_key(concurrency=2))
    kid = client.create(lang="python3").json()["kernelId"]
    client.run(kid, "x = bytearray(20 * 1024 * 1024)")
    listed = json.loads(admin(api_server, "kernels", "--json").stdout)["kernels"]
    mine = next(k for k in listed if k["id"] == kid)
    assert (mine["key"], mine["lang"], mine["state"]) == (client.access_key, "python3", "idle")
    assert mine["memoryBytes"] > 20 * 1024 * 1024 and mine["ageSeconds"] >= 0
    table = admin(api_server, "kernels").stdout
    assert table.startswith("ID") and kid in table and client.access_key in table
    assert admin(api_server, "kernels", "destroy", "--", kid).stdout.strip() == f"destroyed {kid}"
    r = client.request("GET", f"/v2/kernel/{kid}")
    assert r.status_code == 404
    assert kid not in admin(api_server, "kernels").stdout
    missing = admin(api_server, "kernels", "destroy", "no-such-kernel", check=False)
    assert missing.returncode == 1 and "404 no such kernel" in missing.stderr


def test_status(api_server):
    status = json.loads(admin(api_server, "status", "--json").stdout)
    assert status["layout"] in ("v2", "hybrid", "v1", "none")
    assert status["maxKernels"] >= 1 and "python3" in status["pool"]
    assert status["poolSize"]["python3"] >= 1  # pool_size, or more after a burst
    text = admin(api_server, "status").stdout
    assert "cgroup layout:" in text and "warm pool:     python3 " in text


def test_a_server_that_is_not_there(tmp_path):
    command = [sys.executable, "-m", "server.admin", "--data-dir", str(tmp_path)]
    out = subprocess.run(
        [*command, "status", "--port", "9"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 1 and "is it running?" in out.stderr


def test_only_this_machine_is_answered(tmp_path):
    address = non_loopback_address()
    if address is None:
        pytest.skip("this host has no address but loopback")
    proc, server = start_server(str(tmp_path / "data"), config='[server]\nhost = "0.0.0.0"\n')
    try:
        port = server.endpoint.rsplit(":", 1)[1]
        for method, path in [("GET", "/admin/kernels"), ("GET", "/admin/status"),
                             ("DELETE", "/admin/kernels/x"), ("POST", "/admin/pool")]:  # fmt: skip
            r = httpx.request(method, f"http://{address}:{port}{path}")
            assert r.status_code == 403, (method, path)
        assert httpx.get(f"http://127.0.0.1:{port}/admin/status").status_code == 200
    finally:
        stop_server(proc)
