"""Kernel endpoints: create, info, destroy, restart, execute, interrupt (spec §5, §6)."""

from __future__ import annotations

import re

from starlette.responses import Response
from starlette.routing import Route

from sandbox.kernel import KernelGone
from sandbox.spec import WORK_DIR, Bind

from .. import limits
from ..app import Call, json_response, no_content, signed
from ..errors import Problem, bad_params
from ..folder_use import holding
from ..folders import Folder
from ..pool import kernel_spec
from ..registry import IDLE, Session, resolve_lang

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


ALIAS_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def _mount_plan(mounts: list[str], access_key: str, call: Call) -> dict[str, Folder]:
    """Resolve `name` / `name:alias` entries to the key's folders: {alias: folder},
    each mounted at /home/work/<alias>. 404 folder-not-found, 400 for a bad alias."""
    store = call.request.app.state.folders
    by_alias: dict[str, Folder] = {}
    for entry in mounts:
        name, _, alias = entry.partition(":")
        alias = alias or name
        parts = alias.split("/")
        if not ALIAS_RE.match(alias) or any(p in (".", "..") for p in parts):
            raise bad_params(f"mounts: {entry!r}: the alias must be a relative path in /home/work")
        if alias in by_alias or any(
            a.startswith(alias + "/") or alias.startswith(a + "/") for a in by_alias
        ):
            raise bad_params(f"mounts: {entry!r}: two folders at or inside one another")
        folder = store.get(access_key, name)
        if folder is None:
            raise Problem("folder-not-found", f"no folder named {name!r}")
        by_alias[alias] = folder
    return by_alias


def _mounts(data: dict) -> list[str]:
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
    if len(mounts) > 5:
        raise bad_params("mounts: at most 5 folders")
    return mounts


@signed
async def create(call: Call) -> Response:
    data = call.json()
    _unknown(data, CREATE_FIELDS, "body")
    lang = data.get("lang")
    if not isinstance(lang, str) or not lang:
        raise bad_params("lang: required, a string")
    token = data.get("clientSessionToken")
    if not isinstance(token, str) or not TOKEN_RE.match(token):
        raise bad_params("clientSessionToken: required, 4-80 characters of [A-Za-z0-9_.:-]")
    config = call.request.app.state.config
    kernel_limits = limits.requested(data, config)
    mounts = _mounts(data)
    language = resolve_lang(lang)
    planned = _mount_plan(mounts, call.access_key, call)
    state = call.request.app.state
    # the folders' devices are held until the kernel is registered as mounting them
    async with holding(state, list(planned.values())) as sources:
        binds = tuple(
            Bind(sources[folder.id], f"{WORK_DIR}/{alias}", False, state.folders.owner(folder))
            for alias, folder in planned.items()
        )
        spec = kernel_spec(config, language, kernel_limits.memory_bytes, binds)
        session, created = await state.registry.get_or_create(
            call.access_key,
            token,
            language.name,
            spec,
            kernel_limits,
            call.keypair.concurrency_limit,
            {alias: folder.id for alias, folder in planned.items()},
        )
    return json_response({"kernelId": session.id, "created": created}, status=201)


def session_for(call: Call) -> Session:
    """The caller's kernel named in the path (404 for unknown or foreign ids); counts the call."""
    session = call.request.app.state.registry.get(
        call.access_key, call.request.path_params["kernel_id"]
    )
    session.touch()
    return session


@signed
async def info(call: Call) -> Response:
    session = session_for(call)
    return json_response(await call.request.app.state.registry.info(session))


@signed
async def destroy(call: Call) -> Response:
    session = session_for(call)
    if not await call.request.app.state.registry.destroy(session):
        raise Problem("kernel-destruction-failed", "a process of it would not die")
    return no_content()


@signed
async def restart(call: Call) -> Response:
    session = session_for(call)
    await call.request.app.state.registry.restart(session)
    return no_content()


@signed
async def execute(call: Call) -> Response:
    data = call.json()
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
    session = session_for(call)
    if mode == "complete":  # the legacy spelling of /complete (spec §5.8)
        return json_response({"result": await _complete(session, code, options or {})})
    hold = call.request.app.state.config.hold_seconds
    try:
        result, run_id_used = await session.execute(mode, code, options or {}, run_id, hold)
    except KernelGone as e:
        raise Problem("kernel-execution-failed", "the kernel is gone") from e
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
        await call.request.app.state.registry.destroy(session, reason="exec timeout")
    return json_response({"result": body})


@signed
async def interrupt(call: Call) -> Response:
    session = session_for(call)
    kernel = session.kernel
    try:
        await kernel.interrupt()
    except KernelGone as e:
        problem = await session.problem_for(kernel, e)  # raises 404 if it ended
        if session.kernel is kernel:
            raise problem from e
        # restarted after an OOM kill: the run it would interrupt is over
    return no_content()


async def _complete(session: Session, code: str, options: dict) -> dict:
    """Completions from the python3 REPL; none while a run is active (it is busy)."""
    if session.state != IDLE or not session.language.completes:
        return {"status": "finished", "completions": []}
    try:
        reply, _ = await session.kernel.request("complete", code=code, options=options, timeout=5)
    except KernelGone:
        return {"status": "finished", "completions": []}
    items = reply.get("items")
    valid = isinstance(items, list) and all(isinstance(i, str) for i in items)
    return {"status": "finished", "completions": items if valid else []}


@signed
async def complete(call: Call) -> Response:
    data = call.json()
    _unknown(data, {"code", "options"}, "body")
    code, options = data.get("code", ""), data.get("options") or {}
    if not isinstance(code, str):
        raise bad_params("code: expected a string")
    if not isinstance(options, dict):
        raise bad_params("options: expected an object")
    return json_response({"result": await _complete(session_for(call), code, options)})


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
    ]
