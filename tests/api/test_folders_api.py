"""Virtual folders over HTTP (spec §7.4): the routes, their errors, mounts in kernels,
persistence, and a folder full of traps planted by kernel code."""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import os
import tarfile
import time

import pytest
from helpers.multipart import multipart
from helpers.problems import problem

CLIENT_TIMEOUT = 20  # seconds; a request that hangs on a FIFO would blow through it


@pytest.fixture(scope="module")
def api(api_server):
    """A key of its own, so the folder quota of the server's key is not shared."""
    return api_server.client(**api_server.new_key(concurrency=10))


@pytest.fixture
def folder(api):
    name = f"f{time.monotonic_ns()}"
    r = api.request("POST", "/v2/folders", {"name": name})
    assert r.status_code == 201, r.text
    yield name
    api.request("DELETE", f"/v2/folders/{name}")


def upload(api, name: str, files: list[tuple[str, bytes]]):
    body, ctype = multipart(files)
    return api.request("POST", f"/v2/folders/{name}/upload", raw=body, content_type=ctype)


def listing(api, name: str, path: str = ".") -> dict[str, str]:
    r = api.request("GET", f"/v2/folders/{name}/files", {"path": path})
    assert r.status_code == 200, r.text
    return {f["filename"]: f["mode"] for f in json.loads(r.json()["files"])}


def download(api, name: str, path: str) -> bytes:
    r = api.request("GET", f"/v2/folders/{name}/download", {"files": [path]})
    assert r.status_code == 200, r.text
    boundary = r.headers["content-type"].split("boundary=")[1].encode()
    part = r.content.split(b"--" + boundary)[1]
    archive = part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return tar.extractfile(tar.getmembers()[0]).read()


def run(api, kid: str, code: str) -> tuple[str, str]:
    results = api.run(kid, code)
    out = "".join(t for r in results for k, t in r["console"] if k == "stdout")
    err = "".join(t for r in results for k, t in r["console"] if k == "stderr")
    return out, err


def kernel_with(api, mounts: list[str]) -> str:
    r = api.create(mounts=mounts)
    assert r.status_code == 201, r.text
    return r.json()["kernelId"]


# -- the folders ---------------------------------------------------------------------


def test_create_list_get_delete(api):
    r = api.request("POST", "/v2/folders", {"name": "my-data_1.v2"})
    assert r.status_code == 201
    created = r.json()
    assert set(created) == {"id", "name"} and len(created["id"]) == 32
    listed = api.request("GET", "/v2/folders").json()
    assert {"name": "my-data_1.v2", "id": created["id"]}.items() <= next(
        f for f in listed if f["name"] == "my-data_1.v2"
    ).items()
    got = api.request("GET", "/v2/folders/my-data_1.v2").json()
    assert (got["id"], got["numFiles"]) == (created["id"], 0) and "created" in got
    assert api.request("DELETE", "/v2/folders/my-data_1.v2").status_code == 204
    problem(api.request("GET", "/v2/folders/my-data_1.v2"), 404, "folder-not-found")


def test_the_doc_v2_forms(api):
    r = api.request("POST", "/v2/folder/create", {"name": "docv2"})
    assert r.status_code == 201
    folder_id = r.json()["folderId"]
    assert api.request("GET", f"/v2/folder/{folder_id}").json()["name"] == "docv2"
    assert api.request("DELETE", f"/v2/folder/{folder_id}").status_code == 204
    problem(api.request("GET", f"/v2/folder/{folder_id}"), 404, "folder-not-found")


@pytest.mark.parametrize("name", ["", "-lead", "trail-", "a/b", "..", "a b", "x" * 65, 7, None])
def test_bad_names_are_400(api, name):
    title = problem(api.request("POST", "/v2/folders", {"name": name}), 400, "invalid-api-params")
    assert "name" in title


def test_duplicate_and_unknown_fields(api, folder):
    problem(api.request("POST", "/v2/folders", {"name": folder}), 400, "folder-already-exists")
    problem(api.request("POST", "/v2/folders", {"name": "ok", "x": 1}), 400, "invalid-api-params")


