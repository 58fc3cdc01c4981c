"""Which of the library's files a command reads, found from the imports themselves: what a
pipeline stage depends on (Snakemake's report rules, dvc.yaml's stages), so that an edit reruns
the stages it can change and no others."""

from __future__ import annotations

import ast
from pathlib import Path

LIBRARY = Path(__file__).parent


def imports(name: str) -> list[str]:
    """The library modules a file of this package imports, at any depth of its code (a lazy
    import inside a function counts: the command that runs it reads that module)."""
    found = []
    for node in ast.walk(ast.parse((LIBRARY / name).read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found += [
                f"{m}.py" for m in ([node.module] if node.module else [a.name for a in node.names])
            ]
    return found


def closure(start: list[str], exclude: tuple[str, ...] = ()) -> list[str]:
    """`start` and every library module it reaches, sorted, as paths under src/; `exclude`:
    modules left out with what only they reach."""
    found, todo = set(), list(start)
    while todo:
        name = todo.pop()
        if name in found or name in exclude:
            continue
        found.add(name)
        if name.endswith(".py"):
            todo += imports(name)
    return [f"{LIBRARY.name}/{name}" for name in sorted(found)]


def rendering_code() -> list[str]:
    """What a report is rendered with: report.py, what it reaches, and its templates. An edit
    to any of them re-renders the reports and retrains nothing."""
    templates = sorted(f"templates/{p.name}" for p in (LIBRARY / "templates").glob("*.j2"))
    return closure(["report.py"]) + [f"{LIBRARY.name}/{t}" for t in templates]


def training_code() -> list[str]:
    """What `simsiam pretrain` and `simsiam evaluate` run: all the CLI reaches, and the config
    schema it checks runs against, but the report code (its commands' own, and the curves a
    pretraining draws once it is done): a report edit then retrains nothing."""
    return closure(["__init__.py", "cli.py", "config.schema.yaml"], exclude=("report.py",))
