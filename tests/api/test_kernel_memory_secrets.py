"""Threat-model row 15: a kernel's memory holds nothing of the host's.

A kernel is forked, so it starts as a copy of the process it is forked from. The
server plants canaries (a variable of its environment, a key's secret, a
folder's host path, another tenant's kernel id created just before), then a
fresh kernel reads every readable mapping of its own address space
(`/proc/self/maps` for the ranges, `ctypes.string_at` to read them) and looks
for each. A needle is sent as two halves and matched half by half, so the scan
never builds it; a control string the kernel makes at run time must be found,
which proves the scan reads what it should.
"""

from __future__ import annotations

import json
import os
import secrets
import textwrap

import psutil
import pytest
from helpers.api_server import spawner_pid, start_server, stop_server

from sandbox.spawner_client import SPAWNER_ENVIRONMENT

CANARY_VARIABLE = "SANDBOX_TEST_CANARY"

PYTHON_SCAN = """
import ctypes, json, os
needles = {needles!r}
control = ("ctl" + os.urandom(12).hex()).encode()  # made here: must be found
needles["control"] = (control[:8], control[8:])
found = dict.fromkeys(needles, False)
SKIP = ("[vvar]", "[vvar_vclock]", "[vsyscall]")
CHUNK = 1 << 20
with open("/proc/self/maps") as f:
    maps = f.read().splitlines()
for line in maps:
    fields = line.split(None, 5)
    lo, hi = (int(x, 16) for x in fields[0].split("-"))
    path = fields[5] if len(fields) > 5 else ""
    if fields[1][0] != "r" or path in SKIP:
        continue
    size = hi - lo
    if path.startswith("/"):  # a file's pages: none past its end (SIGBUS)
        try:
            size = min(size, os.stat(path).st_size - int(fields[2], 16))
        except OSError:
            continue
    for offset in range(0, max(size, 0), CHUNK):
        data = ctypes.string_at(lo + offset, min(CHUNK + 64, size - offset))
        for name, (head, tail) in needles.items():
            at = data.find(head)
            while at >= 0 and not found[name]:
                found[name] = data[at + len(head) : at + len(head) + len(tail)] == tail
                at = data.find(head, at + 1)
print(json.dumps(found))
"""

C_SCAN = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *names[] = {NAMES};
static const char *heads[] = {HEADS};
static const char *tails[] = {TAILS};
#define N (sizeof(names) / sizeof(names[0]))