def test_folders_belong_to_their_key(api_server, api, folder):
    other = api_server.client(**api_server.new_key())
    problem(other.request("GET", f"/v2/folders/{folder}"), 404, "folder-not-found")
    problem(other.request("DELETE", f"/v2/folders/{folder}"), 404, "folder-not-found")
    problem(upload(other, folder, [("a", b"a")]), 404, "folder-not-found")
    problem(other.create(mounts=[folder]), 404, "folder-not-found")
    assert all(f["name"] != folder for f in other.request("GET", "/v2/folders").json())
    # the same name is free for another key
    assert other.request("POST", "/v2/folders", {"name": folder}).status_code == 201
    assert other.request("DELETE", f"/v2/folders/{folder}").status_code == 204


def test_folder_count_quota(api_server):
    client = api_server.client(**api_server.new_key())
    for i in range(10):
        assert client.request("POST", "/v2/folders", {"name": f"q{i}"}).status_code == 201
    title = problem(client.request("POST", "/v2/folders", {"name": "q10"}), 412, "quota-exceeded")
    assert "10 folders" in title
    for i in range(10):
        client.request("DELETE", f"/v2/folders/q{i}")


# -- their files ---------------------------------------------------------------------


def test_upload_mkdir_list_download_delete(api, folder):
    r = upload(api, folder, [("top.txt", b"top\n"), ("sub/deep/x.bin", b"\x00\x01")])
    assert r.status_code == 201, r.text
    assert (
        api.request("POST", f"/v2/folders/{folder}/mkdir", {"path": "empty/dir"}).status_code == 201
    )
    assert listing(api, folder) == {"top.txt": "-rw-r--r--", "sub": "drwxr-xr-x",
                                    "empty": "drwxr-xr-x"}  # fmt: skip
    assert listing(api, folder, "sub/deep") == {"x.bin": "-rw-r--r--"}
    assert download(api, folder, "sub/deep/x.bin") == b"\x00\x01"
    info = api.request("GET", f"/v2/folders/{folder}").json()
    assert info["numFiles"] == 2
    r = api.request("DELETE", f"/v2/folders/{folder}/delete_files", {"files": ["sub"]})
    assert "not empty" in problem(r, 400, "invalid-api-params")
    r = api.request("DELETE", f"/v2/folders/{folder}/delete_files",
                    {"files": ["sub", "top.txt"], "recursive": True})  # fmt: skip
    assert r.status_code == 200 and r.json() == {}
    assert listing(api, folder) == {"empty": "drwxr-xr-x"}


@pytest.mark.parametrize(
    ("method", "route", "body"),
    [
        ("GET", "files", {"path": "../.."}),
        ("GET", "files", {"path": "/etc"}),
        ("GET", "files", {"path": "nope"}),
        ("GET", "download", {"files": ["nope.txt"]}),
        ("GET", "download", {"files": []}),
        ("GET", "download", {"files": "x"}),
        ("POST", "mkdir", {"path": "../x"}),
        ("POST", "mkdir", {}),
        ("DELETE", "delete_files", {"files": ["nope"]}),
        ("DELETE", "delete_files", {"files": ["x"], "recursive": "yes"}),
        ("DELETE", "delete_files", {}),
    ],
)
def test_bad_file_requests_are_400(api, folder, method, route, body):
    problem(api.request(method, f"/v2/folders/{folder}/{route}", body), 400, "invalid-api-params")


def test_upload_paths_are_confined(api, folder):
    for name in ("../escape.txt", "/etc/x"):
        problem(upload(api, folder, [(name, b"x")]), 400, "invalid-api-params")
    problem(api.request("GET", "/v2/folders/nope/files"), 404, "folder-not-found")


# -- mounts ----------------------------------------------------------------------------


def test_mounts_with_aliases_persist_and_are_shared(api, folder):
    upload(api, folder, [("hello.txt", b"from the API\n")])
    first = kernel_with(api, [folder])
    second = kernel_with(api, [f"{folder}:lib/pkgs"])
    try:
        assert run(api, first, f"print(open('{folder}/hello.txt').read(), end='')")[0] == (
            "from the API\n"
        )
        run(api, first, f"open('{folder}/shared.txt', 'w').write('written by one kernel')")
        out, _ = run(api, second, "print(open('lib/pkgs/shared.txt').read())")
        assert out == "written by one kernel\n"  # seen at once by the other kernel
        run(api, second, "open('lib/pkgs/later.txt', 'w').write('kept')")
    finally:
        api.request("DELETE", f"/v2/kernel/{first}")
        api.request("DELETE", f"/v2/kernel/{second}")
    assert download(api, folder, "later.txt") == b"kept"  # outlived its kernel
    third = kernel_with(api, [f"{folder}:again"])
    try:
        assert run(api, third, "print(open('again/later.txt').read())")[0] == "kept\n"
    finally:
        api.request("DELETE", f"/v2/kernel/{third}")


