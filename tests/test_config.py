import hashlib
import re
import shutil
from dataclasses import MISSING, fields, replace
from pathlib import Path
from typing import Literal, get_args, get_origin, get_type_hints

import pytest
import yaml

from simsiam_lab.config import FINGERPRINTS, RUN_SCHEMA, DataConfig, RunConfig, config_hash
from simsiam_lab.errors import ConfigError
from simsiam_lab.study import Params

PARAMS = Path(__file__).parents[1] / "params"


@pytest.fixture
def params(tmp_path: Path) -> Params:
    shutil.copytree(PARAMS, tmp_path / "params")
    return Params(tmp_path / "params")


def _set_profile(params: Params, **overrides) -> None:
    path = params.root / "profiles.yaml"
    profiles = yaml.safe_load(path.read_text())
    profiles["bad"] = {"overrides": overrides}
    path.write_text(yaml.safe_dump(profiles))


def test_every_profile_resolves_every_table_row():
    params = Params(PARAMS)
    for profile in params.profiles:
        for table in params.table_names():
            assert params.plan(profile, [table])


def test_table3_has_five_distinct_runs():
    assert len(Params(PARAMS).plan("smoke", ["table3"])) == 5


def test_hash_is_stable_and_changes_with_the_config():
    params = Params(PARAMS)
    cfg = params.resolve("smoke", params.row("table3:c"))
    assert config_hash(cfg) == config_hash(params.resolve("smoke", params.row("table3:c")))
    reseeded = replace(cfg, seed=1)
    assert config_hash(reseeded) != config_hash(params.resolve("smoke", params.row("table3:c")))


def test_a_run_s_identity_is_what_training_reads_not_how_it_is_evaluated(params: Params):
    cfg = params.resolve("smoke", params.row("table3:c"))
    evaluated_otherwise = cfg.merged({"eval": {"linear_epochs": 9, "knn_k": 3}}, "test")
    assert config_hash(evaluated_otherwise) == config_hash(cfg)
    assert config_hash(cfg.merged({"monitor": {"knn_k": 3}}, "test")) != config_hash(cfg)


def test_rows_that_train_one_config_must_evaluate_it_one_way(params: Params):
    path = params.root / "tables" / "table3.yaml"
    table = yaml.safe_load(path.read_text())
    table["rows"]["c-copy"] = {"overrides": {"eval": {"knn_k": 3}}, "paper": 68.1}
    path.write_text(yaml.safe_dump(table, sort_keys=False))
    with pytest.raises(ConfigError, match="table3:c@0 and table3:c-copy@0 train the same config"):
        params.plan("smoke", ["table3"])


def test_identical_rows_share_one_run(params: Params):
    path = params.root / "tables" / "table3.yaml"
    table = yaml.safe_load(path.read_text())
    table["rows"]["c-copy"] = {"label": "copy", "overrides": {}, "paper": 68.1}
    path.write_text(yaml.safe_dump(table, sort_keys=False))
    plan = params.plan("smoke", ["table3"])
    assert len(plan) == 5
    shared = [t.row.id for trials in plan.values() if len(trials) > 1 for t in trials]
    assert sorted(shared) == ["c", "c-copy"]


