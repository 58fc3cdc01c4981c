"""Run configs: the baseline, deep-merged with a scale profile and a table row's overrides,
checked against the schema and typed as a RunConfig.

A run is identified by the hash of its fully resolved config (what pretraining reads), so rows
of different tables that resolve to the same config share one training run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Self, get_args, get_origin, get_type_hints

import jsonschema
import yaml

from .errors import ConfigError

Config = dict[str, Any]


class _Loader(yaml.SafeLoader):
    """YAML 1.1 as PyYAML reads it, except that `3e-2` is a float (YAML 1.2 and JSON), not the
    string that PyYAML's 1.1 rules make of a float without a dot."""


def _mapping(loader: _Loader, node: yaml.MappingNode) -> dict:
    """A mapping whose keys are each written once: YAML lets a repeated key silently replace
    the first (`width: 8, width: 16`), which would train a config nobody wrote."""
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                problem=f"duplicate key {key!r} (each key once: the second would silently win)",
                problem_mark=mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
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


def schema_validator(name: str) -> jsonschema.protocols.Validator:
    """The strict validator of another of the package's schemas (a table's)."""
    return _STRICT(_load_schema(name))


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


def check_schema(validator: jsonschema.protocols.Validator, doc: Any, origin: str) -> None:
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
    check_schema(_VALIDATOR, cfg, origin)
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
    return digest(training_config(as_dict))


def digest(value: Any) -> str:
    """A short content hash of a JSON-able value, independent of its keys' order."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
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


# The training-time kNN monitor on the streaming path: up to this many images a class of each
# split, decoded once. Decoding every image at every monitor would cost ImageNet-1k an estimated
# 20 minutes a time (not measured here); these are 25,000 images there (forward passes only).
# Not a config key: the monitor's curve is a view of training, not part of it, so it must not
# change a run's hash.
MONITOR_PER_CLASS = {"train": 20, "test": 5}
