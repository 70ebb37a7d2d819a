"""Kernel endpoints: create, info, destroy, restart, execute, interrupt, complete
(spec §5, §6)."""

from __future__ import annotations

import re

from starlette.responses import Response
from starlette.routing import Route

from ...engine.engine import Mount
from ...engine.registry import KernelInfo
from ...engine.session import Session
from ..http import Caller, json_response
from . import resource_limits
from .problems import Problem, bad_params
from .signed import engine_of, no_content, session_for, signed

CREATE_FIELDS = {
    "lang",
    "clientSessionToken",
    "limits",
    "resourceLimits",
    "mounts",
    "config",
    "tag",
}
EXECUTE_FIELDS = {"mode", "type", "code", "options", "runId"}
MODES = {"query", "batch", "continue", "input", "complete"}
# v2 allowed 8-80 characters, v3 4-64 word characters: accept either, keep it printable.
TOKEN_RE = re.compile(r"^[\w.:-]{4,80}$", re.ASCII)


def _unknown(data: dict, known: set[str], where: str) -> None:
    extra = sorted(set(data) - known)
    if extra:
        raise bad_params(f"{where}: unknown field {extra[0]!r}")


def _mounts(data: dict) -> list[Mount]:
    """`mounts` (or `config.mounts`): `name` or `name:alias` entries."""
    mounts = data.get("mounts")
    config = data.get("config")
    if config is not None:
        if not isinstance(config, dict):
            raise bad_params("config: expected an object")
        mounts = config.get("mounts", mounts)
    if mounts is None:
        return []
    if not isinstance(mounts, list) or not all(isinstance(m, str) for m in mounts):
        raise bad_params("mounts: expected a list of folder names")
    found = []
    for entry in mounts:
        name, _, alias = entry.partition(":")
        found.append(Mount(name, alias or name))
    return found


@signed
async def create(caller: Caller) -> Response:
    data = caller.json()
    _unknown(data, CREATE_FIELDS, "body")
    lang = data.get("lang")
    if not isinstance(lang, str) or not lang:
        raise bad_params("lang: required, a string")
    token = data.get("clientSessionToken")
    if not isinstance(token, str) or not TOKEN_RE.match(token):
        raise bad_params("clientSessionToken: required, 4-80 characters of [A-Za-z0-9_.:-]")
    engine = engine_of(caller.request)
    limits = resource_limits.requested(data, engine.settings.limits)
    session, created = await engine.get_or_create(
        caller.keypair, token, lang, limits, _mounts(data)
    )
    return json_response({"kernelId": session.id, "created": created}, status=201)


def _info(info: KernelInfo) -> dict:
    """The flat DOC-v2 info object (spec §5.2), in its units."""
    return {
        "lang": info.lang,
        "age": round(info.age_ms, 1),
        "queryTimeout": info.limits.exec_timeout_ms,
        "idleTimeout": info.limits.idle_timeout_ms,
        "memoryLimit": info.limits.memory_bytes // 1024,
        "maxCpuCredit": info.limits.cpu_credit_ms,
        "numQueriesExecuted": info.queries,
        "idle": round(info.idle_ms, 1),
        "memoryUsed": info.memory_peak_bytes // 1024,  # peak, as v2 reported it
        "memoryCurrent": info.memory_current_bytes // 1024,
        "cpuCreditUsed": round(info.cpu_used_ms, 1),
    }


@signed
async def info(caller: Caller) -> Response:
    session = session_for(caller)
    return json_response(_info(await engine_of(caller.request).info(session)))


@signed
async def destroy(caller: Caller) -> Response:
    session = session_for(caller)
    if not await engine_of(caller.request).destroy(session):
        raise Problem("kernel-destruction-failed", "a process of it would not die")
    return no_content()


@signed
async def restart(caller: Caller) -> Response:
    session = session_for(caller)
    await engine_of(caller.request).restart(session)
    return no_content()


@signed
async def execute(caller: Caller) -> Response:
    data = caller.json()
    _unknown(data, EXECUTE_FIELDS, "body")
    mode = data.get("mode", data.get("type"))
    if mode not in MODES:
        raise bad_params(f"mode: required, one of {', '.join(sorted(MODES))}")
    code = data.get("code") or ""
    if not isinstance(code, str):
        raise bad_params("code: expected a string")
    options = data.get("options")
    if options is not None and not isinstance(options, dict):
        raise bad_params("options: expected an object or null")
    run_id = data.get("runId")
    if run_id is not None and not isinstance(run_id, str):
        raise bad_params("runId: expected a string or null")
    session = session_for(caller)
    engine = engine_of(caller.request)
    if mode == "complete":  # the legacy spelling of /complete (spec §5.8)
        return json_response({"result": await _complete(caller, session, code, options or {})})
    hold = caller.request.app.state.v2.hold_seconds
    result, run_id_used = await engine.execute(session, mode, code, options or {}, run_id, hold)
    body = {
        "status": result.status,
        "console": result.console,
        "options": result.options,
        "files": [],
        "exitCode": result.exit_code,  # [v3]; v2 clients ignore it
    }
    if "runId" in data:  # [v3] explicit runs get their id back
        body["runId"] = run_id_used
    if result.status == "exec-timeout":  # the docs' promise: the kernel is destroyed
        await engine.destroy(session, reason="exec timeout")
    return json_response({"result": body})


@signed
async def interrupt(caller: Caller) -> Response:
    await engine_of(caller.request).interrupt(session_for(caller))
    return no_content()


async def _complete(caller: Caller, session: Session, code: str, options: dict) -> dict:
    items = await engine_of(caller.request).complete(session, code, options)
    return {"status": "finished", "completions": items}


@signed
async def complete(caller: Caller) -> Response:
    data = caller.json()
    _unknown(data, {"code", "options"}, "body")
    code, options = data.get("code", ""), data.get("options") or {}
    if not isinstance(code, str):
        raise bad_params("code: expected a string")
    if not isinstance(options, dict):
        raise bad_params("options: expected an object")
    session = session_for(caller)
    return json_response({"result": await _complete(caller, session, code, options)})


@signed
async def logs(caller: Caller) -> Response:
    """Kernel logs ([v3] §5.9) are not kept: each run's console is its execute result."""
    session_for(caller)
    raise Problem("not-implemented", "kernel logs: not offered here; use execute")


def routes(prefix: str) -> list[Route]:
    kernel = f"{prefix}/kernel/{{kernel_id}}"
    return [
        Route(f"{prefix}/kernel/create", create, methods=["POST"]),
        Route(f"{prefix}/kernel/", create, methods=["POST"]),
        Route(kernel, info, methods=["GET"]),
        Route(kernel, destroy, methods=["DELETE"]),
        Route(kernel, restart, methods=["PATCH"]),
        Route(kernel, execute, methods=["POST"]),
        Route(f"{kernel}/interrupt", interrupt, methods=["POST"]),
        Route(f"{kernel}/complete", complete, methods=["POST"]),
        Route(f"{kernel}/logs", logs, methods=["GET"]),
    ]
