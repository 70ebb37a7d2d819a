"""Text that JSON carries and the OS cannot take: a NUL byte in a batch command and a
lone surrogate ("\\ud800") in code or commands. Each run fails as a run, with why on
stderr; the kernel lives on and runs the next query."""

from __future__ import annotations

import pytest


def finish(api, kid: str, **body) -> list[dict]:
    results = [api.execute(kid, **body).json()["result"]]
    while results[-1]["status"] != "finished":
        body = {"mode": body["mode"], "code": "", "options": body.get("options")}
        results.append(api.execute(kid, **body).json()["result"])
    return results


def stderr_of(results: list[dict]) -> str:
    return "".join(text for r in results for kind, text in r["console"] if kind == "stderr")


@pytest.mark.parametrize("command", ["echo a\x00b", "echo \ud800"])
def test_batch_commands_the_os_cannot_take(api, command):
    kid = api.create(lang="bash").json()["kernelId"]
    try:
        results = finish(api, kid, mode="batch", code="", options={"build": command, "exec": ""})
        build = next(r for r in results if r["status"] == "build-finished")
        assert build["exitCode"] == 127 and "cannot run /bin/sh" in stderr_of(results)
        assert finish(api, kid, mode="query", code="echo alive")[-1]["console"] == [
            ["stdout", "alive\n"]
        ]
    finally:
        api.request("DELETE", f"/v2/kernel/{kid}")


def test_a_lone_surrogate_in_compiled_code(api):
    kid = api.create(lang="c").json()["kernelId"]
    try:
        code = "int main(void) { return 0; } /* \ud800 */\n"
        results = finish(api, kid, mode="query", code=code)
        assert results[-1]["status"] == "finished"
        hello = '#include <stdio.h>\nint main(void) { puts("alive"); }\n'
        assert finish(api, kid, mode="query", code=hello)[-1]["console"] == [["stdout", "alive\n"]]
    finally:
        api.request("DELETE", f"/v2/kernel/{kid}")
