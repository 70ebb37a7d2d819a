"""The shared root template (sandbox.mounts.build_template): every server-mode
kernel's root is a copy of its zygote's read-only template, so no kernel may
change it for the others, and each still has an identity of its own."""

from __future__ import annotations

import json
import textwrap

from helpers.harness import kernel_spec

from sandbox.spec import Bind

PROBE = """
import errno, json, os, pwd
def attempt(action):
    try:
        action()
        return "DONE"
    except OSError as e:
        return errno.errorcode[e.errno]
tries = {
    "write passwd": lambda: open("/etc/passwd", "w").close(),
    "append group": lambda: open("/etc/group", "a").close(),
    "replace hosts": lambda: os.rename("/etc/hosts", "/etc/hosts.old"),
    "remove hosts": lambda: os.remove("/etc/hosts"),
    "new file in /": lambda: open("/planted", "w").close(),
    "new dir in /etc": lambda: os.mkdir("/etc/planted"),
    "chmod /dev": lambda: os.chmod("/dev/shm/..", 0o777),
    "symlink in /dev": lambda: os.symlink("/etc/shadow", "/dev/planted"),
}
print(json.dumps({
    "root_dev": os.stat("/").st_dev,
    "uid": os.getuid(),
    "name": pwd.getpwuid(os.getuid()).pw_name,
    "work_line": [l for l in open("/etc/passwd") if l.startswith("work:")],
    "hosts": open("/etc/hosts").read(),
    "tries": {name: attempt(action) for name, action in tries.items()},
}))
"""


def probe(kernel) -> dict:
    out = kernel.run(textwrap.dedent(PROBE))
    assert out.exit_code == 0, out.stderr
    return json.loads(out.stdout)


def test_kernels_share_a_read_only_template_with_identities_of_their_own(sandbox):
    first, second = sandbox.kernel(name="tpl-a"), sandbox.kernel(name="tpl-b")
    try:
        a, b = probe(first), probe(second)
        # one file system under both roots: the zygote's template
        assert a["root_dev"] == b["root_dev"]
        # ... and neither can change it: every try is refused, none half-done
        for seen in (a, b):
            refused = {name: result for name, result in seen["tries"].items() if result == "DONE"}
            assert not refused, refused
            assert set(seen["tries"].values()) <= {"EROFS", "EACCES", "EPERM"}, seen["tries"]
        assert a["hosts"] == b["hosts"] and "localhost" in a["hosts"]
        # each its own uid, named `work` by its own /etc/passwd
        assert a["uid"] != b["uid"]
        for seen in (a, b):
            assert seen["name"] == "work"
            assert len(seen["work_line"]) == 1
            assert seen["work_line"][0].split(":")[2] == str(seen["uid"])
    finally:
        first.destroy()
    # the template outlives any kernel made from it
    third = sandbox.kernel(name="tpl-c")
    try:
        c = probe(third)
        assert c["root_dev"] == b["root_dev"] and c["name"] == "work"
    finally:
        third.destroy()
        second.destroy()


def test_a_bind_outside_the_work_dir_gets_a_root_of_its_own(sandbox, tmp_path):
    """The read-only template cannot take the directory such a bind needs: that
    kernel's root is built whole, as exec mode's, and sealed the same way."""
    (tmp_path / "data.txt").write_text("from the host\n")
    tmp_path.chmod(0o755)  # pytest's are the host root's own: the kernel's uid may read this
    spec = kernel_spec(binds=(Bind(str(tmp_path), "/srv/data/in", readonly=True),))
    own, plain = sandbox.kernel(spec, name="tpl-own"), sandbox.kernel(name="tpl-plain")
    try:
        seen, template = probe(own), probe(plain)
        assert seen["root_dev"] != template["root_dev"]
        read = own.run("print(open('/srv/data/in/data.txt').read(), end='')")
        assert read.stdout == "from the host\n", read.stderr
        assert set(seen["tries"].values()) <= {"EROFS", "EACCES", "EPERM"}, seen["tries"]
        assert seen["name"] == "work" and seen["work_line"][0].split(":")[2] == str(seen["uid"])
    finally:
        own.destroy()
        plain.destroy()
