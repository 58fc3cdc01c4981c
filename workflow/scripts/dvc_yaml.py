"""Generate dvc.yaml from params/, for the profile in params/pipeline.yaml, so DVC and Snakemake
share one registry.

    python workflow/scripts/dvc_yaml.py                  # regenerate dvc.yaml
    python workflow/scripts/dvc_yaml.py --profile smoke  # switch profile: pipeline.yaml, dvc.yaml
    python workflow/scripts/dvc_yaml.py --check          # fail when dvc.yaml is stale

DVC's stage list is fixed when dvc.yaml is written, and which trials a profile runs (its seeds,
which rows resolve to one config) depends on the profile: so dvc.yaml is written for one
profile, and the first stage runs `--check` so that a profile set any other way
(`dvc exp run -S params/pipeline.yaml:profile=...`) or an edited table stops the run with the
command that fixes it, instead of training another profile's trials.

One stage per distinct config, as Snakemake: trials whose configs resolve the same from params/
share a stage, named after the config's first trial over every table (as its MLflow run is).
Each stage declares the params keys it reads, so an eval edit re-evaluates only and an optim
edit retrains without re-preparing.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

from simsiam_lab.codedeps import rendering_code, training_code
from simsiam_lab.config import EVALUATION
from simsiam_lab.errors import ConfigError
from simsiam_lab.rundir import CURVES, IndexFiles, ReportFiles, RunDir
from simsiam_lab.study import Params, Trial

HEADER = "# Generated from params/ by `python workflow/scripts/dvc_yaml.py`; do not edit.\n"
PROFILE_LINE = "# Profile: {}\n"
SWITCH = "python workflow/scripts/dvc_yaml.py --profile {}"
LIBRARY = "src/simsiam_lab"
# What the training and the report stages depend on, from the library's imports (codedeps.py)
TRAINING_CODE = [f"src/{path}" for path in training_code()]
REPORT_CODE = [f"src/{path}" for path in rendering_code()]
# The page `dvc plots show` renders into, with Vega inlined (.dvc/config: plots.html_template)
PLOTS_PAGE = "data/dvc/plots.html"
INDEX = IndexFiles.of()


def pipeline(params: Params) -> dict:
    return yaml.safe_load((params.root / "pipeline.yaml").read_text())


def runs(params: Params, profile: str, tables: list[str]) -> dict[str, list[Trial]]:
    """Stage key -> the trials of `tables` that train its config. The key is the config's first
    trial over every table (`<table>-<row>-s<seed>`), so it does not change with `tables`."""
    out: dict[str, list[Trial]] = {}
    for trials in params.plan(profile, params.table_names(), read_data=False).values():
        if used := [t for t in trials if t.row.table in tables]:
            out[trials[0].key] = used
    return out


def _keys(file: str, keys: list[str]) -> list[dict]:
    """A params entry naming these keys of the file; none when there are none (DVC reads an
    empty list as the whole file)."""
    return [{file: keys}] if keys else []


class Stages:
    """dvc.yaml's stages for one profile."""

    def __init__(self, params: Params, profile: str, settings: dict) -> None:
        """`settings`: params/pipeline.yaml's (the tables; the encoder switch)."""
        self.params, self.profile, self.tables = params, profile, settings["tables"]
        self.prepared = f"data/dvc/{profile}"
        self.source = f"data/dvc/{profile}.source.json"
        self.runs_root = f"results/{profile}/dvc"
        # Where each config trains, by its hash, as Snakemake's runs do: a stage's directory
        # under runs_root is a view of it (its files linked), so a config trains once.
        self.store = f"results/{profile}/runs"
        self.table_args = "".join(f" --table {t}" for t in self.tables)
        # Not a config: a switch in the plan stage's command, so changing it retrains nothing.
        self.encoder_artifact = str(settings.get("encoder_artifact", True)).lower()
        self.runs = runs(params, profile, self.tables)
        self.run_of = {t.ref: key for key, trials in self.runs.items() for t in trials}
        data = params.resolve_params(profile)["data"]
        self.class_list = [data["class_list"]] if data["class_list"] else []

    def run_dir(self, key: str) -> RunDir:
        return RunDir(f"{self.runs_root}/{key}")

    def settings(self, sections: list[str]) -> list[dict]:
        """The baseline's and the profile's keys of these config sections."""
        overrides = self.params.profile(self.profile)
        return [
            {"params/baseline.yaml": sections},
            *_keys(
                "params/profiles.yaml",
                [f"{self.profile}.overrides.{s}" for s in sections if s in overrides],
            ),
        ]

    def all(self) -> dict:
        training = [k for k in self.params.baseline if k != EVALUATION]
        stages: dict = {
            # Runs every time and rewrites the same bytes unless the data source changed: DVC
            # cannot see $SIMSIAM_DATA, but it sees this file, so other data re-prepares.
            # Persisted: the record it finds unchanged spares it re-checking the source.
            "source": {
                "cmd": "python workflow/scripts/dvc_yaml.py --check && "
                f"simsiam source --profile {self.profile} --out {self.source}",
                "always_changed": True,
                "params": [{"params/pipeline.yaml": ["profile"]}, *self.settings(["data"])],
                "outs": [{self.source: {"cache": False, "persist": True}}],
            },
            "prepare": {
                "cmd": f"simsiam prepare --profile {self.profile} --out {self.prepared}"
                f" --source-record {self.source}",
                # data.class_list's file: editing the list re-prepares
                "deps": [self.source, f"{LIBRARY}/data.py", *self.class_list],
                "params": self.settings(["data"]),
                "outs": [self.prepared],
            },
            # Each run's config, eval settings and plan, into its directory, which its stages
            # read (runplan.py). Run every time, as `source` is (it reads all of params/), and
            # each file's content decides what reruns after it. Outs, not persisted: DVC deletes
            # them first, so a run whose config changed (`dvc exp run -S`) is planned afresh.
            "plan": {
                "cmd": f"simsiam plan --profile {self.profile} --out {self.runs_root}"
                f" --dirs first-trial{self.table_args} --source-record {self.source}"
                f" --encoder-artifact {self.encoder_artifact}",
                "always_changed": True,
                "deps": [self.source],
                "outs": [
                    {str(path): {"cache": False}}
                    for key in self.runs
                    for path in self.run_dir(key).planned()
                ],
            },
            "pretrain": {"foreach": {}, "do": {}},
            "evaluate": {"foreach": list(self.runs), "do": self.evaluate()},
            "plots-page": {
                "cmd": f"python workflow/scripts/dvc_plots_page.py {PLOTS_PAGE}",
                "deps": ["workflow/scripts/dvc_plots_page.py"],
                "outs": [{PLOTS_PAGE: {"cache": False}}],
            },
        }
        stages["pretrain"] = {
            "foreach": {
                key: {"table": trials[0].row.table, "row": trials[0].row.id, "seed": trials[0].seed}
                for key, trials in self.runs.items()
            },
            "do": self.pretrain(training),
        }
        for name in self.tables:
            stages[f"report-{name}"] = self.report(name)
        stages["index"] = self.index()
        # The sequential study's next look: the seeds its waiting claims need, written to
        # params/seeds/PROFILE.yaml. This file is generated from that one, so after a look
        # that adds trials the next `dvc repro` stops at --check until it is regenerated.
        stages["next-look"] = {
            "cmd": f"simsiam seeds --profile {self.profile} --reports reports",
            "deps": [str(ReportFiles.of(t).summary) for t in self.tables],
        }
        return stages

    def pretrain(self, training: list[str]) -> dict:
        run = self.run_dir("${key}")
        return {
            "cmd": f"simsiam pretrain --out {run.root} --store {self.store} --data {self.prepared}"
            # $DVC_EXP_NAME: set by `dvc exp run`, empty under `dvc repro`. $PPID: DVC, whose
            # shell runs the command, so a killed `dvc repro` leaves no training behind.
            ' --engine dvc --experiment "$DVC_EXP_NAME" --stop-with $PPID',
            "deps": [self.prepared, str(run.config), *TRAINING_CODE],
            # What training reads, as it reads it from config.yaml: the columns of `dvc exp
            # show` and `dvc params diff`. An eval setting re-evaluates, it never retrains.
            "params": [
                *self.settings(training),
                {"params/tables/${item.table}.yaml": ["rows.${item.row}.overrides"]},
            ],
            "outs": list(map(str, run.trained())),
        }

    def evaluate(self) -> dict:
        run = self.run_dir("${item}")
        return {
            # It reads the eval settings from the run's eval.json, which the plan stage (always
            # run, before pretraining) writes from the params below: those are what rerun it,
            # and no file of the run is a dependency twice (each is a column of `dvc exp show`).
            "cmd": f"simsiam evaluate --run {run.root} --store {self.store} --data {self.prepared}"
            " --stop-with $PPID",
            "deps": [
                self.prepared,
                str(run.config),
                str(run.checkpoint),
                str(run.summary),
                *TRAINING_CODE,
            ],
            "params": self.settings([EVALUATION]),
            "outs": [str(run.metrics)],
        }

    def trials(self, table: str) -> list[Trial]:
        return [
            trial
            for row in self.params.table(table).rows.values()
            for trial in self.params.row_trials(self.profile, row)
        ]

    def report(self, table: str) -> dict:
        trials = self.trials(table)
        dirs = [self.run_dir(self.run_of[t.ref]) for t in trials]
        run_args = " ".join(f"--run {t.row.id}={d.root}" for t, d in zip(trials, dirs, strict=True))
        files = ReportFiles.of(table)
        return {
            "cmd": f"simsiam report --profile {self.profile} --table {table}"
            f" --data {self.prepared} {run_args} --out {files.page}",
            # The table file is a dependency, not params: its labels, paper numbers and claim
            # texts are not settings to compare across experiments.
            "deps": [
                *sorted({str(d.metrics) for d in dirs}),
                *sorted({str(d.history) for d in dirs}),
                f"params/tables/{table}.yaml",
                *REPORT_CODE,
                PLOTS_PAGE,  # so that `dvc plots show` after any report finds its page
            ],
            # In DVC's cache (reports/ is git-ignored), so that every revision and experiment
            # has its own: `dvc plots diff` reads each revision's curves, `dvc checkout` and
            # `dvc exp apply` bring its reports back.
            # Persisted: DVC keeps them while the stage runs, and `simsiam report` replaces
            # them all at its end, so a report that fails leaves the previous one in place.
            "outs": [{str(path): {"persist": True}} for path in files.outputs],
            # numbers only, per row: what `dvc exp show` and `dvc metrics diff` compare
            "metrics": [{str(files.metrics): {"persist": True}}],
        }

    def index(self) -> dict:
        summaries = [ReportFiles.of(t) for t in self.tables]
        return {
            "cmd": "simsiam index "
            + " ".join(str(files.summary) for files in summaries)
            + f" --out {INDEX.page}",
            "deps": [str(path) for files in summaries for path in files.index_inputs] + REPORT_CODE,
            "outs": list(map(str, INDEX.outputs)),
        }

    def plots(self) -> list[dict]:
        """Per table: one plot per quantity per epoch, a series per row (its first trial), and
        the linear accuracy beside the paper's."""
        out: list[dict] = []
        for name in self.tables:
            rows = [row.label for row in self.params.table(name).rows.values()]
            for quantity, label in CURVES.items():
                out.append(
                    {
                        # short names, for `dvc plots show NAME`; DVC's page puts them in a JS
                        # string as they are, so no quote either
                        f"{name}: {quantity}": {
                            "title": f"{name}: {label} per epoch, first seed of each row",
                            "template": "rows",  # .dvc/plots/rows.json: a colour per row
                            "x": "epoch",
                            "y": {str(ReportFiles.of(name).curve_table(quantity)): rows},
                            "x_label": "epoch",
                            "y_label": label,
                        }
                    }
                )
            out.append(
                {
                    f"{name}: accuracy": {
                        "title": f"{name}: linear accuracy (%), paper, ours, random init",
                        # .dvc/plots/accuracy.json: coloured by paper, ours and random
                        # init, a revision's bars beside another's (shaded by revision)
                        "template": "accuracy",
                        "x": "accuracy",
                        "y": {str(ReportFiles.of(name).accuracy): "row"},
                        "x_label": "linear top-1 accuracy (%)",
                        "y_label": "row",
                    }
                }
            )
        return out


