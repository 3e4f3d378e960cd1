"""The code's layers as a contract: `app/` never imports `training/`, and `training/` imports nothing of `app/`
but its contract (`app.contract`); in `app/` the rooms stack contract < runtime < pacs < api < the wiring (`app.main`,
`app.cli`, ...), the contract importing nothing else of `app`; in `training/` each subpackage imports only its own
layer and those below it (data < networks < evaluation < release < experiments < the command line); and no two
modules import each other, directly or round a loop, in either package. Imports inside functions count too: a lazy
import is still a dependency."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TRAINING_LAYERS = ["data", "networks", "evaluation", "release", "experiments"]  # bottom to top
APP_ROOMS = ["contract", "runtime", "pacs", "api"]  # bottom to top; app's other modules wire them (the top)
APP_CORE = {"app.settings", "app.request_context"}  # configuration and the request's id: any room but the contract


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


def room(module: str) -> int:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in APP_ROOMS:
        return APP_ROOMS.index(parts[1])
    return len(APP_ROOMS)  # app.main, app.cli, app.settings, ...: the wiring


def misplaced_app_imports(edges: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(module, import) pairs that go up a room, or out of the contract to anything else of `app`."""
    found = set()
    for module, targets in edges.items():
        for target in targets:
            if target in ("app", module) or target.startswith(module + "."):
                continue
            if room(module) == 0 and room(target) != 0:
                found.add((module, target))
            elif room(target) > room(module) and target not in APP_CORE:
                found.add((module, target))
    return found


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


def test_training_imports_only_the_contract_of_the_service() -> None:
    offenders = {
        (module_name(p), name)
        for p in (ROOT / "training").rglob("*.py")
        for name in imports_of(p, "app")
        if name != "app.contract" and not name.startswith("app.contract.")
    }
    assert offenders == set()


def test_each_room_of_the_service_imports_only_itself_and_the_rooms_below() -> None:
    assert misplaced_app_imports(graph("app")) == set()


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
    assert misplaced_app_imports(
        {
            "app.contract.model_card": {"app.settings", "app.contract.modality"},
            "app.runtime.registry": {"app.api.errors", "app.settings", "app.contract.model_card"},
            "app.api.deps": {"app.runtime.registry", "app.settings", "app.main"},
        }
    ) == {
        ("app.contract.model_card", "app.settings"),
        ("app.runtime.registry", "app.api.errors"),
        ("app.api.deps", "app.main"),
    }


def test_no_disease_is_named_in_the_service_or_the_page() -> None:
    """Diseases are data (training/diseases/, the cards): the service and the page know none by name, so a disease
    added by a data file alone is served and shown like the built-in ones."""
    names = [path.stem for path in (ROOT / "training" / "diseases").glob("*.json")]
    assert "malaria" in names
    pattern = re.compile(r"\b(" + "|".join(names) + r")\b")  # as identifiers: a citation may say "Retinopathy"
    found = {
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in (ROOT / "app").rglob("*")
        if path.suffix in (".py", ".js", ".html")
        for match in pattern.finditer(path.read_text(encoding="utf-8"))
    }
    assert found == set()


def long_functions(path: Path, limit: int = 60) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > limit
    ]


def test_every_function_reads_on_one_screen() -> None:
    """At most 60 lines a function (the training CLI's parser was 174): a longer one is split by what it does."""
    found = [line for package in ("app", "training", "benchmarks") for p in (ROOT / package).rglob("*.py")
             for line in long_functions(p)]  # fmt: skip
    assert found == []
