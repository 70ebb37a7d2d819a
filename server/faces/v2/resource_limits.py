"""A kernel's limits as a v2 create asks for them, checked against the server's own.

Clients send them in `limits` (v2) or `resourceLimits` (v1), in the units of
DOC-v2: `maxMem` in KB, the timeouts and `maxCpuCredit` in ms. A field that is
absent, null or 0 takes the server's default; one above the server's maximum
is a 406 whose title names the field and the maximum (DOC-v2's promise, which
no Sorna release kept).
"""

from __future__ import annotations

from ...engine.limits import KernelLimits
from ...engine.settings import LimitSettings
from .problems import Problem, bad_params

# request field -> (KernelLimits field, its unit in bytes or ms, the unit's name). The
# server's default and maximum are the `[limits]` settings default_<field> and max_<field>.
_FIELDS: dict[str, tuple[str, int, str]] = {
    "maxMem": ("memory_bytes", 1024, "KB"),
    "execTimeout": ("exec_timeout_ms", 1, "ms"),
    "timeout": ("exec_timeout_ms", 1, "ms"),
    "queryTimeout": ("exec_timeout_ms", 1, "ms"),
    "idleTimeout": ("idle_timeout_ms", 1, "ms"),
    "maxCpuCredit": ("cpu_credit_ms", 1, "ms"),
}


def requested(data: dict, config: LimitSettings) -> KernelLimits:
    """The limits a create body asks for, defaults filled in; 400 or 406 if wrong."""
    values: dict[str, int] = {}
    for where in ("resourceLimits", "limits"):  # v2's name wins when both are sent
        block = data.get(where)
        if block is None:
            continue
        if not isinstance(block, dict):
            raise bad_params(f"{where}: expected an object")
        for name, value in block.items():
            if name not in _FIELDS:
                raise bad_params(f"{where}: unknown field {name!r}")
            if value is None or value == 0:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise bad_params(f"{where}.{name}: expected a non-negative integer")
            target, unit, unit_name = _FIELDS[name]
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
