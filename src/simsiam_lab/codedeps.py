"""Which of the library's files a command reads, found from the imports themselves: what a
pipeline stage depends on (Snakemake's report rules, dvc.yaml's stages), so that an edit reruns
the stages it can change and no others."""

from __future__ import annotations

import ast
from pathlib import Path

from .config import digest

LIBRARY = Path(__file__).parent


def _module_file(package: list[str], module: str | None, name: str) -> str | None:
    """The library file (relative to LIBRARY) that `from <package-relative module> import name`
    reads: the module `name` itself where it is one, else the module, or the package's
    __init__.py."""
    parts = package + (module.split(".") if module else [])
    if (LIBRARY / "/".join([*parts, name])).with_suffix(".py").is_file():
        return "/".join([*parts, name]) + ".py"
    path = "/".join(parts)
    if parts and (LIBRARY / f"{path}.py").is_file():
        return f"{path}.py"
    if parts and (LIBRARY / path / "__init__.py").is_file():
        return f"{path}/__init__.py"
    return None


def imports(name: str) -> list[str]:
    """The library files a file of this package imports, at any depth of its code (a lazy
    import inside a function counts: the command that runs it reads that module)."""
    package = name.split("/")[:-1]
    found = []
    for node in ast.walk(ast.parse((LIBRARY / name).read_text())):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        base = package[: len(package) - (node.level - 1)]
        for alias in node.names:
            if (path := _module_file(base, node.module, alias.name)) is not None:
                found.append(path)
    return sorted(set(found))


def closure(start: list[str]) -> list[str]:
    """`start` and every library file it reaches, sorted, as paths under src/."""
    found, todo = set(), list(start)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        if "/" in name:  # a subpackage's __init__ runs before any module of it
            todo.append(f"{name.rpartition('/')[0]}/__init__.py")
        if name.endswith(".py"):
            todo += imports(name)
    return [f"{LIBRARY.name}/{name}" for name in sorted(found)]


def rendering_code() -> list[str]:
    """What a report is rendered with: the report commands, what they reach, and the templates.
    An edit to any of them re-renders the reports and retrains nothing."""
    templates = sorted(f"templates/{p.name}" for p in (LIBRARY / "templates").glob("*.j2"))
    return closure(["verdicts/report.py"]) + [f"{LIBRARY.name}/{t}" for t in templates]


def training_code() -> list[str]:
    """What `simsiam pretrain` and `simsiam evaluate` run: the training commands (jobs.py) and
    all they reach, the config schema they check runs against, and the command line's own
    parser (cli.py, whose other commands, the reports, are not followed)."""
    training = closure(["__init__.py", "jobs.py", "config.schema.yaml"])
    return sorted([*training, f"{LIBRARY.name}/cli.py"])


def training_code_digest() -> str:
    """The content of training_code() as one digest, recorded with each training: a run that
    other code trained is not taken for this code's (jobs.pretrain_run's store)."""
    return digest({path: (LIBRARY.parent / path).read_text() for path in training_code()})