def test_uploaded_kernel_files_die_with_it_while_folders_stay(api, folder):
    kid = kernel_with(api, [folder])
    body, ctype = multipart([("scratch.txt", b"temporary")])
    assert (
        api.request("POST", f"/v2/kernel/{kid}/upload", raw=body, content_type=ctype).status_code
        == 204
    )
    body, ctype = multipart([(f"{folder}/sneak.txt", b"x")])
    title = problem(api.request("POST", f"/v2/kernel/{kid}/upload", raw=body, content_type=ctype),
                    400, "invalid-api-params")  # fmt: skip
    assert "mounted folder" in title
    api.request("DELETE", f"/v2/kernel/{kid}")
    assert "scratch.txt" not in listing(api, folder)


@pytest.mark.parametrize(
    "mounts",
    [["a:../x"], ["a:/abs"], ["a:x/../../y"], ["a:."], ["a:x//y"], ["a:x y"]],
)
def test_aliases_that_leave_home_work_are_400(api, mounts):
    problem(api.create(mounts=mounts), 400, "invalid-api-params")


def test_mount_count_and_overlap_rules(api, folder):
    problem(api.create(mounts=[folder] * 6), 400, "invalid-api-params")
    problem(api.create(mounts=[f"{folder}:x", f"{folder}:x/y"]), 400, "invalid-api-params")
    problem(api.create(mounts=["no-such-folder"]), 404, "folder-not-found")


def test_a_mounted_folder_cannot_be_deleted(api, folder):
    kid = kernel_with(api, [folder])
    title = problem(api.request("DELETE", f"/v2/folders/{folder}"), 400, "invalid-api-params")
    assert kid in title
    api.request("DELETE", f"/v2/kernel/{kid}")
    assert api.request("DELETE", f"/v2/folders/{folder}").status_code == 204


def test_folder_operations_count_against_the_key_concurrency(api_server):
    """Each folder file request runs in a kernel of its own: it counts as one of the
    key's kernels while it lives (412 once the key is at its concurrency)."""
    client = api_server.client(**api_server.new_key(concurrency=2))
    name = f"busy{time.monotonic_ns()}"
    assert client.request("POST", "/v2/folders", {"name": name}).status_code == 201
    kids = [kernel_with(client, []) for _ in range(2)]
    try:
        r = client.request("GET", f"/v2/folders/{name}/files", {"path": "."})
        assert "folder operations" in problem(r, 412, "quota-exceeded")
        client.request("DELETE", f"/v2/kernel/{kids.pop()}")
        # one slot left: a burst gets answers, each a listing or a clear 412
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            burst = list(pool.map(lambda _: _list_status(api_server, client, name), range(6)))
        assert set(burst) <= {200, 412} and 200 in burst, burst
        assert client.request("GET", "/v2/folders").status_code == 200
        assert client.request("GET", f"/v2/folders/{name}/files", {}).status_code == 200
    finally:
        for kid in kids:
            client.request("DELETE", f"/v2/kernel/{kid}")
        client.request("DELETE", f"/v2/folders/{name}")


def _list_status(api_server, client, name: str) -> int:
    """A listing on a connection of its own (httpx clients are not shared by threads)."""
    own = api_server.client(access_key=client.access_key, secret_key=client.secret_key)
    return own.request("GET", f"/v2/folders/{name}/files", {"path": "."}).status_code


# -- a hostile folder --------------------------------------------------------------------


