"""A spare's request unpickles with the four classes it holds and nothing else: the
zygote has dropped the server's modules from sys.modules, and a class found by
importing would be a host module read again."""

from __future__ import annotations

import collections
import io
import pickle

import pytest

from sandbox import privileges
from sandbox.kernel_inputs import Payload
from sandbox.spare import _RequestUnpickler
from sandbox.spec import Bind, KernelSpec


def test_a_request_round_trips():
    spec = KernelSpec(
        memory_bytes=1 << 20, pids=8, cpu_quota=None, tmp_bytes=1, work_bytes=2, nofile=3,
        fsize_bytes=4, binds=(Bind("/usr", "/usr"),), env={"A": "b"},
    )  # fmt: skip
    request = (spec, "/w", Payload(uid=1000), privileges.Rlimits(nofile=3), b"frame")
    assert _RequestUnpickler(io.BytesIO(pickle.dumps(request))).load() == request


def test_any_other_class_is_refused():
    with pytest.raises(pickle.UnpicklingError, match="collections.OrderedDict"):
        _RequestUnpickler(io.BytesIO(pickle.dumps(collections.OrderedDict()))).load()
