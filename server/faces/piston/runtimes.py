"""The runtimes the Piston face serves: Piston's language names, aliases and stage
commands (its packages' compile and run scripts), over the kernel runtimes of our
own language table, with the versions installed here.

A stage is a shell command run in /home/work with the submission's files there:
`{files}` is the utf8 files' names (the main one first), `{main}` the main file,
`{args}` the request's args, all quoted. Piston's scripts get the files as "$@";
their quirks are kept (C and C++ compile every utf8 file after renaming it to
end in .c / .cpp; Java runs the main file with the single-file source launcher).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sandbox.languages import resolve as resolve_kernel
from sandbox.languages import version_output

from .semver import parse_version, satisfies


@dataclass(frozen=True)
class Runtime:
    language: str  # Piston's name
    aliases: tuple[str, ...]
    kernel: str  # the row of sandbox/languages.py whose kernel runs it
    version_command: tuple[str, ...]
    compile: str  # "": no compile stage
    run: str
    provider: str = ""  # Piston's "runtime" (the package that provides it), if any
    python: bool = False  # its run may be a fork of the kernel's python3
    env: tuple[tuple[str, str], ...] = ()  # beside PATH, LANG and HOME

    def installed_version(self) -> str | None:
        """The first x.y.z the version command prints, or None if it does not run."""
        text = version_output(self.version_command)
        found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
        if not found:
            return None
        return f"{found[1]}.{found[2]}.{found[3] or 0}"


RUNTIMES: tuple[Runtime, ...] = (
    Runtime("python", ("py", "py3", "python3"), "python3", ("python3", "--version"),
            "", "exec python3 {main} {args}", python=True),
    Runtime("c", ("gcc",), "c", ("gcc", "-dumpfullversion"),
            "for f in {files}; do mv -- \"$f\" \"$f.c\"; done; gcc -std=c11 *.c -lm",
            "exec ./a.out {args}", provider="gcc"),
    Runtime("c++", ("cpp", "g++"), "cpp", ("g++", "-dumpfullversion"),
            "for f in {files}; do mv -- \"$f\" \"$f.cpp\"; done; g++ -std=c++17 *.cpp",
            "exec ./a.out {args}", provider="gcc"),
    Runtime("java", (), "java", ("java", "-version"),
            "", "mv -- {main} {main}.java && exec java {main}.java {args}"),
    Runtime("javascript", ("node-javascript", "node-js", "js"), "nodejs", ("node", "--version"),
            "", "exec node {main} {args}", provider="node"),
    Runtime("rust", ("rs",), "rust", ("rustc", "--version"),
            # Debian's std carries debug info: a binary with it passes max_file_size
            "rustc -C strip=debuginfo -o binary {files}", "exec ./binary {args}"),
    Runtime("go", ("golang",), "go", ("go", "version"),
            "", "mv -- {main} {main}.go && exec go run *.go {args}",
            env=(("GOCACHE", "/tmp/.cache/go-build"), ("GOPATH", "/tmp/go"), ("GOPROXY", "off"))),
    Runtime("bash", ("sh",), "bash", ("bash", "--version"), "", "exec bash {main} {args}"),
    Runtime("php", (), "php", ("php", "--version"), "", "exec php {main} {args}"),
    Runtime("pascal", ("freepascal", "pp", "pas"), "pascal", ("fpc", "-iV"),
            "fpc -vew -Fe.fpc.err -obinary {main} >/dev/null || {{ cat .fpc.err >&2; exit 1; }}",
            "exec ./binary {args}"),
)  # fmt: skip


@dataclass(frozen=True)
class Installed:
    runtime: Runtime
    version: str

    def listing(self) -> dict:
        """Its entry in GET /api/v2/runtimes."""
        entry: dict = {"language": self.runtime.language, "version": self.version,
                       "aliases": list(self.runtime.aliases)}  # fmt: skip
        if self.runtime.provider:
            entry["runtime"] = self.runtime.provider
        return entry


def installed() -> list[Installed]:
    """The runtimes whose kernel language and commands this host has. Slow (it runs
    each runtime): once."""
    found = []
    for runtime in RUNTIMES:
        kernel = resolve_kernel(runtime.kernel)
        if kernel is None or kernel.missing():
            continue
        version = runtime.installed_version()
        if version is not None:
            found.append(Installed(runtime, version))
    return found


def select(runtimes: list[Installed], language: str, selector: str) -> Installed | None:
    """The highest installed version of `language` (a name or alias, as given: Piston
    matches them exactly) within `selector`."""
    matching = [
        r for r in runtimes
        if language in (r.runtime.language, *r.runtime.aliases) and satisfies(r.version, selector)
    ]  # fmt: skip
    return max(matching, key=lambda r: parse_version(r.version), default=None)
