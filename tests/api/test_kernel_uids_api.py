"""Each kernel runs as a host uid of its own, from a range no account uses
(sandbox/kernel_uids.py), and a folder's files have one owner across kernels.

Linux keeps some limits per uid, not per namespace: with one uid for every
kernel, one tenant could use up another's (here, inotify instances), and a
kernel's files in a folder were the host's uid 1000's.
"""

from __future__ import annotations

import time

import pytest

from sandbox.kernel_uids import DEFAULT_RANGE


@pytest.fixture(scope="module")
def api(api_server):
    return api_server.client(**api_server.new_key(concurrency=10))


def create(api, **extra) -> str:
    r = api.create(**extra)
    assert r.status_code == 201, r.text
    return r.json()["kernelId"]


def stdout(api, kid: str, code: str) -> str:
    results = api.run(kid, code)
    err = "".join(t for r in results for k, t in r["console"] if k == "stderr")
    assert not err, err
    return "".join(t for r in results for k, t in r["console"] if k == "stdout")


WHO = "import os, pwd; print(os.getuid(), os.getgid(), pwd.getpwuid(os.getuid()).pw_name)"


def test_each_kernel_has_its_own_uid_from_the_range(api):
    kernels = [create(api) for _ in range(3)]
    try:
        seen = []
        for kid in kernels:
            uid, gid, name = stdout(api, kid, WHO).split()
            assert uid == gid and int(uid) in DEFAULT_RANGE and name == "work"
            owner = stdout(api, kid, "import os; print(os.stat('/home/work').st_uid)")
            assert owner.strip() == uid  # its files are its own
            seen.append(uid)
        assert len(set(seen)) == len(seen), seen
    finally:
        for kid in kernels:
            api.request("DELETE", f"/v2/kernel/{kid}")


def test_a_kernel_cannot_use_up_another_kernels_per_uid_budget(api):
    """inotify instances are counted per uid (fs.inotify.max_user_instances):
    a kernel that takes them all leaves the next kernel its own."""
    with open("/proc/sys/fs/inotify/max_user_instances") as f:
        limit = int(f.read())
    hog, other = create(api), create(api)
    try:
        taken = stdout(
            api,
            hog,
            f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
fds = []
while len(fds) < {limit + 1} and (fd := libc.inotify_init()) >= 0:
    fds.append(fd)
print(len(fds), ctypes.get_errno())
""",
        )
        count, errno_ = map(int, taken.split())
        assert count < limit + 1 and errno_ == 24, taken  # EMFILE: its budget is used up
        got = stdout(
            api, other, "import ctypes; print(ctypes.CDLL(None, use_errno=True).inotify_init())"
        )
        assert int(got) >= 0, "the other kernel had no inotify instance left"
    finally:
        api.request("DELETE", f"/v2/kernel/{hog}")
        api.request("DELETE", f"/v2/kernel/{other}")


def test_a_folders_files_are_each_kernels_own(api):
    name = f"uids{time.monotonic_ns()}"
    assert api.request("POST", "/v2/folders", {"name": name}).status_code == 201
    first = second = None
    try:
        first = create(api, mounts=[name])
        out = stdout(
            api,
            first,
            f"import os\nopen('{name}/a.txt', 'w').write('one')\nos.mkdir('{name}/d')\n"
            f"print(os.getuid(), os.stat('{name}/a.txt').st_uid)",
        )
        uid, owner = out.split()
        assert owner == uid
        api.request("DELETE", f"/v2/kernel/{first}")
        second = create(api, mounts=[name])
        out = stdout(
            api,
            second,
            f"import os\nopen('{name}/a.txt', 'a').write('two')\n"
            f"open('{name}/d/b.txt', 'w').write('three')\nos.chmod('{name}/a.txt', 0o600)\n"
            f"print(os.getuid(), os.stat('{name}/a.txt').st_uid, open('{name}/a.txt').read())",
        )
        other_uid, owner, text = out.split()
        assert other_uid != uid and owner == other_uid and text == "onetwo"
    finally:
        for kid in (first, second):
            if kid:
                api.request("DELETE", f"/v2/kernel/{kid}")
        api.request("DELETE", f"/v2/folders/{name}")


def test_a_restarted_kernel_keeps_its_uid_and_files(api):
    kid = create(api)
    try:
        before = stdout(api, kid, "import os\nopen('mine.txt', 'w').write('x')\nprint(os.getuid())")
        r = api.request("PATCH", f"/v2/kernel/{kid}")  # restart: files kept (spec §7.2)
        assert r.status_code in (200, 204), r.text
        after = stdout(api, kid, "import os\nopen('mine.txt', 'a').write('y')\nprint(os.getuid())")
        assert after == before
    finally:
        api.request("DELETE", f"/v2/kernel/{kid}")
