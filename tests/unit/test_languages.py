"""The language table (sandbox/languages.py): names, aliases, query and batch ops."""

from __future__ import annotations

import pytest

from sandbox import languages
from sandbox.languages import LANGUAGES, batch_command, java_main_class, names, resolve

CANONICAL = ["bash", "c", "cpp", "go", "java", "nodejs", "pascal", "php", "python3", "rust"]


@pytest.mark.parametrize("name", CANONICAL)
def test_resolve_canonical_names(name):
    lang = resolve(name)
    assert lang is not None
    assert lang.name == name


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("python", "python3"),
        ("node", "nodejs"),
        ("js", "nodejs"),
        ("javascript", "nodejs"),
        ("nodejs6", "nodejs"),
        ("java8", "java"),
        ("golang", "go"),
        ("sh", "bash"),
        ("shell", "bash"),
        ("c++", "cpp"),
        ("python:3.6", "python3"),
        ("nodejs:8", "nodejs"),
        ("Java", "java"),
        ("PYTHON3", "python3"),
    ],
)
def test_resolve_aliases(alias, expected):
    lang = resolve(alias)
    assert lang is not None, alias
    assert lang.name == expected


@pytest.mark.parametrize("name", ["", "cobol", "pythonx", ":python3", "python 3", "rust2"])
def test_resolve_unknown_is_none(name):
    assert resolve(name) is None


def test_names_sorted_and_complete():
    assert names() == CANONICAL
    assert names() == sorted(names())


def test_no_two_rows_share_a_name_or_alias():
    seen: dict[str, str] = {}
    for lang in LANGUAGES:
        for alias in (lang.name, *lang.aliases):
            assert alias not in seen, f"{alias!r} in both {seen[alias]} and {lang.name}"
            seen[alias] = lang.name
    # every alias resolves to its own row
    for alias, name in seen.items():
        assert resolve(alias).name == name


def test_batch_command():
    assert batch_command("*", "make all") == "make all"
    assert batch_command("*", "") == ""
    assert batch_command(None, "make all") == ""
    assert batch_command("", "make all") == ""
    assert batch_command(42, "make all") == ""
    assert batch_command(["*"], "make all") == ""
    assert batch_command({"cmd": "x"}, "make all") == ""
    assert batch_command("gcc -o x x.c", "make all") == "gcc -o x x.c"
    assert batch_command(" * ", "make all") == " * "


def test_java_main_class_default():
    assert java_main_class("") == ("Main", "Main")
    assert java_main_class('System.out.println("hi");') == ("Main", "Main")


def test_java_main_class_public_class():
    code = "public class Foo {\n  public static void main(String[] a) {}\n}\n"
    assert java_main_class(code) == ("Foo", "Foo")


def test_java_main_class_modifiers():
    assert java_main_class("public final class Bar {}") == ("Bar", "Bar")
    assert java_main_class("public abstract class Baz {}") == ("Baz", "Baz")


def test_java_main_class_package():
    code = "package a.b;\n\npublic class Foo {}\n"
    assert java_main_class(code) == ("Foo", "a.b.Foo")


def test_java_main_class_prefers_public_class():
    code = "class Helper {}\n\npublic class Real {\n}\n"
    assert java_main_class(code) == ("Real", "Real")


def test_query_op_python3():
    assert resolve("python3").query_op("print(1)") == {
        "op": "query",
        "code": "print(1)",
        "repl": "python",
    }


def test_query_op_nodejs():
    assert resolve("nodejs").query_op("console.log(1)") == {
        "op": "query",
        "code": "console.log(1)",
        "repl": "node",
    }


def test_query_op_c():
    code = '#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n'
    op = resolve("c").query_op(code)
    assert op["op"] == "exec"
    assert op["files"] == {"main.c": code}
    assert "{dir}" in op["command"]
    assert "gcc" in op["command"]


def test_query_op_java_names_file_after_public_class():
    code = "package p.q;\npublic class Hello {\n  public static void main(String[] a) {}\n}\n"
    op = resolve("java").query_op(code)
    assert op["op"] == "exec"
    assert op["files"] == {"Hello.java": code}
    command = op["command"]
    assert "{class}" not in command and "{main}" not in command
    assert "javac -d . Hello.java" in command
    assert "java -cp {dir} p.q.Hello" in command
    assert "{dir}" in command  # filled in by the runner


def test_query_op_java_without_class_uses_main():
    op = resolve("java").query_op("class X { }")
    assert list(op["files"]) == ["Main.java"]
    assert op["command"].endswith("java -cp {dir} Main")


def test_query_op_bash():
    op = resolve("sh").query_op("echo hi")
    assert op == {
        "op": "exec",
        "command": "exec bash {dir}/main.sh",
        "files": {"main.sh": "echo hi"},
    }


def test_batch_op_defaults_and_overrides():
    c = resolve("c")
    assert c.batch_op({"clean": "*", "build": "*", "exec": "*"}) == {
        "op": "batch",
        "clean": c.clean,
        "build": c.build,
        "exec": c.exec,
    }
    assert c.build and c.exec and c.clean
    assert c.batch_op({}) == {"op": "batch", "clean": "", "build": "", "exec": ""}
    assert c.batch_op({"clean": None, "build": "make x", "exec": "./x"}) == {
        "op": "batch",
        "clean": "",
        "build": "make x",
        "exec": "./x",
    }
    py = resolve("python3")
    assert py.batch_op({"build": "*", "exec": "*", "clean": "*"}) == {
        "op": "batch",
        "clean": "",  # python3 has no clean step
        "build": py.build,
        "exec": "exec python3 main.py",
    }


def test_completes_only_python3():
    assert [lang.name for lang in LANGUAGES if lang.completes] == ["python3"]


def test_missing_is_empty_for_every_row():
    for lang in LANGUAGES:
        assert lang.missing() == [], lang.name


def test_installed_version_for_every_row():
    # Runs the real version commands (python3 --version, gcc --version, javac -version, ...).
    for lang in LANGUAGES:
        version = lang.installed_version()
        assert isinstance(version, str) and version, lang.name


def test_a_runtime_that_is_not_installed_is_a_503_naming_the_package(monkeypatch):
    from server.engine.errors import NoCapacity
    from server.engine.registry import resolve_lang
    from server.faces.v2.problems import from_engine

    row = languages.Language(
        "cobol",
        aliases=(),
        requires=("no-such-compiler-here",),
        packages="gnucobol",
        version=("cobc", "--version"),
        query=languages.Query("snippet", "main.cob", "cobc -x {dir}/main.cob"),
    )
    monkeypatch.setitem(languages._BY_NAME, "cobol", row)
    with pytest.raises(NoCapacity) as raised:
        resolve_lang("cobol")
    problem = from_engine(raised.value)
    assert problem.status == 503
    assert problem.kind == "instance-not-available"
    assert "apt-get install gnucobol" in problem.title
    assert "no-such-compiler-here" in problem.title
