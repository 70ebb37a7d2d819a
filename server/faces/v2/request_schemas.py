"""What v2 requests may carry: the JSON bodies and query parameters of every HTTP
operation as JSON Schema 2020-12, and the one check handlers run them through.

These objects are both the validation and the documentation: `takes` checks a
request against them before the handler runs, and /v2/openapi.json (openapi.py)
publishes the very same dicts, so the document cannot say one thing while the
server checks another (tests/api/test_openapi_api.py compares them).

A failure is a 400 `invalid-api-params` whose title names the field, as
"field: why" (spec §4.2: context in the title). `why` is the schema's own
`x-error` where it has one (the wording clients saw before the schemas), or
else said from the failed keyword. What a schema cannot say (limits from the
configuration, paths inside a kernel, folders that exist) the handlers and the
engine check.

Each schema is also compiled to Python once (fastjsonschema), and a request is
first checked with that: jsonschema's validator interprets the schema anew for
every request, 142k of the server's 1,204k instructions for a query
(callgrind). jsonschema stays the reference: it explains every rejection (the
messages above), and what the compiled check refuses but jsonschema accepts is
accepted. The compiled check never accepts what jsonschema refuses
(tests/unit/test_request_checks.py tries every shape with values of every type).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match
from starlette.responses import Response

from ...engine.folders import NAME_RE
from ..http import Caller
from . import resource_limits
from .problems import bad_params

Schema = dict[str, Any]


def _python_pattern(pattern: str) -> str:
    """`pattern` as JSON Schema means it (ECMA-262): `$` ends the string. Python's `$`
    also matches before a final newline, which would let "name\n" through."""
    return pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern


def _pattern(validator: Any, pattern: str, instance: object, schema: Schema) -> Any:
    if isinstance(instance, str) and not re.search(_python_pattern(pattern), instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


Validator = validators.extend(Draft202012Validator, {"pattern": _pattern})

# what the compiled check leaves out: words for people, and `default`, which
# fastjsonschema would write into the request
_ANNOTATIONS = {"description", "examples", "x-error", "default"}


def _for_compiler(schema: object) -> object:
    """The schema as fastjsonschema (draft 7, which our keywords mean the same in)
    is to read it: annotations dropped. (It reads a pattern's `$` as ECMA-262 does.)"""
    if isinstance(schema, list):
        return [_for_compiler(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {k: _for_compiler(v) for k, v in schema.items() if k not in _ANNOTATIONS}


@dataclass(eq=False)
class Shape:
    """One request shape: its name in the document's components and its schema."""

    name: str
    schema: Schema
    validator: Any = field(init=False, repr=False)
    accepts: Callable[[object], object] = field(init=False, repr=False)  # raises if not

    def __post_init__(self) -> None:
        Validator.check_schema(self.schema)  # a bad schema fails at import
        self.validator = Validator(self.schema)
        draft7 = {
            **_for_compiler(self.schema),
            "$schema": "http://json-schema.org/draft-07/schema#",
        }
        self.accepts = fastjsonschema.compile(draft7)


REGISTRY: dict[str, Shape] = {}  # every shape by name: what the document publishes


def _shape(name: str, schema: Schema) -> Shape:
    shape = REGISTRY[name] = Shape(name, schema)
    return shape


def _text(error: str, **schema: Any) -> Schema:
    """A string field whose failures all read "<field>: <error>"."""
    return {"type": "string", **schema, "x-error": error}


# -- kernels (spec §5, §6) ------------------------------------------------------------

MODES = ("batch", "complete", "continue", "input", "query")
_MODE = {"enum": list(MODES), "x-error": f"required, one of {', '.join(MODES)}"}
# v2 allowed 8-80 characters, v3 4-64 word characters: accept either, keep it printable.
TOKEN_PATTERN = "^[A-Za-z0-9_.:-]{4,80}$"


def _limit(target: str, unit: int, unit_name: str) -> Schema:
    """One field of `limits`: null or 0 for the default, or at least the least."""
    least = resource_limits.least(target, unit)
    description = f"in {unit_name} ({target})"
    if least <= 1:
        return {
            "type": ["integer", "null"],
            "minimum": 0,
            "description": description,
            "x-error": "expected a non-negative integer",
        }
    return {
        "anyOf": [{"type": "null"}, {"const": 0}, {"type": "integer", "minimum": least}],
        "description": description,
        "x-error": f"expected null or 0 (the default), or at least {least} {unit_name}",
    }


_LIMITS = {
    "type": ["object", "null"],
    "description": "Absent, null or 0: the server's default. More than the server's "
    "maximum is a 406 naming the field and the maximum.",
    "properties": {
        name: _limit(target, unit, unit_name)
        for name, (target, unit, unit_name) in resource_limits.FIELDS.items()
    },
    "additionalProperties": False,
    "x-error": "expected an object or null",
}
_MOUNTS = {
    "type": ["array", "null"],
    "items": {"type": "string"},
    "description": 'folders to mount under /home/work: "name" or "name:alias"',
    "x-error": "expected a list of folder names",
}

CREATE_KERNEL = _shape(
    "KernelCreateRequest",
    {
        "type": "object",
        "description": "Get or create: the same clientSessionToken names the same kernel.",
        "required": ["lang", "clientSessionToken"],
        "properties": {
            "lang": _text(
                "required, a string",
                minLength=1,
                description="a language or an alias (GET /v2/kernel/languages)",
                examples=["python3"],
            ),
            "clientSessionToken": _text(
                "required, 4-80 characters of [A-Za-z0-9_.:-]",
                pattern=TOKEN_PATTERN,
                examples=["my-session-0001"],
            ),
            "limits": _LIMITS,
            "resourceLimits": {**_LIMITS, "description": "v1's name of limits"},
            "mounts": _MOUNTS,
            "config": {
                "type": ["object", "null"],
                "properties": {"mounts": _MOUNTS},
                "description": "[v3] its mounts replace the top-level ones",
                "x-error": "expected an object or null",
            },
            "tag": {"description": "accepted and ignored, as the original server did"},
        },
        "additionalProperties": False,
    },
)

EXECUTE = _shape(
    "ExecuteRequest",
    {
        "type": "object",
        "description": "One call of a run (spec §6): query or batch starts one, continue "
        "and input go on with it, complete is the legacy spelling of /complete.",
        "properties": {
            "mode": _MODE,
            "type": {**_MODE, "description": "an older name of mode (mode wins)"},
            "code": {
                "type": ["string", "null"],
                "x-error": "expected a string",
                "description": "the code, the input line (mode input), or nothing",
            },
            "options": {
                "type": ["object", "null"],
                "x-error": "expected an object or null",
                "description": "batch mode: build, exec, clean commands",
            },
            "runId": {
                "type": ["string", "null"],
                "x-error": "expected a string or null",
                "description": "[v3] an explicit run; its id comes back in the result",
            },
        },
        "anyOf": [{"required": ["mode"]}, {"required": ["type"]}],
        "additionalProperties": False,
    },
)

COMPLETE = _shape(
    "CompleteRequest",
    {
        "type": "object",
        "properties": {
            "code": {"type": "string", "x-error": "expected a string"},
            "options": {"type": ["object", "null"], "x-error": "expected an object or null"},
        },
        "additionalProperties": False,
    },
)

AUTHORIZE = _shape(
    "AuthorizeRequest",
    {"type": "object", "properties": {"echo": {"description": "sent back as it came"}}},
)

# -- files, in a kernel and in a folder (spec §5.6, §5.9, §7.4) --------------------------

_PATH = {"type": "string", "x-error": "expected a path"}
_FILES = {
    "type": "array",
    "items": {"type": "string"},
    "minItems": 1,
    "x-error": "expected a non-empty list of paths",
    "description": "paths under /home/work; at most the server's max_download_files "
    "(max_upload_files for a delete)",
}

LIST_FILES = _shape(
    "ListFilesRequest",
    {
        "type": "object",
        "properties": {
            "path": {
                "type": ["string", "null"],
                "x-error": "expected a path",
                "description": "a directory under /home/work; absent, null or empty: itself",
            }
        },
    },
)
LIST_FILES_QUERY = _shape(
    "ListFilesQuery",
    {"type": "object", "properties": {"path": {**_PATH, "description": "as path in the body"}}},
)
DOWNLOAD = _shape(
    "DownloadRequest",
    {"type": "object", "required": ["files"], "properties": {"files": _FILES}},
)
DELETE_FILES = _shape(
    "DeleteFilesRequest",
    {
        "type": "object",
        "required": ["files"],
        "properties": {
            "files": _FILES,
            "recursive": {"type": "boolean", "default": False, "description": "directories too"},
        },
    },
)
MKDIR = _shape(
    "MkdirRequest",
    {"type": "object", "required": ["path"], "properties": {"path": _PATH}},
)
CREATE_FOLDER = _shape(
    "FolderCreateRequest",
    {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": _text(
                "1-64 letters, digits, '.', '_' or '-', starting and ending with a letter or digit",
                pattern=NAME_RE.pattern,
                examples=["data"],
            )
        },
        "additionalProperties": False,
    },
)

# -- the check ------------------------------------------------------------------------

_TYPE_NAMES = {
    "string": "a string",
    "object": "an object",
    "array": "a list",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _subschema(root: Schema, path: list) -> Schema:
    """The schema of the value at `path` in the instance (properties and items only)."""
    schema = root
    for step in path:
        if isinstance(step, int):
            schema = schema.get("items", {})
        else:
            schema = schema.get("properties", {}).get(step, {})
    return schema


def _why(error: ValidationError) -> str:
    """What is wrong, said from the keyword that failed (for schemas without x-error)."""
    keyword, value = error.validator, error.validator_value
    if keyword == "type":
        names = [value] if isinstance(value, str) else value
        return "expected " + " or ".join(_TYPE_NAMES.get(n, n) for n in names)
    if keyword == "enum":
        return "one of " + ", ".join(map(str, value))
    if keyword == "minItems":
        return f"expected at least {value} item{'s' * (value != 1)}"
    return error.message


def message(shape: Shape, error: ValidationError) -> str:
    """The problem's detail for the first failure: "field: why" (a nested field is
    dotted: limits.maxMem)."""
    while error.context:  # anyOf: what its first branch lacks ("mode" before "type")
        error = min(error.context, key=lambda e: [str(p) for p in e.relative_schema_path])
    path = list(error.absolute_path)
    if error.validator == "required":
        missing = next(n for n in error.validator_value if n not in error.instance)
        path.append(missing)
        schema = _subschema(shape.schema, path)
        return f"{'.'.join(map(str, path))}: {schema.get('x-error', 'required')}"
    where = ".".join(map(str, path)) or "body"
    if error.validator == "additionalProperties":
        known = error.schema.get("properties", {})
        extra = sorted(str(name) for name in error.instance if name not in known)
        return f"{where}: unknown field {extra[0]!r}"
    return f"{where}: {_subschema(shape.schema, path).get('x-error') or _why(error)}"


def validated(data: object, shape: Shape) -> dict:
    """`data` if it fits `shape`; else the 400 problem naming the first wrong field."""
    try:
        shape.accepts(data)
        return data  # type: ignore[return-value]  # the shape's root is an object
    except fastjsonschema.JsonSchemaException:
        pass  # the reference decides, and says why
    error = best_match(shape.validator.iter_errors(data))
    if error is not None:
        raise bad_params(message(shape, error))
    return data  # type: ignore[return-value]  # the shape's root is an object


Handler = Callable[[Caller], Awaitable[Response]]
BodyHandler = Callable[[Caller, dict], Awaitable[Response]]


def takes(
    body: Shape | None = None, query: Shape | None = None
) -> Callable[[BodyHandler], Handler]:
    """Declare the shapes a handler takes: its JSON body (handed to it validated; {}
    for an empty body) and its query parameters (left in the request, validated).
    The declaration is kept on the handler (`request_body`, `request_query`) for
    the document to publish."""

    def wrap(handler: BodyHandler) -> Handler:
        @functools.wraps(handler)
        async def checked(caller: Caller) -> Response:
            if query is not None:
                validated(dict(caller.request.query_params), query)
            data = validated(caller.json(), body) if body is not None else {}
            return await handler(caller, data)

        checked.request_body = body  # type: ignore[attr-defined]
        checked.request_query = query  # type: ignore[attr-defined]
        return checked

    return wrap
