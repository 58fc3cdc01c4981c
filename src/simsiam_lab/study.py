"""The study: params/ as rows, trials and tables, resolved into run configs and planned into
the distinct configs (by hash) that the pipeline trains, each with the trials that use it."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from .claims import Claim
from .config import (
    EVALUATION,
    Config,
    RunConfig,
    check_schema,
    config_hash,
    deep_merge,
    flatten,
    load_yaml,
    schema_validator,
    validate,
)
from .datasource import ENV_VAR, class_list_identity, source_identity
from .errors import ConfigError

_TABLE_VALIDATOR = schema_validator("table.schema.yaml")


@dataclass(frozen=True)
class Row:
    table: str
    id: str
    label: str
    overrides: Config
    paper: float | str
    paper_note: str = ""
    seeds: tuple[int, ...] = ()  # the row's own trials; empty: the profile's count
    claimed: bool = False  # a claim names it, so its verdict rests on its seed noise

    @property
    def ref(self) -> str:
        return f"{self.table}:{self.id}"

    def trials(self, count: int = 1, allotted: int = 0) -> list[Trial]:
        """The row's seeds, else seeds 0..count-1 when a claim names the row, else seed 0: a
        difference needs an interval, and a collapse verdict from one seed can be luck. Then
        the next seeds up to `allotted` trials, where a sequential look asked for more."""
        seeds = list(self.seeds or range(count if self.claimed else 1))
        seeds += range(max(seeds) + 1, max(seeds) + 1 + allotted - len(seeds))
        return [Trial(self, seed) for seed in seeds]


@dataclass(frozen=True)
class Trial:
    """One training run of a row: the row's config with this seed."""

    row: Row
    seed: int

    @property
    def ref(self) -> str:
        return f"{self.row.ref}@{self.seed}"

    @property
    def key(self) -> str:
        """A name fit for a path: `table3-a-s0` (DVC's run directories and stage keys)."""
        return f"{self.row.table}-{self.row.id}-s{self.seed}"


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    section: str
    paper_setting: str
    columns: dict[str, str]
    rows: dict[str, Row]
    claims: list[Claim]

    @property
    def short_name(self) -> str:
        """The table as the paper names it, with its section ("Table 3 (§4.4)"): its title up
        to the colon, without the characters that could open markup where it is shown
        (a folder of `snakemake --report`, which puts it into a script)."""
        name = self.title.split(":")[0]
        name = f"{name} ({self.section})" if self.section else name
        return re.sub(r"[<>&\"'`\\]", "", name)


def _parse_table(name: str, raw: Any, path: Path) -> Table:
    check_schema(_TABLE_VALIDATOR, raw, str(path))
    rows = {}
    for row_id, spec in raw["rows"].items():
        rows[str(row_id)] = Row(
            table=name,
            id=str(row_id),
            label=spec.get("label", str(row_id)),
            overrides=spec["overrides"],
            paper=spec["paper"],
            paper_note=spec.get("paper_note", ""),
            seeds=tuple(spec.get("seeds") or ()),
        )
    claims = [
        Claim.parse(claim, rows, f"{path}: claims[{i}]")
        for i, claim in enumerate(raw.get("claims") or [])
    ]
    # The rows a claim rests on the seed noise of: not a refresh_longer_than row, only read.
    claimed = {row for claim in claims for row in (claim.row, claim.other) if row}
    rows = {row_id: replace(row, claimed=row_id in claimed) for row_id, row in rows.items()}
    return Table(
        name=name,
        title=raw.get("title", name),
        section=raw.get("section", ""),
        paper_setting=raw.get("paper_setting", ""),
        columns=raw.get("columns") or {},
        rows=rows,
        claims=claims,
    )


# The seeds a claimed row has at each look of the sequential study, unless a profile says.
DEFAULT_LOOKS = (3, 5, 8, 12)
# A profile's jobs and what each asks of a cluster, with each value's least: threads, memory
# (MB), time limit (minutes), GPUs.
JOBS = ("prepare", "pretrain", "evaluate")
RESOURCES = {"cpus": 1, "mem_mb": 1, "runtime": 1, "gpu": 0}


