"""The library's layers, held against its imports: each module imports only from its own layer
or those below, and no import (lazy ones included) closes a circle. A new module must be placed
in a layer here, which is the README's layout in code."""

from simsiam_lab.codedeps import LIBRARY, imports

# Top to bottom. A module may import from its own layer (without a circle) and any below it.
LAYERS = {
    "commands": ["cli.py", "jobs.py", "verdicts/report.py"],
    "verdicts": [
        "verdicts/__init__.py",
        "verdicts/plots.py",
        "verdicts/page.py",
        "verdicts/index.py",
        "verdicts/judge.py",
        "verdicts/compare.py",
        "verdicts/allocation.py",
        "verdicts/sequential.py",
        "verdicts/votes.py",
        "verdicts/rules.py",
        "verdicts/verdict.py",
        "verdicts/results.py",
        "verdicts/collapse.py",
        "verdicts/stability.py",
        "verdicts/stats.py",
        "verdicts/render.py",
    ],
    "training": [
        "train.py",
        "evaluate.py",
        "batches.py",
        "stream.py",
        "augment.py",
        "target.py",
        "model.py",
        "loss.py",
        "distributed.py",
        "curves.py",
        "schedule.py",
        "track.py",
    ],
    "study": ["study.py", "claims.py"],
    "data": ["data.py", "datasource.py"],
    "base": [
        "runplan.py",
        "config.py",
        "rundir.py",
        "progress.py",
        "errors.py",
        "codedeps.py",
        "__init__.py",
    ],
}
FLOOR = {module: -i for i, modules in enumerate(LAYERS.values()) for module in modules}


def _graph() -> dict[str, list[str]]:
    files = sorted(str(p.relative_to(LIBRARY)) for p in LIBRARY.rglob("*.py"))
    return {f: imports(f) for f in files}


def _circle(graph: dict[str, list[str]]) -> list[str] | None:
    """One import circle, as the modules along it, or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = "done"
        return None

    for node in graph:
        if node not in state and (found := visit(node, [node])):
            return found
    return None


def test_every_module_has_a_layer():
    assert sorted(_graph()) == sorted(FLOOR)


def test_no_import_runs_up_a_layer():
    up = [
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in targets
        if FLOOR[target] > FLOOR[module]
    ]
    assert not up


def test_no_import_circle():
    assert _circle(_graph()) is None


def test_the_check_sees_a_circle():
    assert _circle({"a.py": ["b.py"], "b.py": ["c.py"], "c.py": ["a.py"]}) == [
        "a.py",
        "b.py",
        "c.py",
        "a.py",
    ]
    assert _circle({"a.py": ["b.py"], "b.py": []}) is None
