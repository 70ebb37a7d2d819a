"""A run_spec read and checked as Jobe checks it (docs/reference/jobe.md §1-2): the
same errors with the same messages where a client could tell, so CodeRunner and
Jobe's own test client see the Jobe they know.

Where Jobe answers bad input with a 500 (bad JSON, wrong types: PHP exceptions),
this face answers 400 with a message naming the field: nothing a client sends is
a server error here.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from .languages import BY_ID, COMPILE_MINIMUM, DEFAULT_PARAMS, JobeLanguage

# The largest streamsize honoured (MB): a step's stdout and stderr travel in one
# message of at most 16 MiB (sandbox/runner/protocol.py MAX_BLOB).
MAX_STREAMSIZE = 8
LIST_PARAMS = ("compileargs", "linkargs", "interpreterargs", "runargs")

# Jobe's sourcefilename sanitiser: a name it would change is illegal
_UNSAFE_NAME = re.compile(r"[<>:\"/\\|?*\x00-\x1f\x7f\xa0\xad#\[\]@!$&'()+,;={}^~`]")
# Jobe's inference of a Java source's class: exactly one public class with a main
_JAVA_MAIN = re.compile(
    r"(^|\W)public\s+class\s+(\w+)[^{]*\{.*?(public\s+static|static\s+public)\s+void\s+main\s*\(\s*String",
    re.MULTILINE | re.DOTALL,
)


class JobeError(Exception):
    """A refused run_spec: the HTTP status and Jobe's message (a JSON string body)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Params:
    cputime: float  # seconds
    memorylimit: float  # MB; 0: no RLIMIT_AS
    streamsize: float  # MB, each of stdout and stderr
    numprocs: int
    disklimit: float  # MB; <= 0: no RLIMIT_FSIZE
    compileargs: tuple[str, ...]
    linkargs: tuple[str, ...]
    interpreterargs: tuple[str, ...]
    runargs: tuple[str, ...]
    main_class: str | None

    def for_compile(self) -> Params:
        """Jobe's min_params_compile over these: a compile gets at least those."""
        memory = self.memorylimit
        if memory:
            memory = max(memory, COMPILE_MINIMUM["memorylimit"])
        return Params(
            **{
                **self.__dict__,
                "cputime": max(self.cputime, COMPILE_MINIMUM["cputime"]),
                "memorylimit": memory,
                "numprocs": max(self.numprocs, COMPILE_MINIMUM["numprocs"]),
                "disklimit": max(self.disklimit, COMPILE_MINIMUM["disklimit"]),
            }
        )


@dataclass(frozen=True)
class RunSpec:
    language: JobeLanguage
    sourcecode: str
    sourcefilename: str
    input: str
    file_list: tuple[tuple[str, str], ...]  # (file id, name in the work directory)
    params: Params

    @property
    def main_class(self) -> str:
        """The Java class that runs: parameters.main_class, else the file's stem."""
        return self.params.main_class or self.sourcefilename.split(".", 1)[0]


def parse(body: bytes, served: dict[str, str], max_cputime: int) -> RunSpec:
    """The run_spec of a POST runs body; JobeError in Jobe's order of checks.
    `served`: the language ids this server runs."""
    try:
        data = json.loads(body) if body.strip() else None
    except (UnicodeDecodeError, ValueError):
        raise JobeError(400, "Non-JSON post data received") from None
    if not isinstance(data, dict):
        raise JobeError(400, "Non-JSON post data received")
    spec = data.get("run_spec")
    if not isinstance(spec, dict):
        raise JobeError(400, "No run_spec attribute found in post data")
    for name in ("sourcecode", "language_id"):
        if spec.get(name) is None:
            raise JobeError(400, f"run_spec is missing the required attribute '{name}'")
        if not isinstance(spec[name], str):
            raise JobeError(400, f"run_spec attribute '{name}' must be a string")
        if not _text(spec[name]):
            raise JobeError(400, f"run_spec attribute '{name}' must be valid UTF-8 text")
    language_id = spec["language_id"].lower()
    if language_id not in served:
        raise JobeError(400, f"Language '{language_id}' is not known")
    language = BY_ID[language_id]
    params = _params(spec.get("parameters"), language)
    if int(params.cputime) > max_cputime:
        raise JobeError(
            400, f"cputime exceeds maximum allowed on this Jobe server ({max_cputime} secs)"
        )
    sourcefilename = _sourcefilename(spec.get("sourcefilename"), language, spec["sourcecode"])
    stdin = spec.get("input")
    if stdin is None:
        stdin = ""
    if not isinstance(stdin, str):
        raise JobeError(400, "run_spec attribute 'input' must be a string")
    if not _text(stdin):
        raise JobeError(400, "run_spec attribute 'input' must be valid UTF-8 text")
    return RunSpec(
        language=language,
        sourcecode=spec["sourcecode"],
        sourcefilename=sourcefilename,
        input=stdin if stdin not in ("", "0") else "",  # PHP-falsy input: no stdin
        file_list=_file_list(spec.get("file_list")),
        params=params,
    )