def _sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_traps_planted_by_a_kernel_catch_nothing(api, folder):
    watched = ["/etc/shadow", "/etc/passwd", "/etc/hostname"]
    before = {p: _sha(p) for p in watched}
    kid = kernel_with(api, [folder])
    plant = f"""
import os, errno
os.chdir('{folder}')
os.symlink('/etc/shadow', 'shadow')
os.symlink('/', 'root')
os.symlink('/etc', 'etcdir')
os.mkfifo('fifo')
os.mkdir('d')
os.symlink('/etc/passwd', 'd/passwd')
for name, make in [('hard', lambda: os.link('/usr/bin/python3', 'hard')),
                   ('dev', lambda: os.mknod('dev', 0o20666, os.makedev(1, 3)))]:
    try:
        make()
        print(name, 'made')
    except OSError as e:
        print(name, 'refused', errno.errorcode[e.errno])
"""
    out, err = run(api, kid, plant)
    assert "hard refused" in out and "dev refused" in out, (out, err)
    api.request("DELETE", f"/v2/kernel/{kid}")

    api.http.timeout = CLIENT_TIMEOUT
    entries = listing(api, folder)
    assert entries["shadow"].startswith("l") and entries["fifo"].startswith("p")
    assert set(entries) == {"shadow", "root", "etcdir", "fifo", "d"}
    for path in ("shadow", "root/etc/passwd", "etcdir/hostname", "fifo", "d/passwd"):
        r = api.request("GET", f"/v2/folders/{folder}/download", {"files": [path]})
        problem(r, 400, "invalid-api-params")
    for path in ("root", "etcdir"):
        problem(api.request("GET", f"/v2/folders/{folder}/files", {"path": path}), 400,
                "invalid-api-params")  # fmt: skip
    for path in ("shadow", "root/tmp/x", "etcdir/x", "fifo", "d/passwd"):
        problem(upload(api, folder, [(path, b"owned")]), 400, "invalid-api-params")
    for path in ("root/newdir", "etcdir/newdir"):
        r = api.request("POST", f"/v2/folders/{folder}/mkdir", {"path": path})
        problem(r, 400, "invalid-api-params")
    assert not os.path.exists("/newdir") and not os.path.exists("/etc/newdir")
    info = api.request("GET", f"/v2/folders/{folder}").json()
    assert info["numFiles"] == 5  # counted without following anything
    everything = {"files": ["shadow", "root", "etcdir", "fifo", "d"], "recursive": True}
    r = api.request("DELETE", f"/v2/folders/{folder}/delete_files", everything)
    assert r.status_code == 200, r.text
    assert listing(api, folder) == {}
    assert {p: _sha(p) for p in watched} == before
    assert os.path.exists("/etc/shadow") and os.listdir("/etc")


def test_deleting_a_trapped_folder_touches_nothing_outside(api):
    name = f"trap{time.monotonic_ns()}"
    api.request("POST", "/v2/folders", {"name": name})
    kid = kernel_with(api, [name])
    run(api, kid, f"import os; os.symlink('/etc', '{name}/etc'); os.mkfifo('{name}/fifo')")
    api.request("DELETE", f"/v2/kernel/{kid}")
    before = sorted(os.listdir("/etc"))
    assert api.request("DELETE", f"/v2/folders/{name}").status_code == 204
    assert sorted(os.listdir("/etc")) == before


def test_a_symlink_planted_where_a_mount_goes_fails_the_restart_safely(api, folder):
    """/home/work survives a restart; kernel code swaps the mount's parent for a
    symlink to /etc. The restart refuses to bind through it (kernel-restart-failed),
    the kernel is gone with that reason, and /etc is untouched."""
    kid = kernel_with(api, [f"{folder}:lib/pkgs"])
    run(api, kid, "import os; os.rename('lib', 'moved'); os.symlink('/etc', 'lib')")
    before = sorted(os.listdir("/etc"))
    title = problem(api.request("PATCH", f"/v2/kernel/{kid}"), 500, "kernel-restart-failed")
    assert "not a directory" in title
    gone = problem(api.request("GET", f"/v2/kernel/{kid}"), 404, "kernel-not-found")
    assert "restart failed" in gone
    assert sorted(os.listdir("/etc")) == before and not os.path.exists("/etc/pkgs")


def test_a_folder_whose_image_vanished_is_not_found_and_can_be_deleted(api_server, api):
    name = f"gone{time.monotonic_ns()}"
    r = api.request("POST", "/v2/folders", {"name": name})
    assert r.status_code == 201, r.text
    os.remove(os.path.join(api_server.data_dir, "folders", r.json()["id"] + ".img"))
    title = problem(api.request("GET", f"/v2/folders/{name}"), 404, "folder-not-found")
    assert "gone from the data directory" in title
    assert api.request("DELETE", f"/v2/folders/{name}").status_code == 204
    problem(api.request("GET", f"/v2/folders/{name}"), 404, "folder-not-found")
