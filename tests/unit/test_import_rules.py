"""The house rules of imports, read from every module's source (ast, not grep):

- no import cycle among the project's modules (function-level imports included);
- `sandbox/` imports nothing of `server/`; `sandbox/runner/` imports only the
  standard library and itself (it meets the host only through the wire protocol);
- the engine (`server/engine/`) imports no face, nothing of the server's program
  modules, and nothing of Starlette, uvicorn or any HTTP library;
- a face (`server/faces/<name>/`) imports no other face; the shared plumbing
  (`server/faces/http.py`, `server/faces/face_access.py`) imports no face; faces
  import none of the server's program modules (app, settings, admin, __main__).

Each rule is also tried against a planted violation, so that a rule that cannot
fail would be noticed.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("sandbox", "server")
HTTP_LIBRARIES = {"starlette", "uvicorn", "httpx", "httptools", "multipart", "websockets"}
SHARED = {"http", "face_access", "route_groups"}  # server/faces/ modules every face may use
PROGRAM = {
    "server.app", "server.settings", "server.admin", "server.__main__", "server.http_guard",
    "server.logs",
}  # fmt: skip


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(name: str, source: str, is_package: bool) -> set[str]:
    """Every module `source` imports, relative imports resolved, at any depth."""
    found: set[str] = set()
    base = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:  # `from pkg import module`
                found.add(f"{target}.{alias.name}")
    return found


def project_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    sources = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            sources[_module_name(path)] = (path.read_text(), path.name == "__init__.py")
    graph = {}
    for name, (source, is_package) in sources.items():
        imported = _imports(name, source, is_package)
        graph[name] = {m for m in imported if m in sources and m != name}
    return graph


def all_imports() -> dict[str, set[str]]:
    """Module -> every module it imports (the project's and others')."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = _module_name(path)
            found[name] = _imports(name, path.read_text(), path.name == "__init__.py")
    return found


def _face(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] == ["server", "faces"] and len(parts) > 2 and parts[2] not in SHARED:
        return parts[2]
    return None


def violations(imports: dict[str, set[str]]) -> list[str]:
    """Each broken rule, as "module -> import: rule"."""
    found = []
    for module, targets in imports.items():
        for target in sorted(targets):
            top = target.split(".")[0]
            rule = None
            if module.startswith("sandbox.runner"):
                if top not in sys.stdlib_module_names and not target.startswith("sandbox.runner"):
                    rule = "sandbox/runner imports only the standard library and itself"
            elif module.startswith("sandbox") and top == "server":
                rule = "sandbox imports nothing of server"
            if module.startswith("server.engine"):
                if target.startswith("server.faces") or target in PROGRAM:
                    rule = "the engine imports no face and none of the program modules"
                elif top in HTTP_LIBRARIES:
                    rule = "the engine imports no HTTP library"
            if module.startswith("server.faces"):
                face, other = _face(module), _face(target)
                if other is not None and other != face:
                    rule = "no face imports another face"
                elif target in PROGRAM:
                    rule = "faces import none of the program modules"
            if rule:
                found.append(f"{module} -> {target}: {rule}")
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle found by a depth-first walk (each reported once)."""
    found, state = [], {}

    def walk(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    return found


def _without_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's __init__ is imported on the way to each of its modules: an
    `import a.b` from inside `a` is no cycle through `a`, so edges to a package
    that contains the importer are dropped."""
    return {
        module: {t for t in targets if not module.startswith(t + ".")}
        for module, targets in graph.items()
    }


def test_there_is_no_import_cycle():
    assert cycles(_without_packages(project_graph())) == []


def test_every_layer_imports_only_what_it_may():
    assert violations(all_imports()) == []


@pytest.mark.parametrize(
    ("module", "target"),
    [
        ("sandbox.runner.files", "sandbox.spec"),
        ("sandbox.runner.files", "psutil"),
        ("sandbox.kernel", "server.engine.registry"),
        ("server.engine.registry", "server.faces.v2.problems"),
        ("server.engine.registry", "starlette.requests"),
        ("server.engine.registry", "server.settings"),
        ("server.faces.jobe.runs", "server.faces.v2.signed"),
        ("server.faces.v2.kernels", "server.app"),
    ],
)
def test_each_rule_catches_a_planted_violation(module, target):
    assert violations({module: {target}}) != []


def test_a_planted_cycle_is_caught():
    graph = {**project_graph(), "sandbox.spec": {"sandbox.kernel"}}
    graph["sandbox.kernel"] = graph.get("sandbox.kernel", set()) | {"sandbox.spec"}
    assert cycles(_without_packages(graph)) != []