def _source_key(dataset: str, source: str | None) -> tuple[str, str | None, str | None]:
    """What a data fingerprint is of: the dataset, the config's source and $SIMSIAM_DATA."""
    return dataset, source, os.environ.get(ENV_VAR)


class Params:
    """The params/ directory: baseline.yaml, profiles.yaml and tables/<name>.yaml."""

    def __init__(self, root: Path | str = "params") -> None:
        self.root = Path(root)
        if not (self.root / "baseline.yaml").is_file():
            raise ConfigError(
                f"no params directory at {self.root.resolve()} (it holds baseline.yaml); run "
                "from the project root, or pass --params DIR"
            )
        self._sources: dict[tuple, str | None] = {}
        self._valid_profiles: set[str] = set()
        self._allotted: dict[str, dict[str, int]] = {}

    @cached_property
    def baseline(self) -> Config:
        path = self.root / "baseline.yaml"
        cfg = load_yaml(path)
        validate(cfg, str(path))
        return cfg

    @cached_property
    def profiles(self) -> dict[str, Config]:
        path = self.root / "profiles.yaml"
        raw = load_yaml(path)
        if not isinstance(raw, dict) or not raw:
            raise ConfigError(f"{path}: expected a mapping of profile names")
        return raw

    def profile(self, name: str) -> Config:
        if name not in self.profiles:
            raise ConfigError(
                f"unknown profile '{name}' (available: {', '.join(self.profiles)}; "
                f"defined in {self.root / 'profiles.yaml'})"
            )
        return self.profiles[name].get("overrides") or {}

    def description(self, profile: str) -> str:
        """What the profile is for (params/profiles.yaml: `description`)."""
        self.profile(profile)
        return str(self.profiles[profile].get("description") or "")

    def trials(self, profile: str) -> int:
        """Seeds per claimed row at this profile (params/profiles.yaml: `trials`)."""
        self.profile(profile)
        count = self.profiles[profile].get("trials", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(
                f"{self.root / 'profiles.yaml'}: {profile}.trials = {count!r}: must be an "
                "integer >= 1 (seeds per row that a claim names)"
            )
        return count

    def looks(self, profile: str) -> tuple[int, ...]:
        """The seeds a claimed row has at each look of the sequential study, the last its
        budget (params/profiles.yaml: `looks`, default 3, 5, 8, 12)."""
        self.profile(profile)
        found = self.profiles[profile].get("looks", list(DEFAULT_LOOKS))
        ok = (
            isinstance(found, list)
            and found
            and all(isinstance(n, int) and not isinstance(n, bool) for n in found)
        )
        if not ok or found[0] < 3 or found != sorted(set(found)):
            raise ConfigError(
                f"{self.root / 'profiles.yaml'}: {profile}.looks = {found!r}: must be a rising "
                "list of seed counts from 3 (the first look's paired t needs 3), e.g. "
                "[3, 5, 8, 12]; the last is the budget"
            )
        return tuple(found)

    def resources(self, profile: str) -> dict[str, dict[str, int]]:
        """What one job of each kind (prepare, pretrain, evaluate) asks of a cluster at this
        profile's scale
        (params/profiles.yaml: `resources`): {job: {cpus, mem_mb, runtime (minutes), gpu}}."""
        self.profile(profile)
        found = self.profiles[profile].get("resources")
        where = f"{self.root / 'profiles.yaml'}: {profile}.resources"
        example = "{prepare: {cpus: 1, mem_mb: 3000, runtime: 30, gpu: 0}, pretrain: ..., ...}"
        if not isinstance(found, dict) or set(found) != set(JOBS):
            raise ConfigError(f"{where}: expected one entry per job, {example}")
        for job, asked in found.items():
            if not isinstance(asked, dict) or set(asked) != set(RESOURCES):
                keys = ", ".join(RESOURCES)
                raise ConfigError(f"{where}.{job} = {asked!r}: expected keys {keys}")
            for key, least in RESOURCES.items():
                value = asked[key]
                if isinstance(value, bool) or not isinstance(value, int) or value < least:
                    raise ConfigError(
                        f"{where}.{job}.{key} = {value!r}: must be an integer >= {least}"
                    )
        return found

    def verdicts(self, profile: str) -> bool:
        """Whether the profile's runs can test the paper's claims (params/profiles.yaml:
        `verdicts`, true unless a plumbing profile says false): its reports judge none."""
        self.profile(profile)
        judged = self.profiles[profile].get("verdicts", True)
        if not isinstance(judged, bool):
            raise ConfigError(
                f"{self.root / 'profiles.yaml'}: {profile}.verdicts = {judged!r}: must be true "
                "or false (false: a profile that checks plumbing, whose reports judge no claim)"
            )
        return judged

    def seeds_file(self, profile: str) -> Path:
        """Where `simsiam seeds` records the trials its sequential looks allot each row at this
        profile, which Snakemake's plan and dvc.yaml both read."""
        return self.root / "seeds" / f"{profile}.yaml"

    def allotted(self, profile: str) -> dict[str, int]:
        """{TABLE:ROW: trials} from the profile's seeds file; empty where there is none."""
        if profile not in self._allotted:
            path = self.seeds_file(profile)
            found = (load_yaml(path) if path.is_file() else None) or {}
            if not isinstance(found, dict):
                raise ConfigError(f"{path}: expected a mapping of TABLE:ROW to a trial count")
            for ref, count in found.items():
                if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                    raise ConfigError(
                        f"{path}: {ref} = {count!r}: must be a whole number of trials >= 1; "
                        f"`simsiam seeds --profile {profile}` writes this file"
                    )
                self.row(str(ref))  # an unknown row: one line naming the rows there are
            self._allotted[profile] = {str(k): v for k, v in found.items()}
        return self._allotted[profile]

    def allot(self, profile: str, trials: dict[str, int]) -> None:
        """Plan with these allotted trials instead of the seeds file's (a look's dry run)."""
        self._allotted[profile] = dict(trials)

    def row_trials(self, profile: str, row: Row) -> list[Trial]:
        return row.trials(self.trials(profile), self.allotted(profile).get(row.ref, 0))

    def table_names(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "tables").glob("*.yaml"))

    def table(self, name: str) -> Table:
        path = self.root / "tables" / f"{name}.yaml"
        if not path.is_file():
            available = ", ".join(self.table_names())
            raise ConfigError(f"unknown table '{name}' (available: {available}; in {path.parent})")
        table = _parse_table(name, load_yaml(path), path)
        keys = flatten(self.baseline)
        for header, key in table.columns.items():
            if key not in keys:
                near = ", ".join(k for k in keys if k.split(".")[0] == key.split(".")[0])
                raise ConfigError(
                    f"{path}: columns.{header} = {key!r}: not a config key "
                    f"(keys of that section: {near or ', '.join(self.baseline)})"
                )
        return table

    def row(self, ref: str) -> Row:
        table, sep, row_id = ref.partition(":")
        rows = self.table(table).rows
        if not sep or row_id not in rows:
            raise ConfigError(
                f"unknown row '{ref}' (expected TABLE:ROW; rows of {table}: {', '.join(rows)})"
            )
        return rows[row_id]

    def trial(self, ref: str) -> Trial:
        """A trial by its ref, TABLE:ROW@SEED (Trial.ref)."""
        row, at, seed = ref.rpartition("@")
        if not at or not seed.isdigit():
            raise ConfigError(f"trial {ref!r}: expected TABLE:ROW@SEED, e.g. table3:c@0")
        return Trial(self.row(row), int(seed))

    def resolve_params(
        self, profile: str, row: Row | None = None, seed: int | None = None
    ) -> Config:
        """The config as params/ alone defines it: the baseline, the profile, the row and the
        seed, without the data's fingerprints (so without reading the data). A dict, not a
        RunConfig: the keys it lacks are the fingerprints, and its hash is of what it holds."""
        origin = f"{self.root / 'profiles.yaml'}: profile '{profile}'"
        cfg = deep_merge(self.baseline, self.profile(profile), origin)
        if profile not in self._valid_profiles:  # blame the profile, not the row checked first
            validate(cfg, origin)
            self._valid_profiles.add(profile)
        if row is not None:
            origin = f"profile '{profile}' + row {row.ref}"
            cfg = deep_merge(cfg, row.overrides, f"params/tables/{row.table}.yaml: {row.id}")
        if seed is not None:
            cfg["seed"] = seed
        validate(cfg, origin)
        return cfg

    def resolve(self, profile: str, row: Row | None = None, seed: int | None = None) -> RunConfig:
        """The config a run trains with; its hash is the run's identity, so it also holds
        the content fingerprints of the data source and of the class list, if any
        (`data.source_sha256`, `data.class_list_sha256`)."""
        return RunConfig.of(self._fingerprinted(profile, row, seed))

    def _fingerprinted(self, profile: str, row: Row | None, seed: int | None) -> Config:
        cfg = self.resolve_params(profile, row, seed)
        cfg["data"]["source_sha256"] = self.source_identity(
            cfg["data"]["dataset"], cfg["data"]["source"]
        )
        if cfg["data"]["class_list"]:
            cfg["data"]["class_list_sha256"] = class_list_identity(cfg["data"]["class_list"])
        return cfg

    def source_identity(self, dataset: str, source: str | None) -> str | None:
        """datasource.source_identity, once per source for this Params (a plan resolves ~70 configs,
        and fingerprinting a large tree walks all of it)."""
        key = _source_key(dataset, source)
        if key not in self._sources:
            self._sources[key] = source_identity(dataset, source)
        return self._sources[key]

    def use_source_record(self, profile: str, record: Path) -> None:
        """The profile's data fingerprint as `simsiam source` recorded it (DVC's source stage,
        which runs first in every `dvc repro`): the jobs after it then read it instead of
        fingerprinting the source again (minutes a job for an ImageNet archive)."""
        try:
            found = json.loads(Path(record).read_text())
            dataset, fingerprint = found["dataset"], found["source_sha256"]
        except FileNotFoundError:
            raise ConfigError(
                f"--source-record {record}: not found; run `simsiam source --profile {profile} "
                f"--out {record}` (DVC's source stage) first"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(
                f"--source-record {record}: unreadable ({err}); run `simsiam source` again"
            ) from None
        data = self.resolve_params(profile)["data"]
        if dataset != data["dataset"]:
            raise ConfigError(
                f"--source-record {record} is {dataset}'s, but profile {profile} trains on "
                f"{data['dataset']}; run `simsiam source --profile {profile}` again"
            )
        self._sources[_source_key(dataset, data["source"])] = fingerprint

    def plan(
        self, profile: str, tables: list[str], read_data: bool = True
    ) -> dict[str, list[Trial]]:
        """Distinct configs (by hash) of the tables' trials, each with the trials that use it,
        in table order: a config's first trial names it. Within one profile the data's
        fingerprints are the same for every trial, so `read_data=False` (hashes of params/
        alone, for dvc.yaml, which must not depend on where the data is) groups the trials
        the same way."""
        resolve = self._fingerprinted if read_data else self.resolve_params
        runs: dict[str, list[Trial]] = {}
        evaluations: dict[str, tuple[Trial, Config]] = {}
        for name in tables:
            for row in self.table(name).rows.values():
                for trial in self.row_trials(profile, row):
                    cfg = resolve(profile, row, trial.seed)
                    run = config_hash(cfg)
                    first, evaluation = evaluations.setdefault(run, (trial, cfg[EVALUATION]))
                    if cfg[EVALUATION] != evaluation:
                        raise ConfigError(
                            f"rows {first.ref} and {trial.ref} train the same config but "
                            f"evaluate it differently ({EVALUATION} settings); one run has one "
                            "evaluation: set eval in the profile, not in a row"
                        )
                    runs.setdefault(run, []).append(trial)
        return runs
