"""The shape of the package: no import cycles, nothing imports upward, every package says what lives in it.

A new module goes into the layer of what it may import; the test names a module that is in no layer.
"""

import ast
import importlib
from pathlib import Path

import backend

ROOT = Path(backend.__file__).parent

# Bottom to top: a module may import its own layer and the ones below, never one above.
LAYERS = [
    {
        "errors",
        "uncertainty",
        "calibration",
        "stopping",
        "text",
        "registry",
        "tables",
        "metrics",
        "models.preprocess",
        "stack.processes",
    },
    {"settings", "labelstudio.label_config", "models.base", "models.transformer", "models.linear"},
    {"labelstudio.client", "labelstudio.project_setup", "models.finetune", "models.loader", "models.training"},
    {"predictions", "model_store", "retraining.policy", "retraining.pool", "suspects"},
    {"export", "report", "retraining.jobs", "stack.demo", "api", "simulation"},
    {"stack.launcher", "smoke", "wsgi", "cli", "jobs", "__main__"},
]
LAYER = {f"backend.{name}": i for i, names in enumerate(LAYERS) for name in names}


def _modules() -> dict[str, set[str]]:
    """{module: the backend modules it imports}, read from the source."""
    graph = {}
    for path in ROOT.rglob("*.py"):
        parts = ["backend", *path.relative_to(ROOT).with_suffix("").parts]
        package = parts[:-1]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    name = f"{target}.{alias.name}"
                    imported.add(
                        name if name in LAYER or (ROOT.parent / f"{name.replace('.', '/')}.py").exists() else target
                    )
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
        graph[".".join(parts)] = {m for m in imported if m.startswith("backend")} - {".".join(parts)}
    return graph


def test_every_module_has_a_layer_and_imports_nothing_above_it():
    graph = _modules()
    modules = {m for m in graph if m.count(".") and not (ROOT.parent / m.replace(".", "/") / "__init__.py").exists()}
    assert sorted(modules - set(LAYER)) == []
    upward = [(m, d) for m in modules for d in graph[m] if d in LAYER and LAYER[d] > LAYER[m]]
    assert upward == []


def test_the_import_graph_has_no_cycles():
    graph = _modules()
    done, stack = set(), []

    def visit(module):
        if module in stack:
            raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(module) :] + [module])}")
        if module in done:
            return
        stack.append(module)
        for dep in graph.get(module, ()):
            visit(dep)
        stack.pop()
        done.add(module)

    for module in graph:
        visit(module)


def test_every_package_says_what_lives_in_it():
    for init in ROOT.rglob("__init__.py"):
        module = importlib.import_module(".".join(["backend", *init.parent.relative_to(ROOT).parts]))
        assert (module.__doc__ or "").strip(), f"{init} has no docstring"
