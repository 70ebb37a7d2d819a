"""Commands answered by the running server (its loopback-only /admin routes)."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.parse
import urllib.request

from .common import age, config, fail, print_table


def _ask_server(args: argparse.Namespace, method: str, path: str, body: dict | None = None) -> dict:
    """The running server's JSON answer to an admin request; exits with why not."""
    url = config(args).server.local_url(args.port) + path
    data = None if body is None else json.dumps(body).encode()
    headers = {} if body is None else {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        try:
            detail = json.loads(e.read()).get("error", e.reason)
        except ValueError:
            detail = e.reason
        fail(f"{url}: {e.code} {detail}")
    except (OSError, ValueError) as e:
        fail(f"cannot reach the server at {url} ({e}); is it running? (--config, --port)")


def kernels_list(args: argparse.Namespace) -> None:
    answer = _ask_server(args, "GET", "/admin/kernels")
    if args.json:
        print(json.dumps(answer, indent=2))
        return
    if not answer["kernels"]:
        print("no kernels")
        return
    rows = [("ID", "KEY", "LANG", "STATE", "AGE", "IDLE", "MEMORY", "CPU")]
    rows += [
        (k["id"], k["key"], k["lang"], k["state"], age(k["ageSeconds"]), age(k["idleSeconds"]),
         f"{k['memoryBytes'] / 2**20:.1f} MiB", f"{k['cpuMs'] / 1000:.1f} s")
        for k in answer["kernels"]
    ]  # fmt: skip
    print_table(rows)


def kernels_destroy(args: argparse.Namespace) -> None:
    answer = _ask_server(args, "DELETE", f"/admin/kernels/{urllib.parse.quote(args.kernel_id)}")
    note = "" if answer["allGone"] else " (a process of it would not die: freed once it does)"
    print(f"destroyed {answer['destroyed']}{note}")


def server_status(args: argparse.Namespace) -> None:
    answer = _ask_server(args, "GET", "/admin/status")
    if args.json:
        print(json.dumps(answer, indent=2))
        return
    sizes = answer.get("poolSize", {})
    pool = (
        ", ".join(f"{lang} {n} of {sizes.get(lang, n)}" for lang, n in answer["pool"].items())
        or "none"
    )
    print(
        f"cgroup layout: {answer['layout']}\n"
        f"kernels:       {answer['kernels']} of at most {answer['maxKernels']}, "
        f"{answer['keys']} keys\n"
        f"warm pool:     {pool}; {answer['spares']} spare processes\n"
        f"jobs waiting:  {answer['jobs']['waiting']} (at most {answer['jobs']['maxRunning']} run)\n"
        f"kernel memory: {answer['defaultMemoryBytes'] // 2**20} MiB by default"
    )


def pool_expect(args: argparse.Namespace) -> None:
    answer = _ask_server(args, "POST", "/admin/pool", {"lang": args.lang, "size": args.size})
    if args.json:
        print(json.dumps(answer, indent=2))
        return
    kept = f"{answer['size']} {answer['lang']} kernels"
    print(f"the pool keeps {kept} ready for the next {age(answer['forSeconds'])}")
