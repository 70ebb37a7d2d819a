"""A kernel's limits: what it may use and how long it may live, once a face has
turned its client's request into them (v2: `limits` in KB and ms)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KernelLimits:
    memory_bytes: int
    exec_timeout_ms: int  # one run; then exec-timeout and the kernel is destroyed
    idle_timeout_ms: int  # no execute call for this long: destroyed
    cpu_credit_ms: int  # CPU time over the kernel's life: destroyed when used up
