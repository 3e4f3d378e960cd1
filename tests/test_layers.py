"""The code's layers as a contract: `app/` never imports `training/`; in `training/` each subpackage imports
only its own layer and those below it (data < networks < evaluation < release < experiments < the command
line); and no two modules import each other, directly or round a loop, in either package. Imports inside
functions count too: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TRAINING_LAYERS = ["data", "networks", "evaluation", "release", "experiments"]  # bottom to top


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, package: str) -> set[str]:
    """The modules of `package` that a file imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == package or name.startswith(package + ".")}


def graph(package: str) -> dict[str, set[str]]:
    modules = {module_name(path): path for path in (ROOT / package).rglob("*.py")}
    return {
        name: {m for m in imports_of(path, package) if m in modules and m != name} for name, path in modules.items()
    }


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in TRAINING_LAYERS:
        return TRAINING_LAYERS.index(parts[1])
    return len(TRAINING_LAYERS)  # training.cli, training.__main__: the top


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every loop found by a depth-first walk (Tarjan's strongly connected components of size > 1)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_service_never_imports_training() -> None:
    offenders = {module_name(p): imports_of(p, "training") for p in (ROOT / "app").rglob("*.py")}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_each_training_layer_imports_only_itself_and_the_layers_below() -> None:
    upward = {
        (module, target)
        for module, targets in graph("training").items()
        for target in targets
        if layer(target) > layer(module)
    }
    assert upward == set()


@pytest.mark.parametrize("package", ["app", "training"])
def test_no_import_cycles(package: str) -> None:
    assert cycles(graph(package)) == []


def test_the_checks_would_see_a_cycle_and_an_upward_import() -> None:
    """The contract itself can fail: a loop and a layer inversion made up here are found."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer("training.data.samples") < layer("training.release.train") < layer("training.cli")