def test_every_row_a_claim_names_gets_the_profiles_trials():
    params = Params(PARAMS)
    table = params.table("table3")
    seeds = {row_id: [t.seed for t in row.trials(3)] for row_id, row in table.rows.items()}
    # d is named only by the 'unstable' claim: a one-seed collapse verdict can be luck
    assert seeds["d"] == [0, 1, 2] and seeds["b"] == [0, 1, 2]
    table2 = params.table("table2")
    assert [t.seed for t in table2.rows["b128"].trials(3)] == [0]  # no claim names it


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"optim": {"batch_size": 0}}, "optim.batch_size = 0: must be >= 2"),
        ({"optim": {"base_lr": -0.1}}, "optim.base_lr = -0.1: must be > 0"),
        ({"loss": {"similarity": "euclid"}}, "loss.similarity = 'euclid': must be one of cosine"),
        ({"optim": {"epochs": "ten"}}, "optim.epochs = 'ten': must be of type integer"),
        ({"model": {"backbone": "vit"}}, "model.backbone = 'vit': must be one of resnet18"),
        ({"optim": {"nesterov": True}}, "unknown key 'optim.nesterov' (allowed here: epochs"),
        ({"optim": {"base_lr": float("nan")}}, "optim.base_lr = nan: must be of type number"),
        ({"optim": {"momentum": float("inf")}}, "optim.momentum = inf: must be of type number"),
        ({"eval": {"knn_temperature": float("nan")}}, "eval.knn_temperature = nan: must be"),
        ({"optim": {"batch_size": 64.0}}, "optim.batch_size = 64.0: must be of type integer"),
    ],
)
def test_bad_values_are_rejected_with_one_line(params: Params, overrides, message):
    _set_profile(params, **overrides)
    with pytest.raises(ConfigError) as err:
        params.resolve("bad")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_profile_s_error_names_the_profile_not_the_row_planned_first(params: Params):
    _set_profile(params, optim={"epochs": -2})
    with pytest.raises(ConfigError) as err:
        params.plan("bad", params.table_names())
    assert str(err.value) == (
        f"{params.root / 'profiles.yaml'}: profile 'bad': optim.epochs = -2: must be >= 1"
    )


def test_a_float_without_a_dot_is_a_float_as_in_yaml_1_2(params: Params):
    path = params.root / "profiles.yaml"
    text = path.read_text()
    assert "base_lr: 0.03, weight_decay" in text
    path.write_text(text.replace("base_lr: 0.03, weight_decay", "base_lr: 3e-2, weight_decay"))
    written = params.resolve_params("smoke")
    assert written["optim"]["base_lr"] == 0.03
    assert config_hash(written) == config_hash(Params(PARAMS).resolve_params("smoke"))


def test_a_missing_key_is_named(params: Params):
    path = params.root / "baseline.yaml"
    baseline = yaml.safe_load(path.read_text())
    del baseline["optim"]["momentum"]
    path.write_text(yaml.safe_dump(baseline))
    with pytest.raises(ConfigError, match=r"baseline.yaml: missing key 'optim\.momentum'$"):
        params.resolve("smoke")


def test_unknown_profile_lists_the_available_ones():
    with pytest.raises(ConfigError, match="unknown profile 'huge' \\(available: smoke, cpu"):
        Params(PARAMS).resolve("huge")


def test_unknown_row_lists_the_rows():
    with pytest.raises(ConfigError, match="rows of table3: a, b, c, c-affine, d"):
        Params(PARAMS).row("table3:e")


def test_malformed_yaml_names_the_file_and_line(params: Params):
    (params.root / "profiles.yaml").write_text("smoke:\n  overrides: {data: [\n")
    with pytest.raises(ConfigError, match=r"profiles.yaml: malformed YAML \(line 3"):
        params.resolve("smoke")


