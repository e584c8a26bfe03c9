"""The package's layers (docs/development.md): a module imports only from its own layer or below, imports inside
functions included, and no two modules import each other, directly or around a longer cycle. Read with `ast`, so
nothing is imported to check it."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# bottom to top; a name is a module or a package (every module below it)
LAYERS = [
    ["dsls.errors", "dsls.rng", "dsls.progress", "dsls.checkpoints", "dsls.distributed", "dsls.quiet", "dsls.nested"],
    ["dsls.noise", "dsls.losses", "dsls.nets", "dsls.data"],
    ["dsls.score", "dsls.priors", "dsls.samplers", "dsls.likelihood", "dsls.interpolation", "dsls.guidance",
     "dsls.metrics"],
    ["dsls.model", "dsls.loading", "dsls.phases", "dsls.anomaly"],
    # the search phase sits with the tasks: it runs them and writes the run folder's samples, results and figures
    ["dsls.tasks", "dsls.figures", "dsls.callbacks", "dsls.runs", "dsls.run_folder", "dsls.interrupts",
     "dsls.phases.search"],
    ["dsls.cli", "dsls.pipeline", "dsls.overrides", "dsls.arguments", "dsls.help", "dsls.profiles", "dsls.ablation",
     "dsls.benchmarking", "dsls.tuning"],
    ["dsls"],  # dsls/__init__.py: the top (dsls.load is reached lazily from there)
]


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted((ROOT / "dsls").rglob("*.py"))}


def layer_of(module: str) -> int:
    best = None
    for i, names in enumerate(LAYERS):
        for name in names:
            inside = module == name or (name != "dsls" and module.startswith(name + "."))  # "dsls": __init__ only
            if inside and (best is None or len(name) > len(best[1])):
                best = (i, name)
    assert best is not None, f"{module} is in no layer: add it to LAYERS and to docs/development.md"
    return best[0]


def imports_of(module: str) -> set[str]:
    """The dsls modules `module` imports anywhere in its file (functions included), resolved to modules that exist
    (`from dsls.samplers import SAMPLERS` is dsls.samplers; `from dsls import cli` is dsls.cli)."""
    tree = ast.parse(MODULES[module].read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "dsls"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "dsls":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in MODULES else node.module)
    return {m for m in out if m != module}


GRAPH = {m: imports_of(m) for m in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_higher_layer(module):
    up = sorted(m for m in GRAPH[module] if layer_of(m) > layer_of(module))
    assert not up, f"{module} (layer {layer_of(module)}) imports from above: " + ", ".join(
        f"{m} (layer {layer_of(m)})" for m in up)


def find_cycle(graph: dict) -> list | None:
    """One cycle of the module graph, or None (depth-first search; a package's __init__ counts as a module)."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if n not in graph:
                continue
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = "done"
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycles():
    # a package's __init__ that re-exports its own submodules is not a cycle: drop package → own-child edges
    graph = {m: {n for n in deps if not n.startswith(m + ".")} for m, deps in GRAPH.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_the_checker_sees_an_upward_import_and_a_cycle():
    """The rules bite: a low module importing the CLI is flagged, and so is a two-module cycle."""
    assert layer_of("dsls.noise") < layer_of("dsls.cli")
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
