"""A kernel's limits as a v2 create asks for them, checked against the server's own.

Clients send them in `limits` (v2) or `resourceLimits` (v1), in the units of
DOC-v2: `maxMem` in KB, the timeouts and `maxCpuCredit` in ms. A field that is
absent, null or 0 takes the server's default; one above the server's maximum
is a 406 whose title names the field and the maximum (DOC-v2's promise, which
no Sorna release kept). The least a create may ask for is what the server's own
settings may be set to (`least`): request_schemas says so, and refuses less.
"""

from __future__ import annotations

import dataclasses

from ...engine.limits import KernelLimits
from ...engine.settings import LimitSettings
from .problems import Problem

# request field -> (KernelLimits field, its unit in bytes or ms, the unit's name). The
# server's default and maximum are the `[limits]` settings default_<field> and max_<field>.
# request_schemas.CREATE_KERNEL's `limits` has these fields.
FIELDS: dict[str, tuple[str, int, str]] = {
    "maxMem": ("memory_bytes", 1024, "KB"),
    "execTimeout": ("exec_timeout_ms", 1, "ms"),
    "timeout": ("exec_timeout_ms", 1, "ms"),
    "queryTimeout": ("exec_timeout_ms", 1, "ms"),
    "idleTimeout": ("idle_timeout_ms", 1, "ms"),
    "maxCpuCredit": ("cpu_credit_ms", 1, "ms"),
}


def least(target: str, unit: int) -> int:
    """The least value of a limit a create may ask for, in the request's unit: the
    minimum of the `[limits]` default_<target> setting (16 MiB of memory: a kernel
    given less could not start, and its create failed with a 500)."""
    setting = next(f for f in dataclasses.fields(LimitSettings) if f.name == f"default_{target}")
    return -(-int(setting.metadata.get("minimum") or 0) // unit)  # rounded up


def requested(data: dict, config: LimitSettings) -> KernelLimits:
    """The limits a create body (valid as request_schemas.CREATE_KERNEL says) asks for,
    defaults filled in; 406 past a maximum."""
    values: dict[str, int] = {}
    for where in ("resourceLimits", "limits"):  # v2's name wins when both are sent
        for name, number in (data.get(where) or {}).items():
            if not number:  # null or 0: the default
                continue
            value = int(number)  # JSON Schema's integers include 5.0
            target, unit, unit_name = FIELDS[name]
            maximum = getattr(config, f"max_{target}")
            if value * unit > maximum:
                raise Problem(
                    "not-acceptable",
                    f"{where}.{name}: {value} {unit_name} asked, at most {maximum // unit} "
                    f"{unit_name} on this server",
                )
            values[target] = value * unit
    fields = ("memory_bytes", "exec_timeout_ms", "idle_timeout_ms", "cpu_credit_ms")
    return KernelLimits(**{f: values.get(f, getattr(config, f"default_{f}")) for f in fields})
