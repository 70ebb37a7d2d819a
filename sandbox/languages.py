"""The language table: one row per kernel runtime, data rather than `if lang ==` chains.

This is the only place that knows language names. A row says:

* the canonical `lang`, its aliases (spec §8.2) and a `name:tag` form's name;
* which host commands the runtime needs (all under /usr, which kernels see),
  the Debian packages that provide them, and how to ask their version;
* the kernel environment it needs (caches in /tmp, not in the user's files);
* how a query runs: the python3 REPL, the persistent Node.js context, or a
  snippet written to a scratch file and run by a shell command (compiled
  languages, bash: each query is a whole program, nothing persists but files);
* what `"*"` means for the batch steps clean, build and exec (spec §8.4,
  KR-1.x): shell commands run by /bin/sh in /home/work.

Adding a language is adding a row (and installing its runtime on the host).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

# Where the host's runtimes must be for kernels to see them (mounts.HOST_PATHS).
HOST_SEARCH_PATH = "/usr/local/bin:/usr/bin:/bin"

# Line-buffered stdout and unbuffered stdin for C and C++ programs (coreutils'
# stdbuf, preloaded): output shows as it is printed, and a prompt printed
# without a newline is flushed by glibc before scanf reads.
_STDBUF_PATHS = ("/usr/libexec/coreutils/libstdbuf.so", "/usr/lib/coreutils/libstdbuf.so")
_STDBUF = next((p for p in _STDBUF_PATHS if os.path.exists(p)), None)
STDBUF_ENV: dict[str, str] = (
    {"LD_PRELOAD": _STDBUF, "_STDBUF_O": "L", "_STDBUF_I": "0"} if _STDBUF else {}
)

_HAS_MAKEFILE = "[ -f Makefile ] || [ -f makefile ] || [ -f GNUmakefile ]"
_NOT_HIDDEN = "! -path '*/.*'"


def _compile_all(pattern: str, compiler: str, what: str) -> str:
    """build "*" for C and C++: make if there is a Makefile, else every source into ./main."""
    return (
        f"if {_HAS_MAKEFILE}; then exec make; fi\n"
        f'if [ -z "$(find . {pattern} {_NOT_HIDDEN} | head -n 1)" ]; then\n'
        f"  echo 'build: no Makefile and no {what} file in /home/work' >&2; exit 1\n"
        "fi\n"
        f"exec find . {pattern} {_NOT_HIDDEN} -exec sh -c "
        f"'exec {compiler} -Wall -o main \"$@\" -lm -lrt -pthread -ldl' {compiler} {{}} +"
    )


_RUN_MAIN = (
    "if [ -x ./main ]; then exec ./main; fi\n"
    "if [ -x ./a.out ]; then exec ./a.out; fi\n"
    "echo 'exec: neither ./main nor ./a.out exists; build first' >&2; exit 127"
)
_MAKE_CLEAN = f"if {_HAS_MAKEFILE}; then exec make clean; fi"


def version_output(argv: tuple[str, ...], timeout: float = 30) -> str | None:
    """What a runtime's version command prints (stdout, then stderr), run as kernels
    would find it; None if it fails, prints nothing or does not run."""
    try:
        out = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"PATH": HOST_SEARCH_PATH, "LANG": "C.UTF-8"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout + out.stderr
    return text if out.returncode == 0 and text.strip() else None


@dataclass(frozen=True)
class Query:
    """How a query-mode snippet runs.

    kind "python" and "node" are the runner's persistent REPLs. kind "snippet"
    writes the code to `source` in a scratch directory and runs `command`
    there with the shell, in /home/work; `{dir}` is the scratch directory
    (filled in by the runner), `{class}` and `{main}` the Java class and its
    package-qualified name (filled in here).
    """

    kind: str
    source: str = ""
    command: str = ""


@dataclass(frozen=True)
class Language:
    name: str
    aliases: tuple[str, ...]
    requires: tuple[str, ...]  # host commands the runtime needs
    packages: str  # Debian packages that provide them
    version: tuple[str, ...]  # argv that prints the version
    query: Query
    build: str = ""  # what "*" means; "" = nothing to do
    exec: str = ""
    clean: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def preimports(self) -> bool:
        """Whether user code runs in the kernel's runner, where the zygote's
        pre-imported modules are (the python3 REPL): its kernels come from that
        zygote, every other language's from the lean one (sandbox.spawner_kernels)."""
        return self.query.kind == "python"

    @property
    def completes(self) -> bool:
        """Whether the kernel answers completion requests (the python3 REPL does)."""
        return self.query.kind == "python"

    def missing(self) -> list[str]:
        """The required commands kernels cannot find on this host."""
        return [c for c in self.requires if shutil.which(c, path=HOST_SEARCH_PATH) is None]

    def installed_version(self) -> str | None:
        """The runtime's version line, or None if it does not run."""
        if self.missing():
            return None
        text = version_output(self.version)
        lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
        return lines[0] if lines else None

    def query_op(self, code: str) -> dict:
        """The runner op that runs `code` in query mode."""
        if self.query.kind in ("python", "node"):
            return {"op": "query", "code": code, "repl": self.query.kind}
        source, command = self.query.source, self.query.command
        if "{class}" in source or "{main}" in command:
            cls, main = java_main_class(code)
            source = source.replace("{class}", cls)
            command = command.replace("{class}", cls).replace("{main}", main)
        return {"op": "exec", "command": command, "files": {source: code}}

    def batch_op(self, options: dict) -> dict:
        """The runner op for a batch run; options as sent by the client (spec §6.4)."""
        return {
            "op": "batch",
            "clean": batch_command(options.get("clean"), self.clean),
            "build": batch_command(options.get("build"), self.build),
            "exec": batch_command(options.get("exec"), self.exec),
        }


