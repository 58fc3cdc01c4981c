"""Run configs: the baseline, deep-merged with a scale profile and a table row's overrides.

A run is identified by the hash of its fully resolved config, so rows of different tables that
resolve to the same config share one training run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from functools import cache, cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Self, get_args, get_origin, get_type_hints

import jsonschema
import yaml

Config = dict[str, Any]


class ConfigError(ValueError):
    """A bad params file or value; the message is one line naming the key, value and fix."""


class PlacementError(RuntimeError):
    """No device is free for this process; here, not in distributed.py, so the CLI can catch it
    without importing torch (seconds per job that does not train)."""


class ReportError(ValueError):
    """A report step's input (a run directory, a table's JSON) that is missing or unreadable;
    defined here, not in report.py, so the CLI can catch it without importing scipy."""


class _Loader(yaml.SafeLoader):
    """YAML 1.1 as PyYAML reads it, except that `3e-2` is a float (YAML 1.2 and JSON), not the
    string that PyYAML's 1.1 rules make of a float without a dot."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        return yaml.load(path.read_text(), Loader=_Loader)  # a SafeLoader: no Python objects
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        reason = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{where}: {reason}") from None


def deep_merge(base: Config, override: Config, origin: str, prefix: str = "") -> Config:
    """Return base updated by override; an override key absent from base is an error."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        path = f"{prefix}{key}"
        if key not in base:
            allowed = ", ".join(base)
            raise ConfigError(f"{origin}: unknown key '{path}' (allowed here: {allowed})")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: '{path}' must be a mapping, got {value!r}")
            merged[key] = deep_merge(base[key], value, origin, f"{path}.")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _load_schema(name: str) -> Config:
    return yaml.safe_load(resources.files(__package__).joinpath(name).read_text())


def _is_integer(_, value: Any) -> bool:
    # JSON Schema counts 64.0 as an integer; a batch size of 64.0 then fails inside training.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(_, value: Any) -> bool:
    # NaN passes every bound (each comparison is false): a NaN lr would train and "diverge".
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_STRICT = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_number}
    ),
)


def _require_every_key(node: Config) -> Config:
    """A run config's schema with each section's `required` list: every key the section names
    but the readOnly ones (Params.resolve writes those), at every depth."""
    if "properties" in node:
        node["required"] = [k for k, v in node["properties"].items() if not v.get("readOnly")]
        for child in node["properties"].values():
            _require_every_key(child)
    return node


RUN_SCHEMA = _require_every_key(_load_schema("config.schema.yaml"))
_VALIDATOR = _STRICT(RUN_SCHEMA)
_TABLE_VALIDATOR = _STRICT(_load_schema("table.schema.yaml"))


def _describe(error: jsonschema.ValidationError) -> str:
    schema = error.schema
    if error.validator == "enum":
        return "must be one of " + ", ".join(map(str, schema["enum"]))
    if error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
        return f"must be {op[error.validator]} {schema[error.validator]}"
    if error.validator == "type":
        finite = " (finite)" if isinstance(error.instance, float) else ""
        yaml_words = {"object": "mapping", "array": "list"}
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        return f"must be of type {' or '.join(yaml_words.get(t, t) for t in types)}{finite}"
    if "description" in schema:
        return f"must be {schema['description']}"
    return error.message


def _check_schema(validator: jsonschema.protocols.Validator, doc: Any, origin: str) -> None:
    """One line for the most relevant schema error: the key, its value and what it must be."""
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is None:
        return
    key = ".".join(map(str, error.absolute_path))
    where = f"{key}." if key else ""
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        raise ConfigError(f"{origin}: missing key '{where}{missing[0]}'")
    if error.validator == "additionalProperties":
        allowed = ", ".join(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        raise ConfigError(f"{origin}: unknown key '{where}{unknown[0]}' (allowed here: {allowed})")
    raise ConfigError(f"{origin}: {key or 'the file'} = {error.instance!r}: {_describe(error)}")


def validate(cfg: Config, origin: str) -> None:
    _check_schema(_VALIDATOR, cfg, origin)
    if cfg["target"]["mode"] == "moving_average" and cfg["loss"]["symmetric"]:
        raise ConfigError(
            f"{origin}: target.mode = 'moving_average' needs loss.symmetric = false "
            "(one stored target per image, pulled from one view)"
        )


# Read only by `evaluate`: changing it re-evaluates a run, never retrains it.
EVALUATION = "eval"


def training_config(cfg: Config) -> Config:
    """What pretraining reads: the config without its evaluation settings."""
    return {key: value for key, value in cfg.items() if key != EVALUATION}


def config_hash(cfg: RunConfig | Config) -> str:
    """A run's identity: the hash of what its pretraining reads, so runs that differ only in
    how they are evaluated are one run."""
    as_dict = cfg.to_dict() if isinstance(cfg, RunConfig) else cfg
    canonical = json.dumps(training_config(as_dict), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


# The run config, typed: one frozen dataclass a section of config.schema.yaml, each field a key
# of it, with no defaults (params/baseline.yaml is the one place for those) and a Literal type
# where the schema lists the allowed values (a test holds the two to the same keys and values).
Dataset = Literal["cifar10", "cifar100", "imagefolder"]
Loader = Literal["auto", "memory", "stream"]
TestView = Literal["centre_crop", "resize"]
Backbone = Literal["resnet18", "resnet34", "resnet50"]
TargetMode = Literal["live", "snapshot", "moving_average"]
Precision = Literal["auto", "bf16", "fp32"]
LinearProbe = Literal["cached", "paper"]


@cache
def _hints(typed: type) -> dict[str, Any]:
    return get_type_hints(typed)


@cache
def _literal_fields(section: type) -> dict[str, tuple[Any, ...]]:
    return {k: get_args(t) for k, t in _hints(section).items() if get_origin(t) is Literal}


class _Section:
    """A section of a resolved run config."""

    @classmethod
    def of(cls, section: Mapping[str, Any]) -> Self:
        return cls(**{field.name: section[field.name] for field in fields(cls)})

    def __post_init__(self) -> None:
        # A config from params/ passed the schema; one built in code did not.
        name = type(self).__name__.removesuffix("Config").lower()
        for key, allowed in _literal_fields(type(self)).items():
            if (value := getattr(self, key)) not in allowed:
                raise ConfigError(
                    f"{name}.{key} = {value!r}: must be one of {', '.join(map(str, allowed))}"
                )


@dataclass(frozen=True)
class DataConfig(_Section):
    dataset: Dataset
    source: str | None  # ImageFolder tree or archive of one; None = $SIMSIAM_DATA / download
    image_size: int  # training's crops and evaluation's views
    stored_size: int  # `prepare` resizes (shorter side) and centre-crops to this
    train_per_class: int | None  # stratified subset size per class (None = all)
    test_per_class: int | None
    subset_seed: int
    loader: Loader  # "auto": memory up to memory_limit_gb, else stream (data.choose_loader)
    memory_limit_gb: float
    test_view: TestView
    class_list: str | None  # file of class folder names to keep (None = all)
    # The content fingerprints Params.resolve writes (None: not known yet, `prepare` takes it).
    source_sha256: str | None
    class_list_sha256: str | None

    @classmethod
    def of(cls, section: Mapping[str, Any]) -> DataConfig:
        return super().of({key: None for key in FINGERPRINTS} | dict(section))

    def prepared(self) -> Config:
        """What `prepare` makes its directory from: every key but training's and evaluation's
        view of the images (image_size, test_view)."""
        return {k: v for k, v in asdict(self).items() if k not in ("image_size", "test_view")}

    def settings(self) -> Config:
        """What a manifest records as it is: `prepared()` but where the data comes from."""
        return {k: v for k, v in self.prepared().items() if k not in ("source", *FINGERPRINTS)}


FINGERPRINTS = ("source_sha256", "class_list_sha256")


@dataclass(frozen=True)
class ModelConfig(_Section):
    backbone: Backbone
    width: int
    cifar_stem: bool
    dim: int
    projector_layers: Literal[2, 3]
    projector_hidden_bn: bool
    projector_output_bn: bool
    projector_output_bn_affine: bool
    predictor: bool
    predictor_hidden_dim: int
    predictor_hidden_bn: bool
    predictor_output_bn: bool


@dataclass(frozen=True)
class LossConfig(_Section):
    similarity: str  # a name of loss.SIMILARITIES: a new one is that module's and the schema's
    stop_gradient: bool
    symmetric: bool
    pairs: Literal[1, 2]


@dataclass(frozen=True)
class TargetConfig(_Section):
    mode: TargetMode
    refresh_every: int | Literal["epoch"]
    momentum: float


@dataclass(frozen=True)
class OptimConfig(_Section):
    epochs: int
    batch_size: int
    base_lr: float
    momentum: float
    weight_decay: float
    warmup_fraction: float
    fix_pred_lr: bool
    min_steps: int
    freeze_predictor: bool


@dataclass(frozen=True)
class AugmentConfig(_Section):
    crop_scale_min: float
    blur_p: float


@dataclass(frozen=True)
class ComputeConfig(_Section):
    channels_last: bool
    precision: Precision
    compile: bool


@dataclass(frozen=True)
class MonitorConfig(_Section):
    knn_every: int
    knn_k: int
    knn_temperature: float


@dataclass(frozen=True)
class EvalConfig(_Section):
    knn_k: int
    knn_temperature: float
    linear_probe: LinearProbe
    linear_epochs: int
    linear_lr: float
    linear_batch_size: int
    linear_weight_decay: float


@dataclass(frozen=True)
class RunConfig:
    """A fully resolved run config, as every job receives it: Params.resolve makes it, and
    `RunConfig.of` reads one back from a run directory or a job's command line."""

    seed: int
    data: DataConfig
    model: ModelConfig
    loss: LossConfig
    target: TargetConfig
    optim: OptimConfig
    augment: AugmentConfig
    compute: ComputeConfig
    monitor: MonitorConfig
    eval: EvalConfig

    @classmethod
    def of(cls, cfg: Mapping[str, Any]) -> RunConfig:
        sections = {k: t for k, t in _hints(cls).items() if k != "seed"}
        return cls(seed=cfg["seed"], **{k: t.of(cfg[k]) for k, t in sections.items()})

    def to_dict(self) -> Config:
        """The config as params/ spells it, whose canonical JSON is the hash. A config without
        a class list has no `class_list_sha256`, as before class lists existed: its hash, and
        so its run directory, stay what they were."""
        cfg = asdict(self)
        if cfg["data"]["class_list_sha256"] is None:
            del cfg["data"]["class_list_sha256"]
        return cfg

    def training(self) -> Config:
        return training_config(self.to_dict())

    def merged(self, overrides: Config, origin: str) -> RunConfig:
        """This config with `overrides` deep-merged and checked (a benchmark's variant)."""
        cfg = deep_merge(self.to_dict(), overrides, origin)
        validate(cfg, origin)
        return RunConfig.of(cfg)


