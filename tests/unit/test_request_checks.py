"""The compiled request checks (fastjsonschema) against the reference (jsonschema):
for every request shape, bodies built from values of every JSON type, edge cases
included, the compiled check never accepts a body the reference refuses, and
`validated` answers as the reference alone would. Nor does it change the body."""

from __future__ import annotations

import copy
import itertools

import fastjsonschema
import pytest

from server.faces.v2 import request_schemas
from server.faces.v2.problems import Problem
from server.faces.v2.request_schemas import REGISTRY, Shape, validated

VALUES: list[object] = [
    None, True, False, 0, 1, -1, 0.0, 1.0, 2.5, -0.5, 10**12, 2**70,
    "", "a", "a\n", "python3", "python", "abcd", "abc", "a" * 81, "my-session-0001",
    "my-session-0001\n", "name", "name\n", "../x", "x/y", "query", "batch", "Query",
    [], ["a"], [1], [None], ["a", "b:c"], {}, {"x": 1}, {"mounts": ["a"]}, {"mounts": 1},
    {"maxMem": 1}, {"maxMem": 0}, {"maxMem": False}, {"maxMem": 0.0}, {"timeout": True},
]  # fmt: skip


def _properties(shape: Shape) -> dict[str, object]:
    return shape.schema.get("properties", {})


def _bodies(shape: Shape) -> list[object]:
    """Not objects; each field alone with each value; the required fields with good
    values and each field varied; an unknown field; nested objects varied."""
    names = list(_properties(shape))
    found: list[object] = [None, [], "x", 1, True, {}]
    found += [{name: value} for name in names for value in VALUES]
    base = _good(shape)
    found += [{**base, name: value} for name in names for value in VALUES]
    found += [{**base, "unknown": 1}, base]
    for name, value in itertools.product(names, VALUES):
        if isinstance(value, dict):
            found.append({**base, name: {**value, "extra": None}})
    return found


def _good(shape: Shape) -> dict[str, object]:
    """For each required field, the first of VALUES the reference finds nothing
    wrong with there."""
    body: dict[str, object] = {}
    for name in shape.schema.get("required", []):
        body[name] = next(
            value
            for value in VALUES
            if not any(
                list(e.absolute_path)[:1] == [name]
                for e in shape.validator.iter_errors({**body, name: value})
            )
        )
    return body


def _fast_ok(shape: Shape, body: object) -> bool:
    try:
        shape.accepts(body)
        return True
    except fastjsonschema.JsonSchemaException:
        return False


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_the_compiled_check_accepts_nothing_the_reference_refuses(name):
    shape = REGISTRY[name]
    accepted = refused = 0
    for body in _bodies(shape):
        reference = shape.validator.is_valid(body)
        before = copy.deepcopy(body)
        if _fast_ok(shape, body):
            assert reference, (name, body)
        assert body == before  # nothing written into the request (no defaults)
        accepted += reference
        refused += not reference
    assert refused > 0  # the cases reach both answers
    assert accepted > 0 or not _properties(shape)


def test_validated_answers_as_the_reference():
    shape = request_schemas.CREATE_KERNEL
    good = {"lang": "python3", "clientSessionToken": "my-session-0001"}
    assert validated(good, shape) is good
    for body, message in [
        ({"lang": "python3"}, "clientSessionToken: required"),
        ({**good, "clientSessionToken": "my-session-0001\n"}, "clientSessionToken: required, 4-80"),
        ({**good, "limits": {"maxMem": False}}, "limits.maxMem: expected null or 0"),
        ({**good, "extra": 1}, "body: unknown field 'extra'"),
    ]:
        with pytest.raises(Problem) as caught:
            validated(body, shape)
        assert caught.value.kind == "invalid-api-params"
        assert message in str(caught.value.detail), (body, caught.value.detail)
