"""Generate dvc.yaml from params/ so DVC and Snakemake share one registry.

    python workflow/scripts/dvc_yaml.py > dvc.yaml      # regenerate
    python workflow/scripts/dvc_yaml.py --check         # fail when dvc.yaml is stale (CI)

DVC's paths must be static, so a DVC run is keyed by its row's overrides and seed rather than by
the resolved-config hash (which depends on the profile): rows with the same overrides share a
stage. The seeds are those of the profile named in params/pipeline.yaml (`trials`): regenerate
after changing it there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from simsiam_lab.config import EVALUATION, Params, Trial, deep_merge
from simsiam_lab.rundir import RunDir

HEADER = (
    "# Generated from params/ by `python workflow/scripts/dvc_yaml.py > dvc.yaml`; do not edit.\n"
)
# DVC's outputs are kept apart from Snakemake's, so a `dvc checkout` (which rewrites mtimes)
# never makes Snakemake's runs look stale.
PREPARED = "data/dvc/${profile}"
SOURCE = "data/dvc/${profile}.source.json"
RUNS = "results/${profile}/dvc"
RUN = RunDir(f"{RUNS}/${{key}}")  # a pretrain stage's run directory
EVALUATED = RunDir(f"{RUNS}/${{item}}")  # an evaluate stage's
LIBRARY = "src/simsiam_lab"
# What `simsiam pretrain` and `simsiam evaluate` import (tests/test_cli.py checks this against
# the imports): a report or template edit then re-renders reports without retraining.
TRAINING_CODE = [
    f"{LIBRARY}/{name}"
    for name in (
        "__init__.py",
        "augment.py",
        "batches.py",
        "cli.py",
        "config.py",
        "config.schema.yaml",
        "data.py",
        "distributed.py",
        "evaluate.py",
        "loss.py",
        "model.py",
        "progress.py",
        "rundir.py",
        "stream.py",
        "target.py",
        "track.py",
        "train.py",
    )
]


def pipeline(params: Params) -> dict:
    return yaml.safe_load((params.root / "pipeline.yaml").read_text())


def run_keys(
    params: Params, profile: str, tables: list[str]
) -> tuple[dict[str, str], dict[str, Trial]]:
    """Trial ref -> stage key, and stage key -> the first trial (same overrides and seed)."""
    keys: dict[str, str] = {}
    firsts: dict[str, Trial] = {}
    by_identity: dict[str, str] = {}
    for name in tables:
        for row in params.table(name).rows.values():
            for trial in params.row_trials(profile, row):
                identity = json.dumps([row.overrides, trial.seed], sort_keys=True)
                key = by_identity.setdefault(identity, f"{row.table}-{row.id}-s{trial.seed}")
                keys[trial.ref] = key
                firsts.setdefault(key, trial)
    return keys, firsts


def stages(params: Params) -> dict:
    settings = pipeline(params)
    profile, tables = settings["profile"], settings["tables"]
    keys, firsts = run_keys(params, profile, tables)
    # From params alone, not Params.resolve: dvc.yaml must not depend on where the data is.
    data = deep_merge(params.baseline, params.profile(profile), profile)["data"]
    class_list = [data["class_list"]] if data["class_list"] else []

    def profile_params() -> list[dict]:  # fresh dicts: shared ones would become YAML anchors
        return [{"params/pipeline.yaml": ["profile"]}, {"params/profiles.yaml": None}]

    foreach = {
        key: {
            "args": f"--row {t.row.ref} --seed {t.seed}",
            "table": t.row.table,
            "overrides": f"rows.{t.row.id}.overrides",
        }
        for key, t in firsts.items()
    }
    out: dict = {
        # Runs every time and rewrites the same bytes unless the data source changed: DVC
        # cannot see $SIMSIAM_DATA, but it sees this file, so other data re-prepares.
        "source": {
            "cmd": f"simsiam source --profile ${{profile}} --out {SOURCE}",
            "always_changed": True,
            "params": profile_params(),
            "outs": [{SOURCE: {"cache": False}}],
        },
        "prepare": {
            "cmd": f"simsiam prepare --profile ${{profile}} --out {PREPARED}",
            # data.class_list's file: editing the list re-prepares
            "deps": [SOURCE, "src/simsiam_lab/data.py", *class_list],
            "params": [*profile_params(), {"params/baseline.yaml": ["data"]}],
            "outs": [PREPARED],
        },
        "pretrain": {
            "foreach": foreach,
            "do": {
                "cmd": (
                    f"simsiam pretrain --profile ${{profile}} ${{item.args}} --data {PREPARED}"
                    f" --out {RUNS}/${{key}}"
                ),
                "deps": [PREPARED, *TRAINING_CODE],
                "params": [
                    *profile_params(),
                    # what training reads: an eval setting re-evaluates, it never retrains
                    {"params/baseline.yaml": [k for k in params.baseline if k != EVALUATION]},
                    {"params/tables/${item.table}.yaml": ["${item.overrides}"]},
                ],
                # history.csv is drawn by the top-level plots below
                "outs": [
                    str(path) for path in [*RUN.evaluation_inputs(), RUN.history, RUN.history_table]
                ],
            },
        },
        "evaluate": {
            "foreach": list(foreach),
            "do": {
                "cmd": (
                    f"simsiam evaluate --profile ${{profile}} --run {EVALUATED.root}"
                    f" --data {PREPARED}"
                ),
                "deps": [PREPARED, *map(str, EVALUATED.evaluation_inputs()), *TRAINING_CODE],
                "params": [*profile_params(), {"params/baseline.yaml": [EVALUATION]}],
                "outs": [str(EVALUATED.metrics)],
                # numbers only, cached: `dvc metrics diff` and `dvc exp show` compare them
                "metrics": [str(EVALUATED.scores)],
            },
        },
    }
    for name in tables:
        trials = [
            t for row in params.table(name).rows.values() for t in params.row_trials(profile, row)
        ]
        run_args = " ".join(f"--run {t.row.id}={RUNS}/{keys[t.ref]}" for t in trials)
        out[f"report-{name}"] = {
            "cmd": (
                f"simsiam report --profile ${{profile}} --table {name} --data {PREPARED} "
                f"{run_args} --out reports/{name}.md"
            ),
            "deps": [
                *sorted({str(RunDir(f"{RUNS}/{keys[t.ref]}").metrics) for t in trials}),
                "src/simsiam_lab/report.py",
                "src/simsiam_lab/rundir.py",
                "src/simsiam_lab/stats.py",
                "src/simsiam_lab/templates",
            ],
            "params": [{"params/pipeline.yaml": ["profile"]}, {f"params/tables/{name}.yaml": None}],
            "outs": [
                {f"reports/{name}.md": {"cache": False}},
                {f"reports/{name}.png": {"cache": False}},
                {f"reports/{name}.json": {"cache": False}},
                {f"reports/{name}.accuracy.csv": {"cache": False}},
                {f"reports/{name}.runs.csv": {"cache": False}},
            ],
        }
    out["index"] = {
        "cmd": "simsiam index "
        + " ".join(f"reports/{t}.json" for t in tables)
        + " --out reports/index.md",
        "deps": [f"reports/{t}.{s}" for t in tables for s in ("json", "runs.csv")]
        + ["src/simsiam_lab/templates"],
        "outs": [{"reports/index.md": {"cache": False}}, {"reports/runs.csv": {"cache": False}}],
    }
    return out


def plots(params: Params) -> list[dict]:
    """Per table: its runs' training curves, and its accuracy beside the paper's. (Per table,
    so that building one table draws its plots whole: a plot with a missing file draws nothing.)"""
    settings = pipeline(params)
    keys, _ = run_keys(params, settings["profile"], settings["tables"])
    out: list[dict] = []
    for name in settings["tables"]:
        runs = sorted({key for ref, key in keys.items() if ref.startswith(f"{name}:")})
        histories = [str(RunDir(f"{RUNS}/{key}").history_table) for key in runs]
        out += [
            {
                f"{name}: loss and std(z)·√d per epoch": {
                    "template": "linear",
                    "x": "epoch",
                    "y": {path: ["loss", "z_std_ratio"] for path in histories},
                }
            },
            {
                f"{name}: kNN accuracy per epoch": {
                    "template": "linear",
                    "x": "epoch",
                    "y": {path: ["knn"] for path in histories},
                }
            },
            {
                f"{name}: linear accuracy, paper vs ours": {
                    "template": "bar_horizontal",
                    "x": "accuracy",
                    "y": {f"reports/{name}.accuracy.csv": "bar"},
                }
            },
        ]
    return out


def render(params: Params) -> str:
    doc = {"vars": ["params/pipeline.yaml"], "stages": stages(params), "plots": plots(params)}
    body = yaml.safe_dump(doc, sort_keys=False, width=1000).replace(": null\n", ":\n")
    return HEADER + body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if dvc.yaml is stale")
    parser.add_argument("--params", default="params")
    args = parser.parse_args()
    text = render(Params(args.params))
    if not args.check:
        sys.stdout.write(text)
        return 0
    if Path("dvc.yaml").read_text() != text:
        print(
            "dvc.yaml is stale; regenerate: python workflow/scripts/dvc_yaml.py > dvc.yaml",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