def flatten(cfg: Config, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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

    def trials(self, count: int = 1) -> list[Trial]:
        """The row's seeds, else seeds 0..count-1 when a claim names the row, else seed 0: a
        difference needs an interval, and a collapse verdict from one seed can be luck."""
        seeds = self.seeds or tuple(range(count if self.claimed else 1))
        return [Trial(self, seed) for seed in seeds]


@dataclass(frozen=True)
class Trial:
    """One training run of a row: the row's config with this seed."""

    row: Row
    seed: int

    @property
    def ref(self) -> str:
        return f"{self.row.ref}@{self.seed}"


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    section: str
    paper_setting: str
    columns: dict[str, str]
    rows: dict[str, Row]
    claims: list[Config]


# A claim's check: one kind naming a row, plus the other row for comparisons.
CHECKS = {
    "collapsed": None,
    "not_collapsed": None,
    "unstable": None,
    "improving": None,
    "better": "than",
    "not_worse": "than",
    "similar": "to",
    "loss_above": "than",
}


def claim_kind(check: Config) -> str:
    """The one CHECKS kind a (validated) claim's check names; CHECKS[kind] is its other row's
    key for a comparison, None for a collapse or instability claim."""
    return next(k for k in CHECKS if k in check)


# The equivalence or non-inferiority margin is part of the claim, so the table must state it:
# in accuracy points (`margin`), or as a share of what the reference row learned over its random
# init at the profile (`margin_of_gain`), a unit that carries from one scale to another.
MARGIN_REQUIRED = ("not_worse", "similar")
MARGINS = ("margin", "margin_of_gain")
# Kinds outside the comparisons' family that still name a reference row: a run's step noise
# is judged against the reference's (stability.py).
REFERENCE = {"unstable": "than"}
# A claim about a target refreshed less often than another row's holds only at a scale where
# its interval in SGD steps is the longer (§5.2's "once per epoch" against k = 100).
LONGER_THAN = "refresh_longer_than"


def _parse_table(name: str, raw: Any, path: Path) -> Table:
    _check_schema(_TABLE_VALIDATOR, raw, str(path))
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
    claims = raw.get("claims") or []
    for i, claim in enumerate(claims):
        _check_claim(claim, rows, f"{path}: claims[{i}]")
    row_keys = {key for kind, other in CHECKS.items() for key in (kind, other) if key}
    claimed = {row for claim in claims for key, row in claim["check"].items() if key in row_keys}
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


def _check_claim(claim: Any, rows: dict[str, Row], where: str) -> None:
    check = claim["check"]
    kinds = [k for k in CHECKS if k in check]
    if len(kinds) != 1:
        raise ConfigError(
            f"{where}: expected {{text: ..., check: {{KIND: ROW, ...}}}} with one KIND of "
            f"{', '.join(CHECKS)}"
        )
    other = CHECKS[kinds[0]] or REFERENCE.get(kinds[0])
    keys = (kinds[0], other, *MARGINS, LONGER_THAN)
    if unknown := sorted(set(check) - set(keys)):
        allowed = ", ".join(k for k in keys if k)
        raise ConfigError(f"{where}: unknown key 'check.{unknown[0]}' (allowed here: {allowed})")
    named = [check[kinds[0]]] + ([check.get(other)] if other else [])
    named += [check[LONGER_THAN]] if LONGER_THAN in check else []
    if unknown := [r for r in named if r not in rows]:
        missing = f"the '{kinds[0]}' check needs '{other}: ROW'; " if unknown[0] is None else ""
        raise ConfigError(f"{where}: {missing}unknown row {unknown[0]!r} (rows: {', '.join(rows)})")
    _check_margin(check, kinds[0], claim, where)


def _check_margin(check: Config, kind: str, claim: Config, where: str) -> None:
    given = [k for k in MARGINS if k in check]
    if kind in MARGIN_REQUIRED and not given:
        raise ConfigError(
            f"{where}: a '{kind}' check needs a margin: 'margin_of_gain: 0.015' (a share of "
            "what its reference row learned over random init) or 'margin: 1.0' (accuracy points)"
        )
    if len(given) > 1:
        raise ConfigError(f"{where}: give one of margin and margin_of_gain, not both")
    key = given[0] if given else None
    value = check.get(key)
    if key and (isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0):
        raise ConfigError(
            f"{where}: {key} = {value!r}: must be a number >= 0 (accuracy points)"
            if key == "margin"
            else f"{where}: margin_of_gain = {value!r}: must be a share >= 0 (0.015 is 1.5%)"
        )
    if key == "margin_of_gain" and value >= 1:
        raise ConfigError(
            f"{where}: margin_of_gain = {value!r}: a share of the learned gain, below 1 "
            "(0.015 is 1.5%); for accuracy points use 'margin'"
        )
    if (key is None) != ("margin_reason" not in claim):
        raise ConfigError(
            f"{where}: a margin needs its reason beside it, and a reason its margin: "
            "{text: ..., check: {..., margin_of_gain: 0.015}, margin_reason: why 1.5%}"
        )


# The training-time kNN monitor on the streaming path: up to this many images a class of each
# split, decoded once. Decoding every image at every monitor would cost ImageNet-1k an estimated
# 20 minutes a time (not measured here); these are 25,000 images there (forward passes only).
# Not a config key: the monitor's curve is a view of training, not part of it, so it must not
# change a run's hash.
MONITOR_PER_CLASS = {"train": 20, "test": 5}

# A profile's jobs and what each asks of a cluster, with each value's least: threads, memory
# (MB), time limit (minutes), GPUs.
JOBS = ("prepare", "pretrain", "evaluate")
RESOURCES = {"cpus": 1, "mem_mb": 1, "runtime": 1, "gpu": 0}


def _source_key(dataset: str, source: str | None) -> tuple[str, str | None, str | None]:
    """What a data fingerprint is of: the dataset, the config's source and $SIMSIAM_DATA."""
    from .data import ENV_VAR

    return dataset, source, os.environ.get(ENV_VAR)


class Params:
    """The params/ directory: baseline.yaml, profiles.yaml and tables/<name>.yaml."""

    def __init__(self, root: Path | str = "params") -> None:
        self.root = Path(root)
        self._sources: dict[tuple, str | None] = {}
        self._valid_profiles: set[str] = set()

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

    def row_trials(self, profile: str, row: Row) -> list[Trial]:
        return row.trials(self.trials(profile))

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
            from .data import class_list_identity

            cfg["data"]["class_list_sha256"] = class_list_identity(cfg["data"]["class_list"])
        return cfg

    def source_identity(self, dataset: str, source: str | None) -> str | None:
        """data.source_identity, once per source for this Params (a plan resolves ~70 configs,
        and fingerprinting a large tree walks all of it)."""
        from .data import source_identity  # imports torch: only where it is needed

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

    def run_trials(self, profile: str, run: str) -> list[Trial]:
        """The trials, over every table, that train the config with this hash."""
        trials = self.plan(profile, self.table_names()).get(run)
        if not trials:
            raise ConfigError(
                f"no row of {self.root / 'tables'} resolves to config {run} at profile "
                f"{profile}; `snakemake -n` lists the configs a profile trains"
            )
        return trials

    def run_config(self, profile: str, run: str) -> RunConfig:
        """The resolved config of the run with this hash, eval settings included."""
        first = self.run_trials(profile, run)[0]
        return self.resolve(profile, first.row, first.seed)
