"""The package's layers point one way (docs/architecture.md): every import — at module level or
inside a function — goes to the same layer or one below, and no modules import each other in a
circle. The import graph is read from the source with ``ast``, so nothing is executed.

``scripts/draw_architecture.py`` draws docs/architecture.png from the same map.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "spikebridge"

#: Bottom to top. A module may import its own layer and the layers below, never one above.
#: Patterns are module names without the ``spikebridge.`` prefix (fnmatch); the first match wins.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("_version", "limits", "devices", "memory_reuse", "input_checks", "shipped",
                    "deprecation",
                    "atomic_io", "checkpoint_errors", "dataset_errors", "batch_transforms")),
    # event files below the data registry, which imports them (data.event_sets): events
    # imports nothing of spikebridge.data, so the two packages form no circle
    ("event data", ("events", "events.*")),
    ("graph building blocks", ("activations", "tracing", "batchnorm_folding", "quantization",
                               "calibration")),
    ("components", ("if_kernel", "neurons", "spiking_maxpool", "normalization", "distributed",
                    "data", "data.*", "models", "models.*")),
    ("engine", ("network", "simulate")),
    ("conversion", ("methods", "methods.*", "convert", "qcfs_fitting")),
    ("observers", ("energy", "energy.*")),
    ("harness", ("evaluation",)),
    ("persistence", ("checkpoint", "checkpoint_*", "directory_lock", "snn_artefact",
                     "nir_export", "train")),
    ("analysis and reporting", ("analysis", "reporting", "runtime_estimate")),
    ("experiments", ("experiments", "recipes", "reproduce")),
    ("command line", ("cli", "cli.*", "entry", "__main__", "")),  # "": the lazy package face
]

#: Deprecated aliases that look a moved name up in its new, higher home on first use
#: (``spikebridge.deprecation.moved_names``, not an import statement): allowed until 0.3.
DEPRECATED_FORWARDS = {
    "energy": "MOVED_IN_0_2",
    "analysis": "MOVED_IN_0_2",
    "simulate": "MOVED_IN_0_2",
}

#: Modules that import a module whose name is only known at run time — not an import of ours in
#: disguise — with the reason.
RUNTIME_IMPORTS = {
    "models.factory": "imports the user's model factory named on the command line "
                      "(--model-factory pkg.module:function) or in a checkpoint's config",
}


def _modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for path in sorted((SOURCE / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SOURCE).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        found[".".join(parts)] = (path, is_package)
    return found


def _targets(module: str, is_package: bool, node: ast.AST, modules) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != PACKAGE:
        return []
    return [f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target
            for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """``{module: modules it imports}`` over every import statement of ``src/spikebridge``."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, is_package) in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(name, is_package, node, modules):
                    while target not in modules and "." in target:
                        target = target.rsplit(".", 1)[0]
                    if target != name and target in modules:
                        graph[name].add(target)
    return graph


def _short(module: str) -> str:
    return module[len(PACKAGE) + 1:] if module != PACKAGE else ""


def layer_of(module: str) -> int:
    short = _short(module)
    for index, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(short, pattern) for pattern in patterns):
            return index
    raise AssertionError(f"{module} is in no layer of tests/test_layering.py's LAYERS: place it")


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer():
    for module in import_graph():
        layer_of(module)


def test_no_import_points_upward():
    graph = import_graph()
    upward = [f"{_short(a) or PACKAGE} ({LAYERS[layer_of(a)][0]}) imports {_short(b)} "
              f"({LAYERS[layer_of(b)][0]})"
              for a, targets in graph.items() for b in sorted(targets)
              if layer_of(b) > layer_of(a)]
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_the_checks_can_fail():
    """The detectors themselves: a circle and an upward arrow in a made-up graph are found."""
    graph = {"spikebridge.a": {"spikebridge.b"}, "spikebridge.b": {"spikebridge.a"},
             "spikebridge.c": set()}
    assert circles(graph) == [["spikebridge.a", "spikebridge.b"]]
    assert layer_of("spikebridge.simulate") < layer_of("spikebridge.energy.counter")
    assert layer_of("spikebridge.cli.app") == len(LAYERS) - 1


def test_only_the_listed_deprecated_aliases_look_names_up_at_run_time():
    """``importlib.import_module`` with a literal module name is an import in disguise: only
    the package face, ``spikebridge.deprecation`` (for the listed deprecated aliases, which
    alone call its ``moved_names``) and the listed run-time imports (a name the user gives) may
    use it."""
    found, forwarding = set(), set()
    for name, (path, _) in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or name == PACKAGE:
                continue
            if getattr(node.func, "attr", None) == "import_module":
                found.add(_short(name))
            if getattr(node.func, "id", None) == "moved_names":
                forwarding.add(_short(name))
    # spikebridge.deprecation.moved_names does the look-up for the listed modules, no other
    assert found == {"deprecation"} | set(RUNTIME_IMPORTS)
    assert forwarding == set(DEPRECATED_FORWARDS)


@pytest.mark.parametrize("module", sorted(DEPRECATED_FORWARDS))
def test_deprecated_aliases_still_answer(module):
    mod = importlib.import_module(f"{PACKAGE}.{module}")
    moved = getattr(mod, DEPRECATED_FORWARDS[module])
    for name, home in moved.items():
        with pytest.warns(DeprecationWarning, match=f"moved to {home}"):
            assert getattr(mod, name) is getattr(importlib.import_module(home), name)
        assert layer_of(home) > layer_of(f"{PACKAGE}.{module}")  # why it is not an import