def _text(value: str) -> bool:
    """Whether it encodes as UTF-8 (JSON may carry lone surrogates, which do not)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _number(value: object) -> float | None:
    """PHP's is_numeric: a number or a numeric string (not a bool)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _params(given: object, language: JobeLanguage) -> Params:
    if given is None or given == []:  # PHP encodes an empty object as []
        given = {}
    if not isinstance(given, dict):
        raise JobeError(400, "run_spec attribute 'parameters' must be an object")
    merged = {**DEFAULT_PARAMS, **language.params}
    values: dict[str, object] = {}
    for name, default in merged.items():
        value = given.get(name, default)
        if name in LIST_PARAMS:
            if value is None:
                value = default
            if not isinstance(value, list) or not all(
                isinstance(v, str) and _text(v) for v in value
            ):
                raise JobeError(400, f"parameters.{name} must be a list of strings")
            values[name] = tuple(value)
            continue
        number = _number(value)  # Jobe: a non-numeric value means the default
        values[name] = number if number is not None else float(default)  # type: ignore[arg-type]
    if values["cputime"] <= 0:
        values["cputime"] = float(merged["cputime"])  # type: ignore[arg-type]
    if values["streamsize"] <= 0:
        values["streamsize"] = float(merged["streamsize"])  # type: ignore[arg-type]
    values["streamsize"] = min(values["streamsize"], MAX_STREAMSIZE)  # type: ignore[type-var]
    values["memorylimit"] = max(0.0, values["memorylimit"])  # type: ignore[type-var]
    if language.params.get("memorylimit") == 0:
        values["memorylimit"] = 0.0  # Java: Jobe forces it
    numprocs = max(1, int(values["numprocs"]))  # type: ignore[call-overload]
    if language.id == "java":
        numprocs = max(numprocs, 256)  # Jobe's minimum for the JVM's threads
    values["numprocs"] = numprocs
    main_class = given.get("main_class")
    values["main_class"] = main_class if isinstance(main_class, str) and main_class else None
    if values["main_class"] is not None and not re.fullmatch(r"[\w$.]+", values["main_class"]):
        raise JobeError(400, "parameters.main_class must be a Java class name")
    return Params(**values)  # type: ignore[arg-type]


def _sourcefilename(given: object, language: JobeLanguage, code: str) -> str:
    if given is not None and not isinstance(given, str):
        raise JobeError(400, "The sourcefilename for the run_spec is illegal")
    name = given or ""
    if name == "prog.java":  # a legacy CodeRunner name Jobe ignores, in every language
        name = ""
    if name:
        if (
            _UNSAFE_NAME.search(name)
            or name[0] in ".-"
            or not _text(name)
            or len(name.encode()) > 200
        ):
            raise JobeError(400, "The sourcefilename for the run_spec is illegal")
        return name
    if language.id == "java":
        found = _JAVA_MAIN.findall(code)
        if len(found) == 1:
            return f"{found[0][1]}.java"
    return language.source


def _file_list(given: object) -> tuple[tuple[str, str], ...]:
    if given is None:
        return ()
    if not isinstance(given, list):
        raise JobeError(400, "run_spec attribute 'file_list' must be a list")
    files = []
    for entry in given:
        if not _good_file_spec(entry):
            shown = json.dumps(entry, ensure_ascii=False)
            raise JobeError(400, f"Invalid file specifier: {shown}")
        files.append((entry[0], entry[1]))
    return tuple(files)


def _good_file_spec(entry: object) -> bool:
    """Jobe's rule: [id, name] or [id, name, anything]; an id of at least 8 letters
    and digits; a name of letters, digits, '-', '_' and '.', not only those three."""
    if not isinstance(entry, list) or len(entry) not in (2, 3):
        return False
    file_id, name = entry[0], entry[1]
    if not isinstance(file_id, str) or not isinstance(name, str):
        return False
    if len(file_id) < 8 or len(file_id) > 128 or not file_id.isascii() or not file_id.isalnum():
        return False
    core = re.sub(r"[-_.]", "", name)
    return bool(core) and core.isascii() and core.isalnum() and len(name) <= 200
