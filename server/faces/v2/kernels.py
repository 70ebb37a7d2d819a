"""Kernel endpoints: create, info, destroy, restart, execute, interrupt, complete
(spec §5, §6)."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from ...engine.engine import Mount
from ...engine.registry import KernelInfo
from ...engine.session import Session
from ..http import Caller, json_response
from . import resource_limits
from .problems import Problem
from .request_schemas import COMPLETE, CREATE_KERNEL, EXECUTE, takes
from .signed import engine_of, no_content, session_for, signed


def _mounts(data: dict) -> list[Mount]:
    """`mounts` (or `config.mounts`): `name` or `name:alias` entries."""
    config = data.get("config") or {}
    found = []
    for entry in config.get("mounts", data.get("mounts")) or []:
        name, _, alias = entry.partition(":")
        found.append(Mount(name, alias or name))
    return found


@signed
@takes(CREATE_KERNEL)
async def create(caller: Caller, data: dict) -> Response:
    engine = engine_of(caller.request)
    limits = resource_limits.requested(data, engine.settings.limits)
    session, created = await engine.get_or_create(
        caller.keypair, data["clientSessionToken"], data["lang"], limits, _mounts(data)
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
@takes(EXECUTE)
async def execute(caller: Caller, data: dict) -> Response:
    mode = data.get("mode", data.get("type"))
    code, options, run_id = data.get("code") or "", data.get("options") or {}, data.get("runId")
    session = session_for(caller)
    engine = engine_of(caller.request)
    if mode == "complete":  # the legacy spelling of /complete (spec §5.8)
        return json_response({"result": await _complete(caller, session, code, options)})
    hold = caller.request.app.state.v2.hold_seconds
    result, run_id_used = await engine.execute(session, mode, code, options, run_id, hold)
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
@takes(COMPLETE)
async def complete(caller: Caller, data: dict) -> Response:
    code, options = data.get("code", ""), data.get("options") or {}
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