int main(void) {
    char control[32];
    snprintf(control, sizeof control, "ctl%08lx%08lx", random() ^ (long)&control, (long)main);
    char control_head[9];
    memcpy(control_head, control, 8);
    control_head[8] = 0;
    int found[N + 1] = {0};
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4096];
    while (fgets(line, sizeof line, maps)) {
        unsigned long lo, hi, offset;
        char perms[8], path[4096] = "";
        if (sscanf(line, "%lx-%lx %7s %lx %*s %*s %4095[^\n]", &lo, &hi, perms, &offset,
                   path) < 4 || perms[0] != 'r' || strncmp(path, "[v", 2) == 0)
            continue;
        unsigned long size = hi - lo;
        if (path[0] == '/') {
            struct stat st;
            if (stat(path, &st) != 0 || (unsigned long)st.st_size <= offset)
                continue;
            if (st.st_size - offset < size)
                size = st.st_size - offset;
        }
        for (size_t i = 0; i <= N; i++) {
            const char *head = i < N ? heads[i] : control_head;
            const char *tail = i < N ? tails[i] : control + 8;
            size_t hl = strlen(head), tl = strlen(tail);
            const char *at = (const char *)lo, *end = (const char *)lo + size;
            while (!found[i] && (at = memmem(at, end - at, head, hl)) != NULL) {
                found[i] = (size_t)(end - at) >= hl + tl && memcmp(at + hl, tail, tl) == 0;
                at++;
            }
        }
    }
    printf("{");
    for (size_t i = 0; i < N; i++)
        printf("\"%s\": %s, ", names[i], found[i] ? "true" : "false");
    printf("\"control\": %s}\n", found[N] ? "true" : "false");
    return 0;
}
"""


def halves(text: str) -> tuple[bytes, bytes]:
    raw = text.encode()
    return raw[: len(raw) // 2], raw[len(raw) // 2 :]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A server whose environment, keys, folders and kernels hold canaries, and
    the canaries (name -> text)."""
    env_canary = f"env{secrets.token_hex(16)}"
    data_dir = str(tmp_path_factory.mktemp("canary-data"))
    # No warm pool: the scanning kernel is started after the canaries are planted.
    config = "pool_size = 0\n"
    proc, server = start_server(data_dir, config=config, env={CANARY_VARIABLE: env_canary})
    try:
        owner = server.client()
        other = server.client(**server.new_key())
        folder = owner.request("POST", "/v2/folders", {"name": "canary"})
        assert folder.status_code == 201, folder.text
        mounted = owner.create(mounts=["canary"])
        assert mounted.status_code == 201, mounted.text
        owner.run(mounted.json()["kernelId"], "print(1)")
        foreign = other.create()
        assert foreign.status_code == 201, foreign.text
        other.run(foreign.json()["kernelId"], "print(1)")
        canaries = {
            "environment": env_canary,
            "secret key": server.secret_key,
            "folder path": os.path.join(os.path.abspath(data_dir), "folders", folder.json()["id"]),
            "other kernel id": foreign.json()["kernelId"],
        }
        yield server, canaries
    finally:
        stop_server(proc)


def test_the_spawner_and_its_zygote_have_a_minimal_environment(planted):
    """The server's environment stays the server's: its spawner and the zygotes
    kernels come from (with the pre-imported modules and without) get only what they
    need (a fork shares its environment area)."""
    server, canaries = planted
    spawner = psutil.Process(spawner_pid(server.pid))
    zygotes = [p for p in spawner.children() if p.name() == "sandbox-zygote"]
    assert len(zygotes) == 2
    for process in (spawner, *zygotes):
        assert set(process.environ()) <= set(SPAWNER_ENVIRONMENT)
        assert CANARY_VARIABLE not in process.environ()
    for zygote in zygotes:
        assert zygote.children() == []  # spares are the spawner's children, not its


def scan(client, lang: str, code: str) -> dict[str, bool]:
    r = client.create(lang=lang)
    assert r.status_code == 201, r.text
    kernel_id = r.json()["kernelId"]
    try:
        results = client.run(kernel_id, code)
    finally:
        client.request("DELETE", f"/v2/kernel/{kernel_id}")
    out = "".join(t for r in results for k, t in r["console"] if k == "stdout")
    err = "".join(t for r in results for k, t in r["console"] if k == "stderr")
    assert out.strip(), f"the scan printed nothing: {err}"
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.cgroups
def test_python3_kernel_memory_holds_no_canary(planted):
    server, canaries = planted
    needles = {name: halves(text) for name, text in canaries.items()}
    found = scan(server.client(), "python3", PYTHON_SCAN.format(needles=needles))
    assert found.pop("control"), "the scan did not find the string it made: it is broken"
    assert found == dict.fromkeys(canaries, False)


@pytest.mark.cgroups
def test_c_kernel_memory_holds_no_canary(planted):
    server, canaries = planted

    def array(items: list[str]) -> str:
        return "{" + ", ".join(json.dumps(item) for item in items) + "}"

    code = (
        C_SCAN.replace("{NAMES}", array(list(canaries)))
        .replace("{HEADS}", array([halves(t)[0].decode() for t in canaries.values()]))
        .replace("{TAILS}", array([halves(t)[1].decode() for t in canaries.values()]))
    )
    found = scan(server.client(), "c", textwrap.dedent(code))
    assert found.pop("control"), "the scan did not find the string it made: it is broken"
    assert found == dict.fromkeys(canaries, False)