def _edit_table3(params: Params, edit) -> None:
    path = params.root / "tables" / "table3.yaml"
    table = yaml.safe_load(path.read_text())
    edit(table)
    path.write_text(yaml.safe_dump(table, sort_keys=False))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t["rows"]["c"].update(seeds=[0, 0]), "rows.c.seeds = [0, 0]: must be a list of"),
        (lambda t: t["rows"]["c"].update(seeds=3), "rows.c.seeds = 3: must be of type list"),
        (
            lambda t: t["rows"]["b"].update(overrides=[{"model": {}}]),
            "rows.b.overrides = [{'model': {}}]: must be of type mapping",
        ),
        (lambda t: t["rows"].update(e=None), "rows.e = None: must be of type mapping"),
        (lambda t: t["rows"]["b"].pop("paper"), "missing key 'rows.b.paper'"),
        (lambda t: t["rows"]["b"].update(lable="x"), "unknown key 'rows.b.lable' (allowed here"),
        (lambda t: t.update(colums={}), "unknown key 'colums' (allowed here: title"),
        (
            lambda t: t["columns"].update({"typo": "model.predictor_outptu_bn"}),
            "columns.typo = 'model.predictor_outptu_bn': not a config key (keys of that section",
        ),
        (lambda t: t["claims"][1]["check"].update(thn="a"), "unknown key 'check.thn'"),
        (
            lambda t: t["claims"][1]["check"].update(refresh_longer_than="k100"),
            "unknown row 'k100' (rows: ",
        ),
        (lambda t: t["claims"][0].pop("text"), "claims.0.text"),
        (lambda t: t["claims"][3].pop("margin_reason"), "a margin needs its reason beside it"),
        (
            lambda t: t["claims"][1].update(margin_reason="because"),
            "claims[1]: a margin needs its reason beside it, and a reason its margin",
        ),
        (
            lambda t: t["claims"][3]["check"].pop("margin_of_gain"),
            "claims[3]: a 'similar' check needs a margin: 'margin_of_gain: 0.015'",
        ),
        (
            lambda t: t["claims"][3]["check"].update(margin=1.0),
            "claims[3]: give one of margin and margin_of_gain, not both",
        ),
        (
            lambda t: t["claims"][3]["check"].update(margin_of_gain=1.5),
            "margin_of_gain = 1.5: a share of the learned gain, below 1 (0.015 is 1.5%)",
        ),
        (
            lambda t: t["claims"][4]["check"].pop("than"),
            "claims[4]: the 'unstable' check needs 'than: ROW'; unknown row None",
        ),
    ],
)
def test_a_bad_table_is_one_line_naming_file_and_key(params: Params, edit, message):
    _edit_table3(params, edit)
    with pytest.raises(ConfigError) as err:
        params.plan("smoke", params.table_names())  # what Snakemake and dvc_yaml.py run first
    assert message in str(err.value) and "table3.yaml" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_data_source_s_content_is_part_of_a_run_s_identity(tmp_path: Path, monkeypatch):
    row = Params(PARAMS).row("table3:c")
    a, b, a_copy = tmp_path / "a.tar", tmp_path / "b.tar", tmp_path / "elsewhere" / "a.tar"
    a.write_bytes(b"one archive")
    b.write_bytes(b"another archive")
    a_copy.parent.mkdir()
    a_copy.write_bytes(a.read_bytes())

    def resolved(source: Path) -> RunConfig:
        monkeypatch.setenv("SIMSIAM_DATA", str(source))
        return Params(PARAMS).resolve("smoke", row)

    assert resolved(a).data.source_sha256 == hashlib.sha256(b"one archive").hexdigest()
    assert config_hash(resolved(a)) != config_hash(resolved(b))
    assert config_hash(resolved(a)) == config_hash(resolved(a_copy))  # content, not path
    monkeypatch.delenv("SIMSIAM_DATA")
    assert Params(PARAMS).resolve("smoke", row).data.source_sha256 == "torchvision:cifar10"


def test_a_class_list_s_content_is_part_of_a_run_s_identity(params: Params, tmp_path: Path):
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\n")
    _set_profile(params, data={"class_list": str(classes)})
    first = params.resolve("bad")
    classes.write_text("cat\nfrog\n")
    edited = params.resolve("bad")
    assert edited.data.class_list_sha256 != first.data.class_list_sha256
    assert config_hash(edited) != config_hash(first)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.pop("evaluate"), "smoke.resources: expected one entry per job"),
        (lambda r: r["pretrain"].pop("gpu"), "smoke.resources.pretrain = {"),
        (
            lambda r: r["pretrain"].update(mem_mb="2G"),
            "smoke.resources.pretrain.mem_mb = '2G': must",
        ),
        (lambda r: r["evaluate"].update(cpus=0), "smoke.resources.evaluate.cpus = 0: must be an"),
    ],
)
def test_a_profile_s_resources_are_checked_naming_the_key(tmp_path, edit, message):
    params = tmp_path / "params"
    shutil.copytree(PARAMS, params)
    profiles = yaml.safe_load((params / "profiles.yaml").read_text())
    resources = profiles["smoke"]["resources"]
    profiles["smoke"]["resources"] = {job: dict(asked) for job, asked in resources.items()}
    edit(profiles["smoke"]["resources"])
    (params / "profiles.yaml").write_text(yaml.safe_dump(profiles))
    with pytest.raises(ConfigError, match=re.escape(message)):
        Params(params).resources("smoke")


