"""`sandbox-admin backup` while a real server runs and a kernel writes into a folder,
and `restore` into a new data directory that a second server then serves: the same
keys, the same folders, their files whole."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time

from helpers.api_server import ROOT, start_server, stop_server

WRITER = """
import time
end = time.monotonic() + 3
n = 0
with open('notes/log.txt', 'a') as f:
    while time.monotonic() < end:
        f.write(f'{n}\\n')
        n += 1
        if n % 1000 == 0:
            f.flush()
            time.sleep(0.002)  # a few MiB in all: the folder holds 100
print('wrote', n)
"""


def admin(data_dir: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "server.admin", "--data-dir", data_dir, *args],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip


def stdout_of(client, kid: str, code: str) -> str:
    results = client.run(kid, code)
    stderr = "".join(t for r in results for k, t in r["console"] if k == "stderr")
    assert results[-1]["status"] == "finished" and not stderr, results
    return "".join(t for r in results for k, t in r["console"] if k == "stdout")


def test_backup_of_a_running_server_restores_keys_and_folders(api_server, tmp_path):
    keys = api_server.new_key(concurrency=4)
    other = api_server.new_key()
    client = api_server.client(**keys)
    assert client.request("POST", "/v2/folders", {"name": "notes"}).status_code == 201
    folder_id = client.request("GET", "/v2/folders/notes").json()["id"]
    kid = client.create(mounts=["notes"]).json()["kernelId"]
    stdout_of(client, kid, "open('notes/hello.txt', 'w').write('kept\\n' * 1000)")

    written: list[str] = []  # a run writes into the folder all through the backup
    writer = threading.Thread(target=lambda: written.append(stdout_of(client, kid, WRITER)))
    writer.start()
    time.sleep(0.5)  # into the run (the restored log shows that it was)
    try:
        done = admin(api_server.data_dir, "backup", str(tmp_path / "backup"))
    finally:
        writer.join(60)
    assert done.returncode == 0, done.stderr
    assert "1 folders" in done.stdout
    assert written and written[0].startswith("wrote "), written  # it went on after the freeze
    client.request("DELETE", f"/v2/kernel/{kid}")
    later = api_server.new_key()  # made after the backup: not in it

    restored = str(tmp_path / "restored")
    done = admin(restored, "restore", str(tmp_path / "backup"))
    assert done.returncode == 0, done.stderr
    image = os.path.join(restored, "folders", folder_id + ".img")
    fsck = subprocess.run(["e2fsck", "-fn", image], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout  # a consistent file system, though written to
    assert os.stat(image).st_blocks * 512 >= os.stat(image).st_size  # reserved again

    proc, second = start_server(restored)
    try:
        again = second.client(**keys)
        listed = again.request("GET", "/v2/folders").json()
        assert [(f["name"], f["id"]) for f in listed] == [("notes", folder_id)]
        kid = again.create(mounts=["notes"]).json()["kernelId"]
        assert stdout_of(again, kid, "print(open('notes/hello.txt').read() == 'kept\\n' * 1000)")
        numbers = stdout_of(again, kid, "print(open('notes/log.txt').read())").split()
        # the backup caught the log mid-run: whole lines, none missing before the last
        assert numbers == [str(n) for n in range(len(numbers))]
        assert 0 < len(numbers) < int(written[0].split()[1])
        assert second.client(**other).request("GET", "/v2/folders").status_code == 200
        assert second.client(**later).request("GET", "/v2/folders").status_code == 401
    finally:
        stop_server(proc)


def test_refusals(api_server, tmp_path):
    data_dir = api_server.data_dir
    full = tmp_path / "full"
    full.mkdir()
    (full / "something").write_text("")
    out = admin(data_dir, "backup", str(full))
    assert out.returncode == 1 and "is not an empty directory" in out.stderr
    out = admin(str(tmp_path / "nothing"), "backup", str(tmp_path / "b0"))
    assert out.returncode == 1 and "no store at" in out.stderr

    with open(os.path.join(data_dir, "backup.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        out = admin(data_dir, "backup", str(tmp_path / "b1"))
    assert out.returncode == 1 and "another backup" in out.stderr
    assert os.listdir(tmp_path / "b1") == []  # nothing left of it

    good = tmp_path / "good"
    assert admin(data_dir, "backup", str(good)).returncode == 0
    out = admin(data_dir, "restore", str(good))
    assert out.returncode == 1 and "holds a store already" in out.stderr
    out = admin(str(tmp_path / "new"), "restore", str(tmp_path))
    assert out.returncode == 1 and "is not a backup" in out.stderr

    (good / "backup.json").write_text('{"format": 1, "folders": [{"id": "0f"}]}')
    out = admin(str(tmp_path / "new"), "restore", str(good))
    assert out.returncode == 1 and "folder 0f is missing" in out.stderr
    (good / "backup.json").write_text("{not json")
    out = admin(str(tmp_path / "new"), "restore", str(good))
    assert out.returncode == 1 and "backup.json" in out.stderr
    assert not os.path.exists(tmp_path / "new" / "sandbox.sqlite")
