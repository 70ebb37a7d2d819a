"""A kernel cannot fill the host's disk through a folder, nor freeze the API with one
(issue "hostile tenants", points 3 and 5).

A real server with small folders (16 MiB, 2,048 inodes): kernels that mount a
folder write until the kernel says no; the data directory holds no more than the
images; a folder's device goes with its last user; a folder holding 1,500
nested directories is deleted whole; folder operations count as kernels.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time

import pytest
from helpers.harness import wait_until

from sandbox.folder_images import loops_backing
from sandbox.spec import MiB

_SPEC = importlib.util.spec_from_file_location(
    "api_conftest", os.path.join(os.path.dirname(os.path.dirname(__file__)), "api", "conftest.py")
)
api = sys.modules["api_conftest"] = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(api)  # the API tests' server fixtures, under a name of its own

FOLDER_BYTES = 16 * MiB
FOLDER_INODES = 2048
MAX_KERNELS = 4
CONFIG = f"""
folder_bytes = {FOLDER_BYTES}
folder_inodes = {FOLDER_INODES}
max_folder_bytes_per_key = {64 * MiB}
max_kernels = {MAX_KERNELS}
pool_size = 0
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("folder-quota")
    proc, server = api.start_server(str(data / "data"), config=CONFIG)
    yield server
    api.stop_server(proc)


@pytest.fixture(scope="module")
def client(server):
    return server.client(**server.new_key(concurrency=10))


@pytest.fixture
def kernels(client):
    """Kernels a test made, destroyed after it whatever happened: a failed test
    must not leave the next one at max_kernels."""
    made: list[str] = []

    def create(mounts: list[str]) -> str:
        r = client.create(mounts=mounts)
        assert r.status_code == 201, r.text
        made.append(r.json()["kernelId"])
        return made[-1]

    yield create
    for kid in made:
        client.request("DELETE", f"/v2/kernel/{kid}")


@pytest.fixture
def folder(client):
    name = f"q{time.monotonic_ns()}"
    r = client.request("POST", "/v2/folders", {"name": name})
    assert r.status_code == 201, r.text
    yield name
    client.request("DELETE", f"/v2/folders/{name}")


def run(client, kid: str, code: str) -> str:
    results = client.run(kid, code)
    out = "".join(t for r in results for k, t in r["console"] if k == "stdout")
    err = "".join(t for r in results for k, t in r["console"] if k == "stderr")
    assert not err, err
    return out


def image_of(server, client, name: str) -> str:
    folder_id = client.request("GET", f"/v2/folders/{name}").json()["id"]
    return os.path.join(server.data_dir, "folders", folder_id + ".img")


def allocated(path: str) -> int:
    """Bytes the files under `path` take on the host's disk."""
    total = 0
    for top, _dirs, names in os.walk(path):
        for name in names:
            total += os.lstat(os.path.join(top, name)).st_blocks * 512
    return total


def test_writes_into_a_folder_stop_at_its_quota(server, client, kernels, folder):
    before = allocated(server.data_dir)
    kid = kernels([folder])
    out = run(client, kid, f"""
import errno
written, error = 0, None
with open('{folder}/big', 'wb', buffering=0) as f:
    while written < {2 * FOLDER_BYTES}:
        try:
            written += f.write(b'x' * (1 << 20))
        except OSError as e:
            error = errno.errorcode[e.errno]
            break
print(error, written)
""")  # fmt: skip
    error, written = out.split()
    assert error in ("ENOSPC", "EDQUOT"), out
    assert FOLDER_BYTES // 2 < int(written) <= FOLDER_BYTES
    # the image was reserved whole at create: the writes took nothing more on the host
    assert allocated(server.data_dir) - before < 1 * MiB
    assert os.stat(image_of(server, client, folder)).st_size == FOLDER_BYTES
    client.request("DELETE", f"/v2/kernel/{kid}")