def test_every_profile_asks_for_each_job_s_resources():
    params = Params(PARAMS)
    for profile in params.profiles:
        assert set(params.resources(profile)) == {"prepare", "pretrain", "evaluate"}


SECTIONS = {k: t for k, t in get_type_hints(RunConfig).items() if k != "seed"}


@pytest.mark.parametrize("section", SECTIONS)
def test_a_section_s_type_and_the_schema_name_the_same_keys_and_values(section: str):
    typed, keys = SECTIONS[section], RUN_SCHEMA["properties"][section]["properties"]
    hints = get_type_hints(typed)
    assert {field.name for field in fields(typed)} == set(keys)
    for field in fields(typed):
        assert field.default is MISSING, f"{section}.{field.name}: baseline.yaml holds defaults"
        if get_origin(hints[field.name]) is Literal:
            assert keys[field.name]["enum"] == list(get_args(hints[field.name])), field.name
    # In baseline.yaml's order, so that config.yaml and MLflow's params read as params/ does.
    baseline = yaml.safe_load((PARAMS / "baseline.yaml").read_text())
    assert [f.name for f in fields(typed) if f.name not in FINGERPRINTS] == list(baseline[section])


def test_a_typed_config_hashes_and_reads_back_as_the_planner_s_dict(params: Params):
    for profile in ("smoke", "cpu", "cifar10"):
        for run, trials in params.plan(profile, params.table_names()).items():
            cfg = params.resolve(profile, trials[0].row, trials[0].seed)
            assert config_hash(cfg) == run
            assert RunConfig.of(cfg.to_dict()) == cfg


def test_a_value_outside_a_literal_is_named_with_its_allowed_values():
    data = yaml.safe_load((PARAMS / "baseline.yaml").read_text())["data"]
    with pytest.raises(
        ConfigError, match=r"^data.loader = 'disk': must be one of auto, memory, stream$"
    ):
        DataConfig.of(data | {"loader": "disk"})


def test_baseline_yaml_holds_every_key_the_schema_requires_and_no_other():
    baseline = yaml.safe_load((PARAMS / "baseline.yaml").read_text())
    for section, spec in RUN_SCHEMA["properties"].items():
        if "properties" in spec:
            assert sorted(baseline[section]) == sorted(spec["required"]), section
    assert sorted(baseline) == sorted(RUN_SCHEMA["required"])


def test_a_source_record_spares_a_job_the_fingerprint(params: Params, tmp_path, monkeypatch):
    import simsiam_lab.study as study

    record = tmp_path / "smoke.source.json"
    record.write_text('{"dataset": "cifar10", "source_sha256": "recorded"}')
    params.use_source_record("smoke", record)
    monkeypatch.setattr(study, "source_identity", lambda *_: pytest.fail("fingerprinted"))
    assert params.resolve("smoke").data.source_sha256 == "recorded"
    with pytest.raises(ConfigError, match=r"not found; run `simsiam source --profile smoke"):
        params.use_source_record("smoke", tmp_path / "none.json")
    record.write_text('{"dataset": "cifar100", "source_sha256": "x"}')
    with pytest.raises(ConfigError, match="is cifar100's, but profile smoke trains on cifar10"):
        params.use_source_record("smoke", record)
