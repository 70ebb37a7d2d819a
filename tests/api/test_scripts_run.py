"""`./scripts/run` itself, as a newcomer starts it: a relative data directory, and
kernels that mount folders. A folder from before folder images is a directory
that kernels get bound from the host, and bind sources must be absolute: the data
directory is resolved at start."""

from __future__ import annotations

import json
import os
import sqlite3
import uuid

from helpers.api_server import ROOT, start_server, stop_server

from sandbox.kernel_uids import LEGACY_FOLDER_UID


def test_scripts_run_with_a_relative_data_dir_mounts_folders(tmp_path):
    relative = os.path.relpath(tmp_path / "data", ROOT)  # scripts/run starts in ROOT
    assert not os.path.isabs(relative)
    run = (os.path.join(ROOT, "scripts", "run"),)
    proc, server = start_server(relative, command=run)
    try:
        assert server.access_key, "scripts/run should print a keypair on first start"
        client = server.client()
        assert client.request("POST", "/v2/folders", {"name": "data"}).status_code == 201
        assert listing_after_a_write(client, "data") == ["hello.txt"]
        assert os.path.isdir(tmp_path / "data" / "folders")  # where it was asked to be
        assert client.request("DELETE", "/v2/folders/data").status_code == 204
    finally:
        stop_server(proc)

    old = _plant_directory_folder(str(tmp_path / "data"), server.access_key, "old")
    proc, again = start_server(relative, command=run)
    try:
        assert any("plain directories" in line for line in again.output)  # warned
        client = again.client(access_key=server.access_key, secret_key=server.secret_key)
        assert listing_after_a_write(client, "old") == ["hello.txt"]
        assert os.path.exists(os.path.join(old, "hello.txt"))  # it is still that directory
        assert client.request("DELETE", "/v2/folders/old").status_code == 204
        assert not os.path.exists(old)
    finally:
        stop_server(proc)


def listing_after_a_write(client, name: str) -> list[str]:
    """A kernel mounting folder `name` writes hello.txt; the folder's listing after."""
    r = client.create(mounts=[name])
    assert r.status_code == 201, r.text
    kid = r.json()["kernelId"]
    client.run(kid, f"open('{name}/hello.txt', 'w').write('hi')")
    client.request("DELETE", f"/v2/kernel/{kid}")
    r = client.request("GET", f"/v2/folders/{name}/files", {"path": "."})
    assert r.status_code == 200, r.text
    return [f["filename"] for f in json.loads(r.json()["files"])]


def _plant_directory_folder(data_dir: str, access_key: str, name: str) -> str:
    """A folder as the server made them before folder images: a row and a directory."""
    folder_id = uuid.uuid4().hex
    db = sqlite3.connect(os.path.join(data_dir, "sandbox.sqlite"))
    with db:
        db.execute(
            "INSERT INTO folders (id, access_key, name, created) VALUES (?, ?, ?, ?)",
            (folder_id, access_key, name, "2026-01-01T00:00:00+00:00"),
        )
    db.close()
    path = os.path.join(data_dir, "folders", folder_id)
    os.mkdir(path, 0o755)
    os.chown(path, LEGACY_FOLDER_UID, LEGACY_FOLDER_UID)
    return path
