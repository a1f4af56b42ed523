"""The package's import graph has no cycle: module-level and function-level imports alike, read
from the source (AST), relative imports resolved (`from . import __version__` is an import of the
package's `__init__`, `from .layers import softmax` of `layers`)."""

import ast
from pathlib import Path

import npformer

ROOT = Path(npformer.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imported(name: str, path: Path, known: set) -> set:
    """The npformer modules `name` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from . import layers` imports a module; `from .layers import softmax` imports from one
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in known}
    return found


def import_graph() -> dict[str, set]:
    mods = modules()
    known = set(mods)
    return {name: imported(name, path, known) - {name} for name, path in mods.items()}


def find_cycle(graph: dict[str, set]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_is_read_from_every_module():
    graph = import_graph()
    assert {"npformer.cli", "npformer.models.base", "npformer.checkpoints.convert", "npformer.tools.explain"} <= set(graph)
    assert "npformer.models.seeded" in graph["npformer.models.base"]  # a module-level import
    assert "npformer.models.features" in graph["npformer.models.base"]  # a function-level import


def test_every_relative_import_names_a_module_of_the_package():
    """A relative import that resolves to no module would hide an edge (and fail at run time)."""
    mods = modules()
    bad = []
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")
                module = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
                if module not in mods:
                    bad.append(f"{name}: from {'.' * node.level}{node.module or ''} -> {module}")
    assert bad == []


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_checkpoint_code_never_imports_model_code():
    """checkpoints/ needs configs and schemas only; model code needs checkpoints (to load)."""
    graph = import_graph()
    for name, targets in graph.items():
        if name.startswith("npformer.checkpoints"):
            assert not {t for t in targets if t.endswith(".model") or t == "npformer.models.base"}, name


# ---------------------------------------------------------------------------------------------
# packages: dependencies run one way


def unit(module: str) -> str:
    """What a module belongs to in the package graph: its top-level subpackage (`npformer.models`,
    `npformer.checkpoints`, `npformer.tools`, ...), or itself for a module at the top (`npformer.loading`)."""
    return ".".join(module.split(".")[:2])


def package_graph() -> dict[str, set]:
    """{unit: the units it imports}, from every import, module-level and function-level alike."""
    graph: dict[str, set] = {}
    for name, targets in import_graph().items():
        graph.setdefault(unit(name), set()).update(unit(t) for t in targets if unit(t) != unit(name))
    return graph


def test_no_cycle_between_packages():
    """models never import checkpoints, tools are never imported by the library, and so on: a
    package-level cycle (models -> checkpoints -> models) would fail here even with acyclic modules."""
    graph = package_graph()
    assert {"npformer.models", "npformer.checkpoints", "npformer.tools", "npformer.loading", "npformer.layers"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "package cycle: " + " -> ".join(cycle)


def test_the_layers_run_one_way():
    graph = package_graph()
    assert "npformer.checkpoints" not in graph["npformer.models"], "model code never imports checkpoint code"
    assert "npformer.loading" not in graph["npformer.models"]
    # above the library: the CLI, and evaluate (its --reference runs the oracle)
    applications = {"npformer", "npformer.tools", "npformer.cli", "npformer.__main__", "npformer.evaluation"}
    assert not [u for u in set(graph) - applications if "npformer.tools" in graph[u]], "the library never imports the tools"
    ops = {"npformer.layers", "npformer.kernels", "npformer.erf", "npformer.resample", "npformer.windows"}
    assert all(graph[u] <= ops | {"npformer.parallel", "npformer.macs", "npformer.errors"} for u in ops)


def test_the_package_cycle_finder_sees_function_level_imports():
    assert unit("npformer.models.efficientformer.model") == "npformer.models"
    assert unit("npformer.loading") == "npformer.loading"
    assert find_cycle({"npformer.models": {"npformer.checkpoints"}, "npformer.checkpoints": {"npformer.models"}})
