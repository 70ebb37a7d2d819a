"""KernelSpec validation: every bad field is named."""

from __future__ import annotations

import pytest
from helpers.harness import kernel_spec

from sandbox.spec import Bind, KernelSpec, SpecError, validate_kernel_id


def test_round_trip_through_json():
    spec = kernel_spec(
        memory_bytes=1 << 20, binds=(Bind("/a", "/b", readonly=False),), env={"X": "1"}
    )
    assert KernelSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"memory_bytes": -1}, "memory_bytes"),
        ({"memory_bytes": "1G"}, "memory_bytes"),
        ({"pids": True}, "pids"),
        ({"cpu_quota": 0}, "cpu_quota"),
        ({"tmp_bytes": None}, "tmp_bytes"),
        ({"env": {"A=B": "x"}}, "env"),
        ({"env": ["x"]}, "env"),
        ({"binds": [{"src": "rel", "dst": "/x"}]}, "binds"),
        ({"binds": [{"src": "/a", "dst": "/x/../etc"}]}, "binds"),
        ({"binds": [{"src": "/a"}]}, "binds"),
        ({"binds": "nope"}, "binds"),
        ({"surprise": 1}, "unknown fields"),
    ],
)
def test_bad_fields_are_named(data, field):
    with pytest.raises(SpecError, match=field):
        KernelSpec.from_json({**kernel_spec().to_json(), **data})


def test_missing_fields_are_named():
    data = kernel_spec().to_json()
    del data["pids"], data["nofile"]
    with pytest.raises(SpecError, match=r"missing fields \['nofile', 'pids'\]"):
        KernelSpec.from_json(data)


def test_not_an_object():
    with pytest.raises(SpecError):
        KernelSpec.from_json([1, 2])


@pytest.mark.parametrize(("text", "bind"), [
    ("/a:/b", Bind("/a", "/b", readonly=False)),
    ("/a:/b:ro", Bind("/a", "/b", readonly=True)),
    ("/a:/b:rw", Bind("/a", "/b", readonly=False)),
])  # fmt: skip
def test_bind_parse(text, bind):
    assert Bind.parse(text) == bind


@pytest.mark.parametrize("text", ["/a", "/a:/b:rx", "/a:/b:ro:x"])
def test_bind_parse_rejects(text):
    with pytest.raises(SpecError):
        Bind.parse(text)


@pytest.mark.parametrize("bad", ["", "a/b", "../x", "a" * 65, None, 3, "a b"])
def test_kernel_id_alphabet(bad):
    with pytest.raises(SpecError):
        validate_kernel_id(bad)
