"""Upload, list, download, batch and completion over HTTP (spec §5.6, §5.8, §5.9, §6.4)."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from helpers.multipart import upload
from helpers.problems import problem


@pytest.fixture(scope="module")
def kid(api_server):
    client = api_server.client()
    kernel_id = client.create(token="files-api-kernel").json()["kernelId"]
    yield kernel_id
    client.request("DELETE", f"/v2/kernel/{kernel_id}")


def test_upload_list_download(api, kid):
    r = upload(
        api, kid, [("main.py", b"print(open('data/in.txt').read())\n"), ("data/in.txt", b"hi")]
    )
    assert r.status_code == 204 and r.headers["content-length"] == "0"
    listing = api.request("GET", f"/v2/kernel/{kid}/files", {"path": "data"}).json()
    files = json.loads(listing["files"])
    assert [f["filename"] for f in files] == ["in.txt"] and files[0]["size"] == 2
    r = api.request("GET", f"/v2/kernel/{kid}/download", {"files": ["data/in.txt"]})
    assert r.status_code == 200 and r.headers["content-type"].startswith("multipart/mixed")
    boundary = r.headers["content-type"].split("boundary=")[1]
    part = r.content.split(f"--{boundary}".encode())[1]
    archive = part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert tar.extractfile("in.txt").read() == b"hi"


@pytest.mark.parametrize(
    ("files", "names"),
    [
        ([("../escape.txt", b"x")], "leaves"),
        ([("/etc/passwd", b"x")], "leaves"),
        ([("big.bin", b"x" * (1024 * 1024 + 1))], "Too large"),
        ([(f"f{i}", b"x") for i in range(21)], "Too many"),
    ],
)
def test_upload_limits(api, kid, files, names):
    assert names in problem(upload(api, kid, files), 400, "invalid-api-params")


def test_upload_refuses_a_symlink_planted_by_the_kernel(api, kid):
    api.run(kid, "import os\nos.makedirs('trap', exist_ok=True)\nos.symlink('/etc', 'trap/etc')")
    problem(upload(api, kid, [("trap/etc/x", b"x")]), 400, "invalid-api-params")
    r = api.request("GET", f"/v2/kernel/{kid}/download", {"files": ["trap/etc"]})
    problem(r, 400, "invalid-api-params")


def test_upload_needs_multipart(api, kid):
    r = api.request("POST", f"/v2/kernel/{kid}/upload", {"files": []})
    assert "multipart" in problem(r, 400, "invalid-api-params")


@pytest.mark.parametrize("body", [{"files": []}, {"files": "a"}, {"files": ["a"] * 6}, {}])
def test_download_bad_requests(api, kid, body):
    problem(api.request("GET", f"/v2/kernel/{kid}/download", body), 400, "invalid-api-params")


def test_files_of_a_missing_directory(api, kid):
    problem(
        api.request("GET", f"/v2/kernel/{kid}/files", {"path": "nope"}), 400, "invalid-api-params"
    )


def test_batch_build_and_exec(api, kid):
    upload(api, kid, [("main.py", b"print('batch', open('built.txt').read())\n")])
    options = {"build": "echo built > built.txt; echo building", "exec": "*"}
    r = api.execute(kid, mode="batch", code="", options=options).json()["result"]
    statuses = [r]
    while statuses[-1]["status"] != "finished":
        statuses.append(api.execute(kid, mode="batch", code="", options=options).json()["result"])
    kinds = [s["status"] for s in statuses]
    assert "build-finished" in kinds and kinds[-1] == "finished"
    text = "".join(c[1] for s in statuses for c in s["console"])
    assert text == "building\nbatch built\n\n"


def test_batch_build_failure_skips_exec(api, kid):
    options = {"build": "exit 3", "exec": "touch ran.txt"}
    results = [api.execute(kid, mode="batch", options=options).json()["result"]]
    while results[-1]["status"] != "finished":
        results.append(api.execute(kid, mode="batch", options=options).json()["result"])
    build = next(r for r in results if r["status"] == "build-finished")
    assert build["exitCode"] == 3
    assert results[-1]["exitCode"] == 127
    assert "not running the program" in "".join(c[1] for r in results for c in r["console"])
    names = [
        f["filename"]
        for f in json.loads(api.request("GET", f"/v2/kernel/{kid}/files").json()["files"])
    ]
    assert "ran.txt" not in names


def test_complete(api, kid):
    api.run(kid, "my_variable = 1")
    r = api.request("POST", f"/v2/kernel/{kid}/complete", {"code": "my_var", "options": {}})
    assert r.status_code == 200
    assert any(c.startswith("my_variable") for c in r.json()["result"]["completions"])
    legacy = api.execute(kid, mode="complete", code="pri").json()["result"]
    assert any(c.startswith("print") for c in legacy["completions"])


def test_absolute_paths_under_home_work(api, kid):
    """Seed text: "The path may be either absolute or relative, but only
    sub-directories under /home/work is allowed to be created.\""""
    r = upload(api, kid, [("/home/work/abs.txt", b"abs"), ("/home/work/abs/deep.txt", b"d")])
    assert r.status_code == 204, r.text
    listing = api.request("GET", f"/v2/kernel/{kid}/files", {"path": "/home/work/abs"}).json()
    assert [f["filename"] for f in json.loads(listing["files"])] == ["deep.txt"]
    top = api.request("GET", f"/v2/kernel/{kid}/files", {"path": "/home/work"}).json()
    assert "abs.txt" in [f["filename"] for f in json.loads(top["files"])]
    r = api.request("GET", f"/v2/kernel/{kid}/download", {"files": ["/home/work/abs.txt"]})
    assert r.status_code == 200 and b"abs" in r.content


@pytest.mark.parametrize("path", ["/home/workx/a.txt", "/home/work/../etc/x", "/home", "/tmp/x"])
def test_absolute_paths_elsewhere_are_refused(api, kid, path):
    assert "leaves" in problem(upload(api, kid, [(path, b"x")]), 400, "invalid-api-params")
    r = api.request("GET", f"/v2/kernel/{kid}/files", {"path": path})
    assert "leaves" in problem(r, 400, "invalid-api-params")
    r = api.request("GET", f"/v2/kernel/{kid}/download", {"files": [path]})
    assert "leaves" in problem(r, 400, "invalid-api-params")
