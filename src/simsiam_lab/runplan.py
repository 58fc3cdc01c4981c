"""A run's plan, the one way a job receives its config from outside: the plan step writes it
into each run directory, and `RunPlan.read` is the one validating loader of it.

Three files, split by what may rerun what. `config.yaml` is the training config, whose hash is
the run's identity (its directory's name): it never changes for a directory, so pretraining
depends on it alone. `eval.json` is the eval settings, on which evaluation alone depends.
`plan.json` is what the pipeline asks of the run beyond them (the profile, the table rows that
share the config, the encoder artifact): rewriting it reruns nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import yaml

from .config import EVALUATION, RunConfig, config_hash, load_yaml, training_config, validate
from .errors import ConfigError, DataError
from .rundir import RunDir, atomic_write


@dataclass(frozen=True)
class RunPlan:
    profile: str
    config: RunConfig  # eval settings included
    trials: tuple[str, ...]  # TABLE:ROW@SEED of every table row that trains this config
    encoder_artifact: bool  # log the trained backbone on the MLflow run

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)

    @property
    def rows(self) -> tuple[str, ...]:
        """The trials' rows, TABLE:ROW (the first is the one a run is asked for and logged as)."""
        return tuple(ref.rpartition("@")[0] for ref in self.trials)

    def texts(self) -> dict[str, str]:
        """Each file's content, by file name."""
        planned = {
            "profile": self.profile,
            "config_hash": self.config_hash,
            "trials": list(self.trials),
            "encoder_artifact": self.encoder_artifact,
        }
        evaluation = self.config.to_dict()[EVALUATION]
        return {
            "config.yaml": yaml.safe_dump(self.config.training(), sort_keys=False),
            "eval.json": json.dumps(evaluation, indent=2) + "\n",
            "plan.json": json.dumps(planned, indent=2) + "\n",
        }

    def write(self, rundir: RunDir) -> int:
        """Writes the files whose content differs (the others keep their time stamps); how
        many. A directory that holds another config's run is refused: training here would
        overwrite it."""
        if rundir.config.is_file() and _trained(rundir) != self.config.training():
            raise ConfigError(
                f"{rundir.root} holds the run of another config ({rundir.config}); to train "
                f"this one, pick another --out or delete {rundir.root}"
            )
        rundir.root.mkdir(parents=True, exist_ok=True)
        written = 0
        for name, text in self.texts().items():
            path = rundir.root / name  # rundir.config, .evaluation, .plan
            if not path.is_file() or path.read_text() != text:
                atomic_write(path, lambda tmp, text=text: tmp.write_text(text))
                written += 1
        return written

    @classmethod
    def read(cls, rundir: RunDir) -> RunPlan:
        """The plan in a run directory, checked: its three files, the schema, and that
        plan.json was written for this config.yaml."""
        plan = rundir.plan
        if missing := [p.name for p in rundir.planned() if not p.is_file()]:
            raise DataError(
                f"{rundir.root}: no plan ({', '.join(missing)} missing); name a row "
                f"(`simsiam pretrain --profile P --row TABLE:ROW --out {rundir.root}`), or let "
                "the pipeline's plan step write it (snakemake, dvc repro)"
            )
        trained = _trained(rundir)
        try:
            planned = json.loads(plan.read_text())
            profile, trials = planned["profile"], planned["trials"]
            artifact = planned["encoder_artifact"]
            evaluation = json.loads(rundir.evaluation.read_text())
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                f"{rundir.root}: plan.json or eval.json unreadable (expected the plan step's "
                "JSON); delete them and run the plan step again"
            ) from None
        if planned.get("config_hash") != config_hash(trained):
            raise ConfigError(
                f"{plan} was written for config {planned.get('config_hash')}, but "
                f"{rundir.config} is config {config_hash(trained)}; run the plan step again"
            )
        cfg = trained | {EVALUATION: evaluation}
        validate(cfg, f"{rundir.config} with {rundir.evaluation}")
        return cls(profile, RunConfig.of(cfg), tuple(map(str, trials)), bool(artifact))


def _trained(rundir: RunDir) -> dict:
    found = load_yaml(rundir.config)
    if not isinstance(found, dict):
        raise ConfigError(f"{rundir.config}: expected a config mapping; delete it and plan again")
    return training_config(found)
