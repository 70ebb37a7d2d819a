"""What v2 responses carry, as JSON Schema 2020-12, for /v2/openapi.json.

The handlers build these bodies by hand (kernels.py, folders.py, ...); these
schemas say what they build, and the fuzz test (tests/api/test_fuzz_api.py)
checks every response it gets against them. Errors are RFC 7807 problem
documents (problems.py) under either dialect's type URL.
"""

from __future__ import annotations

import re
from typing import Any

from .problems import BACKENDAI_BASE, SORNA_BASE

Schema = dict[str, Any]

_STRING = {"type": "string"}
_BOOLEAN = {"type": "boolean"}
_COUNT = {"type": "integer", "minimum": 0}
_NUMBER = {"type": "number", "minimum": 0}


def _object(required: bool = True, **properties: Schema) -> Schema:
    """An object with these properties, all of them present unless not `required`."""
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(properties)
    return schema


PROBLEM = {
    "type": "object",
    "description": "RFC 7807: `type` names the problem (spec §4.2), `title` says it, with "
    "the field or the reason in parentheses. Sorna-dialect requests (X-Sorna-Version "
    "only) get the sorna.io type URLs.",
    "required": ["type", "title"],
    "properties": {
        "type": {
            "type": "string",
            "pattern": f"^({re.escape(SORNA_BASE)}|{re.escape(BACKENDAI_BASE)})[a-z-]+$",
            "examples": [BACKENDAI_BASE + "invalid-api-params"],
        },
        "title": {
            "type": "string",
            "examples": ["Missing or invalid API parameters. (lang: required, a string)"],
        },
    },
}

VERSION = _object(version={"type": "string", "pattern": r"^v\d+\.\d{8}$"})
AUTHORIZED = _object(
    authorized={"const": "yes"},
    echo={"description": "the request's echo, or null"},
)
LANGUAGES = _object(
    languages={
        "type": "array",
        "items": _object(
            lang=_STRING,
            aliases={"type": "array", "items": _STRING},
            available=_BOOLEAN,
            version={"type": ["string", "null"]},
            missing={"type": "array", "items": _STRING, "description": "commands not found"},
            install={"type": ["string", "null"], "description": "what would install them"},
            queryMode={"enum": ["repl", "program"]},
            batchDefaults=_object(build=_BOOLEAN, exec=_BOOLEAN),
            warm={**_COUNT, "description": "kernels of it waiting in the warm pool"},
        ),
    }
)

KERNEL_ID = {
    "type": "string",
    "pattern": "^[A-Za-z0-9_-]{22}$",
    "description": "a kernel's id (it may start with '-')",
}
KERNEL_CREATED = _object(
    kernelId=KERNEL_ID,
    created={"type": "boolean", "description": "false: the token's kernel already lived"},
)
KERNEL_INFO = {
    **_object(
        lang=_STRING,
        age={**_NUMBER, "description": "ms"},
        queryTimeout={**_COUNT, "description": "the exec timeout, ms"},
        idleTimeout={**_COUNT, "description": "ms"},
        memoryLimit={**_COUNT, "description": "KB"},
        maxCpuCredit={**_COUNT, "description": "ms"},
        numQueriesExecuted=_COUNT,
        idle={**_NUMBER, "description": "ms since the last execute call"},
        memoryUsed={**_COUNT, "description": "the peak, KB (as v2 reported it)"},
        memoryCurrent={**_COUNT, "description": "KB"},
        cpuCreditUsed={**_NUMBER, "description": "CPU time, ms"},
    ),
    "description": "The flat DOC-v2 info object (spec §5.2).",
}

_CONSOLE_ITEM = {
    "type": "array",
    "description": '["stdout" | "stderr" | "html", text] or ["media", [mime type, data]]',
    "items": {"type": ["string", "array"]},
    "minItems": 2,
    "maxItems": 2,
}
RUN_RESULT = {
    **_object(
        required=False,
        status={
            "enum": [
                "continued",
                "waiting-input",
                "build-finished",
                "clean-finished",
                "finished",
                "exec-timeout",
            ]
        },
        console={"type": "array", "items": _CONSOLE_ITEM},
        options={"type": ["object", "null"], "description": "waiting-input: is_password"},
        files={"type": "array", "maxItems": 0},
        exitCode={"type": ["integer", "null"], "description": "[v3]"},
        runId={"type": "string", "description": "[v3] when the request named a run"},
    ),
    "required": ["status", "console", "options", "files", "exitCode"],
}
COMPLETION = _object(status={"const": "finished"}, completions={"type": "array", "items": _STRING})
EXECUTE_RESULT = _object(result={"anyOf": [RUN_RESULT, COMPLETION]})
COMPLETE_RESULT = _object(result=COMPLETION)
KERNEL_FILES = _object(
    files={"type": "string", "description": "a JSON-encoded list of the entries"},
    errors={"type": "string"},
    abspath={"type": ["string", "null"]},
)

FOLDER_CREATED = _object(id=_STRING, name=_STRING)
FOLDER_CREATED_V2 = _object(folderId=_STRING, id=_STRING, name=_STRING)
_OWNED = {"is_owner": {"const": True}, "permission": {"const": "rw"}}
FOLDER_LIST = {
    "type": "array",
    "items": _object(id=_STRING, name=_STRING, **_OWNED),
}
FOLDER_INFO = _object(
    name=_STRING,
    id=_STRING,
    numFiles=_COUNT,
    size={**_COUNT, "description": "bytes used"},
    created={"type": "string", "format": "date-time"},
    **_OWNED,
)
FOLDER_FILES = _object(files={"type": "string", "description": "a JSON-encoded list"})
EMPTY = {"type": "object", "maxProperties": 0}

OPENAPI = {
    "type": "object",
    "required": ["openapi", "info", "paths"],
    "description": "This document.",
}