_JAVA_CLASS = re.compile(
    r"\bpublic\s+(?:(?:final|abstract|strictfp)\s+)*class\s+([A-Za-z_$][\w$]*)", re.ASCII
)
_JAVA_PACKAGE = re.compile(r"^\s*package\s+([A-Za-z_$][\w$.]*)\s*;", re.ASCII | re.MULTILINE)


def java_main_class(code: str) -> tuple[str, str]:
    """(class name, package-qualified name) of a snippet's public class; "Main" if none."""
    found = _JAVA_CLASS.search(code)
    cls = found.group(1) if found else "Main"
    package = _JAVA_PACKAGE.search(code)
    return cls, f"{package.group(1)}.{cls}" if package else cls


LANGUAGES: tuple[Language, ...] = (
    Language(
        "python3",
        aliases=("python", "python34", "python35", "python36"),
        requires=("python3",),
        packages="python3",
        version=("python3", "--version"),
        query=Query("python"),
        build="if [ -f setup.py ]; then exec python3 setup.py develop --user; fi",
        exec="exec python3 main.py",
    ),
    Language(
        "c",
        aliases=("gcc",),
        requires=("gcc", "make"),
        packages="gcc make",
        version=("gcc", "--version"),
        query=Query(
            "snippet",
            "main.c",
            "(cd {dir} && gcc -Wall -o main main.c -lm -lrt -pthread -ldl) && exec {dir}/main",
        ),
        build=_compile_all("-name '*.c'", "gcc", ".c"),
        exec=_RUN_MAIN,
        clean=_MAKE_CLEAN,
        env=STDBUF_ENV,
    ),
    Language(
        "cpp",
        aliases=("c++", "g++"),
        requires=("g++", "make"),
        packages="g++ make",
        version=("g++", "--version"),
        query=Query(
            "snippet",
            "main.cpp",
            "(cd {dir} && g++ -Wall -o main main.cpp -lm -lrt -pthread -ldl) && exec {dir}/main",
        ),
        build=_compile_all(r"\( -name '*.cpp' -o -name '*.cc' -o -name '*.cxx' \)", "g++", ".cpp"),
        exec=_RUN_MAIN,
        clean=_MAKE_CLEAN,
        env=STDBUF_ENV,
    ),
    Language(
        "java",
        aliases=("java8", "java17"),
        requires=("java", "javac"),
        packages="default-jdk-headless",
        version=("javac", "-version"),
        query=Query(
            "snippet",
            "{class}.java",
            "(cd {dir} && javac -d . {class}.java) && exec java -cp {dir} {main}",
        ),
        build=(
            f"if {_HAS_MAKEFILE}; then exec make; fi\n"
            f"if [ -z \"$(find . -name '*.java' {_NOT_HIDDEN} | head -n 1)\" ]; then\n"
            "  echo 'build: no Makefile and no .java file in /home/work' >&2; exit 1\n"
            "fi\n"
            f"exec find . -name '*.java' {_NOT_HIDDEN} -exec javac -d . {{}} +"
        ),
        exec=(
            "if [ -f Main.class ]; then exec java Main; fi\n"
            "if [ -f main/Main.class ]; then exec java main.Main; fi\n"
            f"m=$(find . -name Main.class {_NOT_HIDDEN} | head -n 1)\n"
            'if [ -n "$m" ]; then m=${m#./}; exec java "$(echo "${m%.class}" | tr / .)"; fi\n'
            "echo 'exec: no Main.class; build first, or run: java pkg.Class' >&2; exit 127"
        ),
    ),
    Language(
        "nodejs",
        aliases=("node", "js", "javascript", "nodejs6"),
        requires=("node",),
        packages="nodejs",
        version=("node", "--version"),
        query=Query("node"),
        exec="exec node main.js",
    ),
    Language(
        "rust",
        aliases=("rustc",),
        requires=("rustc", "cargo"),
        packages="rustc cargo",
        version=("rustc", "--version"),
        query=Query("snippet", "main.rs", "(cd {dir} && rustc -o main main.rs) && exec {dir}/main"),
        build=(
            f"if {_HAS_MAKEFILE}; then exec make; fi\n"
            "if [ -f Cargo.toml ]; then exec cargo build --offline; fi\n"
            "if [ -f main.rs ]; then exec rustc -o main main.rs; fi\n"
            "if [ -f src/main.rs ]; then exec rustc -o main src/main.rs; fi\n"
            "echo 'build: no Makefile, Cargo.toml or main.rs in /home/work' >&2; exit 1"
        ),
        exec=("if [ -f Cargo.toml ]; then exec cargo run --offline -q; fi\n" + _RUN_MAIN),
        env={"CARGO_HOME": "/tmp/.cargo", "CARGO_NET_OFFLINE": "true"},
    ),
    Language(
        "go",
        aliases=("golang",),
        requires=("go",),
        packages="golang-go",
        version=("go", "version"),
        query=Query(
            "snippet", "main.go", "(cd {dir} && go build -o main main.go) && exec {dir}/main"
        ),
        build=(
            f"if {_HAS_MAKEFILE}; then exec make; fi\n"
            "if [ -f go.mod ]; then exec go build -o main .; fi\n"
            "if [ -z \"$(find . -maxdepth 1 -name '*.go' | head -n 1)\" ]; then\n"
            "  echo 'build: no Makefile, go.mod or .go file in /home/work' >&2; exit 1\n"
            "fi\n"
            "exec find . -maxdepth 1 -name '*.go' ! -name '*_test.go' "
            "-exec go build -o main {} +"
        ),
        exec=_RUN_MAIN,
        env={"GOCACHE": "/tmp/.cache/go-build", "GOPATH": "/tmp/go", "GOPROXY": "off"},
    ),
    Language(
        "php",
        aliases=("php8",),
        requires=("php",),
        packages="php-cli",
        version=("php", "--version"),
        query=Query("snippet", "main.php", "exec php {dir}/main.php"),
        exec="exec php main.php",
    ),
    Language(
        "pascal",
        aliases=("fpc", "freepascal"),
        requires=("fpc",),
        packages="fp-compiler",
        version=("fpc", "-iV"),
        # fpc writes its messages to stdout: errors go to a file, shown on stderr
        query=Query(
            "snippet",
            "main.pas",
            "(cd {dir} && { fpc -vew -Femain.err -omain main.pas >/dev/null"
            " || { cat main.err >&2; exit 1; }; }) && exec {dir}/main",
        ),
        build=(
            f"if {_HAS_MAKEFILE}; then exec make; fi\n"
            "if [ ! -f main.pas ]; then\n"
            "  echo 'build: no Makefile and no main.pas in /home/work' >&2; exit 1\n"
            "fi\n"
            "fpc -vew -Fe.main.err -omain main.pas >/dev/null && exit 0\n"
            "cat .main.err >&2; exit 1"
        ),
        exec=_RUN_MAIN,
        env=STDBUF_ENV,
    ),
    Language(
        "bash",
        aliases=("sh", "shell"),
        requires=("bash",),
        packages="bash",
        version=("bash", "--version"),
        query=Query("snippet", "main.sh", "exec bash {dir}/main.sh"),
        exec="exec bash main.sh",
    ),
)

_BY_NAME: dict[str, Language] = {
    alias: lang for lang in LANGUAGES for alias in (lang.name, *lang.aliases)
}


def names() -> list[str]:
    return sorted(lang.name for lang in LANGUAGES)


def resolve(lang: str) -> Language | None:
    """The row for a lang or alias; a `name:tag` form ([v3]) uses the name."""
    return _BY_NAME.get(lang.split(":", 1)[0].lower())


def batch_command(value: object, default: str) -> str:
    """A batch step as sent by a client: "*" is the default, null/""/missing skip."""
    if value == "*":
        return default
    return value if isinstance(value, str) else ""
