"""The languages the Jobe face serves: how Jobe builds and runs each, over the
kernel runtimes of our own language table (sandbox/languages.py).

A row holds Jobe's facts for one `language_id` (docs/reference/jobe.md §2-4):
its default source file name, its compile and run commands, its default
parameters, and how Jobe asks its version. Commands are shell templates run in
/home/work: `{src}`, `{exe}` and `{main_class}` are our values (quoted here),
while `{compileargs}`, `{linkargs}`, `{interpreterargs}` and `{runargs}` are the
client's lists joined with spaces and NOT quoted, as Jobe passes them to `sh -c`
(its test suite depends on it, and it is the user's own program that the shell
then runs in the sandbox). Runs start with `exec` so a signal that kills the
program is the step's own status, not a shell's exit code.

Octave is not served: Debian's octave pulls in about 125 packages and 300 MB for
one language few CodeRunner questions use. Python 2 and MATLAB are gone from
Debian.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sandbox.languages import resolve as resolve_kernel
from sandbox.languages import version_output


@dataclass(frozen=True)
class JobeLanguage:
    id: str  # Jobe's language_id
    kernel: str  # the row of sandbox/languages.py whose kernel runs it
    source: str  # the source file's name when the run_spec gives none
    compile: str  # "": nothing to compile (a syntax error shows when it runs)
    run: str
    version: tuple[str, ...]  # argv that prints the version
    version_re: str  # its first group is the version Jobe reports
    params: dict[str, object] = field(default_factory=dict)  # over DEFAULT_PARAMS
    # cmpinfo is the compile's stderr; with `compile_stdout`, when both streams
    # have text, stdout, a literal backslash-n, stderr (Jobe's python3 and php)
    compile_stdout: bool = False
    # Jobe's Java filter: a tab after a newline in stderr becomes 8 spaces
    expand_stderr_tabs: bool = False
    # python3's steps may run as forks of the kernel's python3 (run.py says when)
    python_fork: bool = False

    def installed_version(self) -> str | None:
        """What Jobe reports as the version, or None if the runtime does not run."""
        text = version_output(self.version)
        if text is None:
            return None
        found = re.search(self.version_re, text)
        return found.group(1) if found else "Unknown"


# Jobe's LanguageTask::$default_params (numbers in MB and seconds)
DEFAULT_PARAMS: dict[str, object] = {
    "disklimit": 20,
    "streamsize": 2,
    "cputime": 5,
    "memorylimit": 400,
    "numprocs": 30,
    "compileargs": [],
    "linkargs": [],
    "interpreterargs": [],
    "runargs": [],
}
# Jobe's min_params_compile: a compile gets at least these (memorylimit 0 stays 0)
COMPILE_MINIMUM = {"disklimit": 20, "cputime": 2, "memorylimit": 500, "numprocs": 5}

_GCC_VERSION = r"gcc \(.*\) ([0-9.]*)"
_RUN_EXE = "exec ./{exe} {runargs}"

LANGUAGES: tuple[JobeLanguage, ...] = (
    JobeLanguage(
        "c", "c", "prog.c",
        compile="gcc {compileargs} -o {exe} {src} {linkargs}",
        run=_RUN_EXE,
        version=("gcc", "--version"), version_re=_GCC_VERSION,
        params={"compileargs": ["-Wall", "-Werror", "-std=c99", "-x c"]},
    ),
    JobeLanguage(
        "cpp", "cpp", "prog.cpp",
        compile="g++ {compileargs} -o {exe} {src} {linkargs}",
        run=_RUN_EXE,
        version=("gcc", "--version"), version_re=_GCC_VERSION,
        params={"compileargs": ["-Wall", "-Werror"]},
    ),
    JobeLanguage(
        "java", "java", "prog.java",
        compile="javac {compileargs} {src}",
        run="exec java {interpreterargs} {main_class} {runargs}",
        version=("java", "-version"), version_re=r'version "?([0-9._]*)',
        # the JVM reserves far more address space than it uses: no RLIMIT_AS (the
        # kernel's memory limit still holds), and threads count as processes
        params={"interpreterargs": ["-Xrs", "-Xss8m", "-Xmx200m"], "memorylimit": 0,
                "numprocs": 256},
        expand_stderr_tabs=True,
    ),
    JobeLanguage(
        "nodejs", "nodejs", "prog.js",
        compile="",
        run="exec nodejs {interpreterargs} {src} {runargs}",
        version=("nodejs", "--version"), version_re=r"v([0-9._]*)",
        params={"interpreterargs": ["--use_strict"]},
    ),
    JobeLanguage(
        "pascal", "pascal", "prog.pas",
        # fpc writes its messages to stdout, and errors to the -Fe file
        compile=(
            "fpc {compileargs} -Fe{src}.err -o{exe} {src} >/dev/null"
            " || {{ cat {src}.err >&2; [ -s {src}.err ] || echo 'fpc failed' >&2; exit 1; }}"
        ),
        run=_RUN_EXE,
        version=("fpc", "-iV"), version_re=r"([0-9._]*)",
        params={"compileargs": ["-vew", "-Se"]},
    ),
    JobeLanguage(
        "php", "php", "prog.php",
        compile="php -l {src}",
        run="exec php {interpreterargs} {src} {runargs}",
        version=("php", "--version"), version_re=r"PHP ([0-9._]*)",
        params={"interpreterargs": ["--no-php-ini"]},
        compile_stdout=True,
    ),
    JobeLanguage(
        "python3", "python3", "prog.py",
        compile="python3 -m py_compile {src}",
        run="exec python3 {interpreterargs} {src} {runargs}",
        version=("python3", "--version"), version_re=r"Python ([0-9._]*)",
        params={"interpreterargs": ["-BE"], "memorylimit": 1000},
        compile_stdout=True,
        python_fork=True,
    ),
)  # fmt: skip

BY_ID = {lang.id: lang for lang in LANGUAGES}


def installed() -> dict[str, str]:
    """{language_id: version} of the rows whose runtime runs here and whose kernel
    language our table has, in Jobe's order. Slow (it runs each runtime): once."""
    return {
        lang.id: version
        for lang in LANGUAGES
        if resolve_kernel(lang.kernel) is not None
        and (version := lang.installed_version()) is not None
    }
