"""The layout DESIGN.md gives, checked from the source: dependencies run one way
(finetune_hub <- inference <- datasets <- experiments <- evaluation <- registry) and no two
modules import each other at import time. An import inside a function is how a service
reaches a Huey task (and a task its service) without a cycle; it may point anywhere except
at a higher layer's internals, so only those are listed as allowed."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["finetune_hub", "inference", "datasets_app", "experiments", "evaluation", "registry"]
# Function-level imports that go up a layer, each with its reason.
ALLOWED_UPWARD = {
    # The project package is also the top: the root API mounts every app's router.
    *(("finetune_hub.api", app) for app in LAYERS[2:]),
    # A registered model version is one kind of subject (the foreign key is a string
    # reference for the same reason): looked up when a subject is resolved.
    ("evaluation.subjects", "registry"),
    # The demo loads datasets and an experiment: a management command at the top of the stack.
    ("finetune_hub.management.commands.demo_data", "datasets_app"),
    ("finetune_hub.management.commands.demo_data", "experiments"),
    # The web process's entry point imports the model stack before its threads start
    # (inference/warmup.py).
    ("finetune_hub.wsgi", "inference"),
    ("finetune_hub.gunicorn.conf", "inference"),
    # The home page (the Overview) lists the user's datasets, runs queued or training, and
    # registered models.
    ("finetune_hub.views", "datasets_app"),
    ("finetune_hub.views", "experiments"),
    ("finetune_hub.views", "registry"),
}


def _modules():
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            yield name.removesuffix(".__init__"), ast.parse(path.read_text())


def _imports(tree, top_level_only: bool):
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


def _layer(module: str) -> int | None:
    top = module.split(".")[0]
    return LAYERS.index(top) if top in LAYERS else None


def _graph(top_level_only: bool, modules: dict | None = None) -> dict[str, set[str]]:
    modules = dict(_modules()) if modules is None else modules
    graph = {}
    for name, tree in modules.items():
        targets = set()
        for module, names in _imports(tree, top_level_only):
            # "from package import module" names a module; "from module import name" does not.
            candidates = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
            targets.update(candidates or ([module] if module in modules else []))
        graph[name] = targets - {name}
    return graph


def test_no_layer_imports_a_higher_one():
    offending = []
    for name, targets in _graph(top_level_only=False).items():
        for target in targets:
            if _layer(target) > _layer(name) and (name, target.split(".")[0]) not in ALLOWED_UPWARD:
                offending.append(f"{name} imports {target}")
    assert offending == []


def test_no_import_cycle_at_import_time():
    graph = _graph(top_level_only=True)
    cycles = []

    def visit(node, path, on_path, done):
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_path:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in done:
                on_path.add(nxt)
                visit(nxt, [*path, nxt], on_path, done)
                on_path.discard(nxt)
        done.add(node)

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, [start], {start}, done)
    assert cycles == []


def test_the_checker_sees_a_planted_upward_import():
    """The checks above parse what they claim to: a model layer importing registry is found."""
    tree = ast.parse("from registry.models import Alias\n")
    (module, names) = next(_imports(tree, top_level_only=True))
    assert (module, names) == ("registry.models", ["Alias"])
    assert _layer(module) > _layer("datasets_app.models")


# The worker side of experiments (the training process and the rules its services consult)
# is reached through experiments' front door only: services, selectors, models, schemas.
PRIVATE_PACKAGES = {"experiments.training": "experiments"}


def test_no_module_outside_its_app_imports_a_private_package():
    offending = []
    for name, tree in _modules():
        for module, names in _imports(tree, top_level_only=False):
            targets = [module, *(f"{module}.{n}" for n in names)]
            for private, owner in PRIVATE_PACKAGES.items():
                reaches = any(t == private or t.startswith(f"{private}.") for t in targets)
                if reaches and name.split(".")[0] != owner:
                    offending.append(f"{name} imports {module}")
    assert offending == []


def test_the_checker_sees_a_planted_private_import():
    tree = ast.parse("def f():\n    from experiments.training import engine\n")
    assert list(_imports(tree, top_level_only=False)) == [("experiments.training", ["engine"])]
    tree = ast.parse("from experiments import training\n")
    module, names = next(_imports(tree, top_level_only=True))
    assert any(f"{module}.{n}".startswith("experiments.training") for n in names)


# Import loops, imports inside functions included. Such an import defers a loop to the first
# call, it does not remove it: the two modules still need each other. So there is none, not
# between apps, not through a tasks.py, not inside an app. A Huey task's wrapper imports the
# worker side inside the function; the worker side sends the task its app's AppConfig.ready
# keeps (apps.get_app_config), never by importing tasks.py; a service reaches the worker
# side's dispatch, not the task.


def _loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's import loops: each set of modules that reach one another (a strongly
    connected component of more than one module, Tarjan's algorithm), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    loops = []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = stack[stack.index(node) :]
            del stack[stack.index(node) :]
            if len(component) > 1:
                loops.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(loops)


def test_no_import_loop_even_through_imports_inside_functions():
    assert _loops(_graph(top_level_only=False)) == []


def test_no_module_imports_a_tasks_module_at_import_time():
    """Huey's consumer imports each app's tasks.py itself; anything else that needs a task
    imports it inside a function (an app's ready(), another app's task)."""
    offending = [
        f"{name} imports {target}"
        for name, targets in _graph(top_level_only=True).items()
        for target in targets
        if target.endswith(".tasks")
    ]
    assert offending == []


def test_the_checker_sees_a_planted_loop_through_imports_inside_functions():
    """A task's wrapper and the queue that imports the task back, and a loop across apps
    (quotas counting an app's rows), are found, though neither shows at import time."""
    planted = {
        name: ast.parse(source)
        for name, source in {
            "experiments.tasks": "def f():\n    from experiments.training import queue\n",
            "experiments.training.queue": "def f():\n    from experiments import tasks\n",
            "experiments.services": "from finetune_hub import quotas\n",
            "finetune_hub.quotas": "def f():\n    from evaluation.models import EvaluationRun\n",
            "evaluation.models": "from evaluation.subjects import Subject\n",
            "evaluation.subjects": "def f():\n    from experiments.services import run_enqueue\n",
        }.items()
    }
    assert _loops(_graph(top_level_only=False, modules=planted)) == [
        ["evaluation.models", "evaluation.subjects", "experiments.services", "finetune_hub.quotas"],
        ["experiments.tasks", "experiments.training.queue"],
    ]
    assert _loops(_graph(top_level_only=True, modules=planted)) == []