def test_many_small_files_stop_at_the_inode_quota(client, kernels, folder):
    kid = kernels([folder])
    out = run(client, kid, f"""
import errno, os
os.mkdir('{folder}/many')
made, error = 0, None
while made < {2 * FOLDER_INODES}:
    try:
        open(f'{folder}/many/{{made}}', 'w').close()
    except OSError as e:
        error = errno.errorcode[e.errno]
        break
    made += 1
print(error, made)
""")  # fmt: skip
    error, made = out.split()
    assert error in ("ENOSPC", "EDQUOT"), out
    assert FOLDER_INODES - 16 <= int(made) < FOLDER_INODES
    client.request("DELETE", f"/v2/kernel/{kid}")
    info = client.request("GET", f"/v2/folders/{folder}").json()
    assert info["numFiles"] == int(made)


def test_a_kernel_sees_its_folder_as_a_device_not_a_host_path(server, client, kernels, folder):
    kid = kernels([f"{folder}:data"])
    out = run(client, kid, "print(open('/proc/self/mountinfo').read())")
    client.request("DELETE", f"/v2/kernel/{kid}")
    line = next(line for line in out.splitlines() if line.split()[4] == "/home/work/data")
    fields = line.split()
    assert fields[3] == "/", line  # the root of its own file system
    assert fields[fields.index("-") + 1 : fields.index("-") + 3][0] == "ext4", line
    assert fields[fields.index("-") + 2].startswith("/dev/loop"), line
    assert server.data_dir not in out


def test_one_device_per_folder_and_none_after_its_last_user(server, client, kernels, folder):
    image = image_of(server, client, folder)  # a GET measures it: a user too
    wait_until(lambda: loops_backing(image) == [], "the measure's loop device to go", timeout=10)
    first, second = kernels([folder]), kernels([folder])
    # two kernels, one loop device: two would be two ext4 instances on one file
    assert len(loops_backing(image)) == 1
    run(client, first, f"open('{folder}/seen', 'w').write('from the first')")
    assert run(client, second, f"print(open('{folder}/seen').read())").strip() == "from the first"
    client.request("DELETE", f"/v2/kernel/{first}")
    assert len(loops_backing(image)) == 1  # the second still mounts it
    client.request("DELETE", f"/v2/kernel/{second}")
    wait_until(lambda: loops_backing(image) == [], "the folder's loop device to go", timeout=10)


def test_a_folder_of_1500_nested_directories_is_deleted_whole(server, client, kernels):
    name = f"deep{time.monotonic_ns()}"
    assert client.request("POST", "/v2/folders", {"name": name}).status_code == 201
    try:
        image = image_of(server, client, name)
        kid = kernels([name])
        nest = f"import os\nos.chdir('{name}')\nfor _ in range(1500):\n    os.mkdir('d')\n"
        assert run(client, kid, nest + "    os.chdir('d')\nprint('deep')").strip() == "deep"
        client.request("DELETE", f"/v2/kernel/{kid}")
        info = client.request("GET", f"/v2/folders/{name}")
        assert info.status_code == 200, info.text
        r = client.request("DELETE", f"/v2/folders/{name}")
        assert r.status_code == 204, r.text
        folders = os.path.join(server.data_dir, "folders")
        assert not os.path.exists(image)
        assert os.listdir(os.path.join(folders, ".trash")) == []
        assert [n for n in os.listdir(folders) if n != ".trash"] == []
        wait_until(lambda: loops_backing(image) == [], "the folder's loop device to go", timeout=10)
        assert client.request("GET", "/v2/folders").json() == []
    finally:
        client.request("DELETE", f"/v2/folders/{name}")  # when the test failed


def test_folder_operations_count_against_max_kernels(client, kernels, folder):
    kids = [kernels([]) for _ in range(MAX_KERNELS)]
    r = client.request("GET", f"/v2/folders/{folder}/files", {"path": "."})
    assert "maximum" in api_problem(r, 503, "instance-not-available")
    for kid in kids:
        client.request("DELETE", f"/v2/kernel/{kid}")
    r = client.request("GET", f"/v2/folders/{folder}/files", {"path": "."})
    assert r.status_code == 200, r.text


def api_problem(r, status: int, kind: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"].endswith(kind), body
    return body["title"]
