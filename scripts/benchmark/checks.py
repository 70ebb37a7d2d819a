"""A failed check stops the run: every figure is of answers that were checked."""

from __future__ import annotations


def expect(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(what)
