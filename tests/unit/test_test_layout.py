"""Tests share helpers through tests/helpers, never through each other: a test module
or a conftest imported as a module runs twice under two names, and ties one test's
file to another's."""

from __future__ import annotations

import ast
import pathlib

TESTS = pathlib.Path(__file__).resolve().parent.parent


def imported_modules(path: pathlib.Path) -> set[str]:
    """Top-level names of every module `path` imports, at any depth in its code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_test_file_imports_a_test_module_or_a_conftest():
    test_modules = {path.stem for path in TESTS.rglob("test_*.py")}
    assert "test_test_layout" in test_modules
    offenders = {
        str(path.relative_to(TESTS)): sorted(names)
        for path in sorted(TESTS.rglob("*.py"))
        if (names := imported_modules(path) & (test_modules | {"conftest"}))
    }
    assert offenders == {}, "import shared helpers from tests/helpers instead"


def test_the_layout_check_sees_an_import_of_a_test_module(tmp_path):
    path = tmp_path / "test_example.py"
    path.write_text("def test_it():\n    from test_kernels_api import problem\n")
    assert "test_kernels_api" in imported_modules(path)
