"""The house rules that keep the code readable: imports point one way, no cycles, files of one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "model", "client/src/detector_client")
MAX_LINES = 400


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            relative = path.relative_to(ROOT / package.rsplit("/", 1)[0] if "/" in package else ROOT)
            name = ".".join(relative.with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports, lazily inside functions too."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {n for n in names if n in known}


def test_no_module_is_longer_than_a_sitting():
    long = {
        name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


def test_model_never_imports_app():
    for name, path in modules().items():
        if name.startswith("model"):
            assert not any(i.startswith("app") for i in imports_of(path, set(modules()))), name


def test_there_is_no_import_cycle():
    graph = {name: imports_of(path, set(modules())) - {name} for name, path in modules().items()}
    # a package's __init__ importing its own submodules is not a cycle of the code's design
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in graph[node]:
            if target.startswith(node + "."):
                continue
            if state.get(target) == 1:
                raise AssertionError(" -> ".join([*trail[trail.index(target) :], target]))
            if target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
