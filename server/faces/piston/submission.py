"""An execute request (or a connect socket's init) read and checked as Piston
checks it (docs/reference/piston.md §3): the same messages in the same order,
each limit defaulting to the face's setting and refused above it.

Where Piston answers 500 with an empty body (a file path escaping the
submission's directory) or 400 with `{}` (a TypeError on a wrong type), this face
answers 400 with a message naming the field.
"""

from __future__ import annotations

import base64
import binascii
import math
import posixpath
from dataclasses import dataclass

from .runtimes import Installed, select
from .settings import PistonSettings

ENCODINGS = ("utf8", "base64", "hex")


class PistonError(Exception):
    """A refused request: the HTTP status and Piston's message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class StageLimits:
    timeout_ms: float  # wall
    cpu_time_ms: float
    memory_bytes: int  # 0: the kernel's default


@dataclass(frozen=True)
class Submission:
    installed: Installed
    files: tuple[tuple[str, bytes], ...]
    sources: tuple[str, ...]  # the utf8 files' names: the main one first
    args: tuple[str, ...]
    stdin: str
    compile: StageLimits
    run: StageLimits

    @property
    def main(self) -> str:
        return self.sources[0]


def _limit(data: dict, name: str, default: float, most: float | None) -> float:
    value = data.get(name)
    if value is None or value == 0:  # Piston: 0 skips the check and means none
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PistonError(f"{name} must be a number")
    if value < 0:
        return default
    if most is not None and value > most:
        raise PistonError(f"{name} cannot exceed the configured limit of {most:g}")
    return value


def _file(i: int, entry: object) -> tuple[str, bytes, bool]:
    if not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
        raise PistonError(f"files[{i}].content is required as a string")
    name = entry.get("name")
    if name is None:
        name = f"file{i}.code"
    if not isinstance(name, str) or not name or "\0" in name:
        raise PistonError(f"files[{i}].name must be a non-empty string")
    relative = posixpath.normpath(name.lstrip("/"))
    if relative.startswith("..") or relative == "." or len(relative.encode()) > 255:
        raise PistonError(f'File path "{name}" tries to escape parent directory: {relative}')
    encoding = entry.get("encoding")
    content = entry["content"]
    try:
        if encoding == "base64":
            data = base64.b64decode(content, validate=True)
        elif encoding == "hex":
            data = bytes.fromhex(content)
        else:  # Piston: anything else is utf8
            data = content.encode()
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise PistonError(f"files[{i}].content is not valid {encoding or 'utf8'}") from None
    return relative, data, encoding in (None, "utf8")


def parse(data: object, runtimes: list[Installed], settings: PistonSettings,
          most_memory: int) -> Submission:  # fmt: skip
    """The submission of a request body (a JSON value); PistonError in Piston's order."""
    if not isinstance(data, dict):
        data = {}
    language, version, files = data.get("language"), data.get("version"), data.get("files")
    if not isinstance(language, str) or not language:
        raise PistonError("language is required as a string")
    if not isinstance(version, str) or not version:
        raise PistonError("version is required as a string")
    if not isinstance(files, list):
        raise PistonError("files is required as an array")
    read = [_file(i, entry) for i, entry in enumerate(files)]
    installed = select(runtimes, language, version)
    if installed is None:
        raise PistonError(f"{language}-{version} runtime is unknown")
    sources = tuple(name for name, _, utf8 in read if utf8)
    if not sources:
        raise PistonError("files must include at least one utf8 encoded file")
    configured = {  # each the default and the most, as Piston's configuration is
        "compile_timeout": settings.compile_timeout_ms,
        "run_timeout": settings.run_timeout_ms,
        "compile_cpu_time": settings.compile_cpu_time_ms,
        "run_cpu_time": settings.run_cpu_time_ms,
    }
    limits = {  # checked in Piston's order
        "compile_memory_limit": _limit(data, "compile_memory_limit", 0, most_memory),
        "run_memory_limit": _limit(data, "run_memory_limit", 0, most_memory),
    }
    limits |= {name: _limit(data, name, value, value) for name, value in configured.items()}
    args = data.get("args", [])
    if args is None:
        args = []
    if not isinstance(args, list) or not all(isinstance(a, str) and "\0" not in a for a in args):
        raise PistonError("args must be an array of strings")
    stdin = data.get("stdin", "")
    if stdin is None:
        stdin = ""
    if not isinstance(stdin, str):
        raise PistonError("stdin must be a string")
    if not stdin.endswith("\n"):
        stdin += "\n"  # as Piston does
    return Submission(
        installed=installed,
        files=tuple((name, content) for name, content, _ in read),
        sources=sources,
        args=tuple(args),
        stdin=stdin,
        compile=StageLimits(limits["compile_timeout"], limits["compile_cpu_time"],
                            int(limits["compile_memory_limit"])),
        run=StageLimits(limits["run_timeout"], limits["run_cpu_time"],
                        int(limits["run_memory_limit"])),
    )  # fmt: skip