def render(params: Params, profile: str | None = None) -> str:
    settings = pipeline(params)
    profile = profile or settings["profile"]
    stages = Stages(params, profile, settings)
    doc = {"stages": stages.all(), "plots": stages.plots()}
    body = yaml.safe_dump(doc, sort_keys=False, width=1000, allow_unicode=True)
    return HEADER + PROFILE_LINE.format(profile) + body


def generated_profile(text: str) -> str | None:
    found = re.search(r"^# Profile: (\S+)$", text, re.MULTILINE)
    return found and found.group(1)


def set_profile(params: Params, profile: str) -> None:
    """params/pipeline.yaml's profile line, edited in place (its comments stay)."""
    params.profile(profile)  # refuses an unknown name
    path = params.root / "pipeline.yaml"
    text, count = re.subn(
        r"^profile:\s*\S+", f"profile: {profile}", path.read_text(), count=1, flags=re.M
    )
    if not count:
        raise ConfigError(f"{path}: no top-level 'profile:' line to set")
    path.write_text(text)


def check(params: Params, dvc_yaml: Path) -> str | None:
    """Why dvc.yaml does not match params/, or None."""
    wanted = pipeline(params)["profile"]
    written = dvc_yaml.read_text() if dvc_yaml.is_file() else ""
    if written == render(params):
        return None
    made_for = generated_profile(written)
    if made_for and made_for != wanted:
        return (
            f"dvc.yaml lists the trials of profile {made_for}, but params/pipeline.yaml asks for "
            f"{wanted} (DVC's stage list cannot follow a parameter, so `-S profile=...` cannot "
            f"switch it): switch with `{SWITCH.format(wanted)}`, then `dvc exp run`"
        )
    return (
        "dvc.yaml is stale (params/ or the library's imports changed); regenerate: "
        "python workflow/scripts/dvc_yaml.py"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if dvc.yaml is stale")
    parser.add_argument("--profile", help="set params/pipeline.yaml's profile first")
    parser.add_argument("--params", default="params")
    args = parser.parse_args()
    params = Params(args.params)
    dvc_yaml = Path("dvc.yaml")
    try:
        if args.check:
            if problem := check(params, dvc_yaml):
                print(f"dvc_yaml.py: {problem}", file=sys.stderr)
                return 1
            return 0
        if args.profile:
            set_profile(params, args.profile)
        dvc_yaml.write_text(render(params))
    except ConfigError as err:
        print(f"dvc_yaml.py: error: {err}", file=sys.stderr)
        return 2
    settings = pipeline(params)
    count = len(runs(params, settings["profile"], settings["tables"]))
    print(f"dvc.yaml: profile {settings['profile']}, {count} pretrain stages", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
