import errno
import json
import math
import statistics
from itertools import pairwise
from pathlib import Path

import pytest
import torch

from simsiam_lab.config import RunConfig
from simsiam_lab.data import load_split
from simsiam_lab.distributed import autocast_dtype
from simsiam_lab.errors import ConfigError
from simsiam_lab.evaluate import KnnProbe, frozen_accuracies
from simsiam_lab.loss import SimSiamLoss
from simsiam_lab.rundir import RunDir
from simsiam_lab.schedule import learning_rate
from simsiam_lab.study import Params
from simsiam_lab.target import LiveTarget
from simsiam_lab.train import (
    build_model,
    build_optimizer,
    check_resumable,
    fast_path,
    fix_pred_lr_schedule,
    initial_weights,
    pretrain,
    safe_cpu_threads,
    sgd_step,
)

PARAMS = Params(Path(__file__).parents[1] / "params")


@pytest.fixture
def data(tmp_path: Path, write_prepared) -> Path:
    return write_prepared(tmp_path, classes=3, train_per_class=16, test_per_class=16)


def _config(**optim) -> RunConfig:
    cfg = PARAMS.resolve("smoke")
    return cfg.merged({"optim": {"epochs": 2, "batch_size": 16, **optim}}, "test")


def test_learning_rate_warms_up_then_decays_to_zero():
    lrs = [learning_rate(s, total=100, warmup=10, peak=1.0) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in pairwise(lrs[9:]))
    assert lrs[100] == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(0, total=100, warmup=0, peak=0.5) == pytest.approx(0.5)


def test_a_fix_pred_lr_predictor_warms_up_with_the_encoder():
    lrs = [learning_rate(s, total=100, warmup=10, peak=1.0) for s in range(100)]
    fixed = [fix_pred_lr_schedule(s, 10, lr, 1.0) for s, lr in enumerate(lrs)]
    assert fixed[:10] == lrs[:10]  # the warm-up ramp
    assert fixed[10:] == [1.0] * 90  # then the peak, where the encoder decays


def test_a_run_with_fewer_steps_than_the_profile_can_test_is_skipped(tmp_path: Path, data: Path):
    summary = pretrain(_config(min_steps=7), data, tmp_path / "run")  # 2 epochs of 3 steps
    assert summary["status"] == "skipped" and summary["steps"] == 0
    assert "6 SGD steps" in summary["reason"] and "min_steps = 7" in summary["reason"]
    assert pretrain(_config(min_steps=6), data, tmp_path / "run6")["status"] == "ok"


@pytest.mark.parametrize("protocol", ["cached", "paper"])
def test_both_linear_probes_measure_a_network(data: Path, protocol: str):
    eval_ = {"linear_probe": protocol, "linear_epochs": 2, "linear_batch_size": 16}
    cfg = _config().merged({"eval": eval_}, "test")
    probe = KnnProbe(cfg, load_split(data, "train"), load_split(data, "test"))
    found = frozen_accuracies(build_model(cfg), cfg, probe)
    assert set(found) == {"knn", "linear"}
    assert 0.0 <= found["linear"] <= 100.0


def test_fix_pred_lr_puts_the_predictor_in_a_fixed_group():
    cfg = _config(fix_pred_lr=True)
    model = build_model(cfg)
    groups = build_optimizer(model, cfg).param_groups
    assert [g["fix_pred_lr"] for g in groups] == [False, True]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.predictor.parameters()}


@pytest.mark.trains
def test_pretrain_writes_a_finite_history_and_checkpoint(tmp_path: Path, data: Path):
    summary = pretrain(_config(), data, tmp_path / "run")
    assert summary["status"] == "ok" and summary["epochs_completed"] == 2
    assert summary["steps"] == 2 * (48 // 16)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [0, 1, 2]  # epoch 0: the random-init monitor
    assert all(math.isfinite(r["loss"]) and -1 <= r["loss"] <= 1 for r in history[1:])
    assert 0 < history[-1]["z_std_ratio"] < 1.5  # ≈ 1 for isotropic z; batch-16 noise
    # (1.027 at one torch thread and at two: each bound far from where training lands)
    # Each epoch also keeps its every step's loss, and the steps done at its end.
    for record in history[1:]:
        assert len(record["step_loss"]) == 3 and record["step"] == 3 * record["epoch"]
        assert statistics.fmean(record["step_loss"]) == pytest.approx(record["loss"], abs=1e-6)
    assert history[1]["step_loss"] != history[2]["step_loss"]
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2


def test_a_nan_loss_ends_the_run_as_diverged(tmp_path: Path, data: Path, monkeypatch):
    monkeypatch.setattr(SimSiamLoss, "forward", lambda self, p1, p2, z1, z2: p1.sum() * math.nan)
    summary = pretrain(_config(), data, tmp_path / "run")
    assert summary["status"] == "diverged"
    assert summary["epochs_completed"] == 0 and summary["final_loss"] is None
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 0  # the last finite state is kept, not the NaN weights
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_a_batch_larger_than_the_data_is_skipped_not_trained(tmp_path: Path, data: Path):
    summary = pretrain(_config(batch_size=64), data, tmp_path / "run")
    assert summary["status"] == "skipped" and summary["steps"] == 0
    # Its checkpoint is the network pretraining starts from, the random-init kNN control's.
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    for name, init in initial_weights(_config(batch_size=64)).items():
        assert torch.equal(state["model"][name], init), name
    assert summary["reason"] == "batch 64 > 48 training images"
    assert (tmp_path / "run" / "checkpoint.pt").is_file()


def test_freeze_predictor_keeps_it_at_init(tmp_path: Path):
    cfg = _config().merged({"optim": {"freeze_predictor": True}}, "test")
    model = build_model(cfg)
    opt = build_optimizer(model, cfg)
    before = [p.clone() for p in model.predictor.parameters()]
    x = torch.randn(8, 3, 32, 32)
    p1, p2, z1, z2 = model(x, x.flip(-1))
    SimSiamLoss()(p1, p2, z1, z2).backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.predictor.parameters(), strict=True))
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize(
    "overrides",
    [
        {"loss": {"symmetric": False, "pairs": 2}},
        {"target": {"mode": "snapshot", "refresh_every": "epoch"}},
        {
            "target": {"mode": "moving_average"},
            "loss": {"symmetric": False},
            "model": {"predictor": False},
        },
    ],
    ids=["asymmetric-2x", "snapshot-epoch", "moving-average"],
)
@pytest.mark.trains
def test_ablation_switches_train(tmp_path: Path, data: Path, overrides):
    cfg = _config().merged({"monitor": {"knn_every": 0}, **overrides}, "test")
    summary = pretrain(cfg, data, tmp_path / "run")
    assert summary["status"] == "ok" and math.isfinite(summary["final_loss"])


class _Killed(Exception):
    pass


@pytest.mark.slow  # three-epoch pretrainings, killed and resumed
@pytest.mark.parametrize(
    "overrides",
    [{}, {"target": {"mode": "moving_average"}, "loss": {"symmetric": False}}],
    ids=["live", "moving-average"],
)
def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path: Path, data: Path, overrides):
    cfg = _config(epochs=3).merged(overrides, "test")
    pretrain(cfg, data, tmp_path / "whole")

    def kill_after_epoch_2(record):
        if record["epoch"] == 2:
            raise _Killed

    with pytest.raises(_Killed):
        pretrain(cfg, data, tmp_path / "resumed", kill_after_epoch_2)
    assert (tmp_path / "resumed" / "state.pt").is_file()
    assert not (tmp_path / "resumed" / "checkpoint.pt").exists()  # no output that looks done
    state = torch.load(tmp_path / "resumed" / "state.pt", weights_only=False)
    assert state["wall_s"] > 0
    state["wall_s"] = 1000.0  # stands for a long first process: the summary must count it
    state["started_at"] -= 3600.0  # and its start, an hour ago, is the run's start
    torch.save(state, tmp_path / "resumed" / "state.pt")
    epochs_seen = []
    summary = pretrain(cfg, data, tmp_path / "resumed", lambda r: epochs_seen.append(r["epoch"]))
    # The saved epochs are replayed to the logger (which skips what it has), then epoch 3 trains.
    assert epochs_seen == [0, 1, 2, 3] and summary["steps"] == 3 * 3
    assert summary["wall_s"] > 1000.0
    assert summary["finished_at"] - summary["started_at"] > 3600.0
    whole, resumed = (torch.load(tmp_path / d / "checkpoint.pt") for d in ("whole", "resumed"))
    for key, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    assert (tmp_path / "whole" / "history.json").read_text() == (
        tmp_path / "resumed" / "history.json"
    ).read_text()
    assert not (tmp_path / "resumed" / "state.pt").exists()


def test_a_state_of_another_config_is_not_resumed(tmp_path: Path, data: Path):
    with pytest.raises(_Killed):
        pretrain(_config(), data, tmp_path / "run", lambda r: (_ for _ in ()).throw(_Killed()))
    summary = pretrain(_config(base_lr=0.1), data, tmp_path / "run")
    assert summary["steps"] == 2 * 3  # trained from scratch


def _killed_run(cfg: dict, data: Path, out: Path) -> Path:
    def kill_after_epoch_1(record):
        if record["epoch"] == 1:
            raise _Killed

    with pytest.raises(_Killed):
        pretrain(cfg, data, out, kill_after_epoch_1)
    return out / "state.pt"


def test_an_unreadable_state_is_moved_aside_and_the_run_starts_over(
    tmp_path: Path, data: Path, capsys
):
    cfg = _config()
    state = _killed_run(cfg, data, tmp_path / "run")
    state.write_bytes(state.read_bytes()[:1000])  # truncated, as a full disk leaves it
    assert not check_resumable(tmp_path / "run", cfg)
    assert not state.exists() and (tmp_path / "run" / "state.pt.unreadable").is_file()
    message = capsys.readouterr().out
    assert "state.pt: unreadable, moved to state.pt.unreadable" in message
    assert message.count("\n") == 1
    pretrain(cfg, data, tmp_path / "run")
    pretrain(cfg, data, tmp_path / "whole")
    fresh, whole = (torch.load(tmp_path / d / "checkpoint.pt") for d in ("run", "whole"))
    for key, value in whole["model"].items():
        assert torch.equal(value, fresh["model"][key]), key


def test_the_state_of_another_config_is_refused_not_discarded(tmp_path: Path, data: Path):
    state = _killed_run(_config(), data, tmp_path / "run")
    assert check_resumable(tmp_path / "run", _config())
    # Evaluation settings are not the run's: a resume may see new ones.
    assert check_resumable(tmp_path / "run", _config().merged({"eval": {"knn_k": 7}}, "t"))
    with pytest.raises(ConfigError) as err:
        check_resumable(tmp_path / "run", _config(base_lr=0.1))
    assert f"{state} holds an interrupted run of another config" in str(err.value)
    assert "\n" not in str(err.value) and state.is_file()


def _one_step(cfg: RunConfig, views: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, dict]:
    torch.manual_seed(0)
    model = build_model(cfg)
    fmt, dtype = fast_path(cfg, model, torch.device("cpu"))
    criterion = SimSiamLoss("cosine", stop_gradient=True, symmetric=True)
    opt = build_optimizer(model, cfg)
    idx = torch.arange(len(views[0]))
    loss, _ = sgd_step(model, criterion, LiveTarget(), opt, [fmt(views)], idx, 0, dtype)
    return loss.item(), model.state_dict()


@pytest.mark.parametrize(
    ("compute", "tol"),
    [({"channels_last": True}, 1e-5), ({"precision": "bf16"}, 2e-2)],
    ids=["channels_last", "bf16"],
)
@pytest.mark.trains
def test_a_fast_path_switch_keeps_the_step_s_math(compute: dict, tol: float):
    off = {"channels_last": False, "precision": "fp32", "compile": False}
    torch.manual_seed(1)
    views = (torch.randn(16, 3, 16, 16), torch.randn(16, 3, 16, 16))
    plain = _config().merged({"compute": off}, "test")
    fast = plain.merged({"compute": compute}, "test")
    (loss_a, weights_a), (loss_b, weights_b) = _one_step(plain, views), _one_step(fast, views)
    # Measured: channels_last 4e-8 from fp32 at one thread, 4e-9 at two; bf16 7e-4.
    assert loss_b == pytest.approx(loss_a, abs=tol)
    conv = weights_b["backbone.conv1.weight"]
    if compute.get("channels_last"):
        assert conv.is_contiguous(memory_format=torch.channels_last)
    else:
        assert loss_b != loss_a  # bf16 did run: close to fp32, not equal
    assert weights_a.keys() == weights_b.keys()
    for key, w in weights_a.items():
        if w.is_floating_point():
            assert torch.allclose(w, weights_b[key], atol=tol * 0.1, rtol=tol), key


def test_autocast_is_bf16_on_cuda_only_unless_asked():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("auto", cuda) is torch.bfloat16
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    assert autocast_dtype("fp32", cuda) is None


def test_a_compiled_model_keeps_its_checkpoint_keys():
    cfg = _config().merged({"compute": {"compile": True}}, "test")
    eager = build_model(cfg).state_dict().keys()
    model = build_model(cfg)
    fast_path(cfg, model, torch.device("cpu"))
    assert model.state_dict().keys() == eager  # a checkpoint loads into an eager model


def test_cpu_threads_are_rounded_down_to_a_power_of_two():
    """At 3, 6 and 7 threads torch's channels_last backward pass crashes on a CPU."""
    lines, before = [], torch.get_num_threads()
    try:
        torch.set_num_threads(6)
        assert safe_cpu_threads(lines.append) == 4 == torch.get_num_threads()
        assert lines == [
            "torch threads: 4, not 6 (a power of two: at 3, 6 or 7 threads torch's "
            "channels_last backward pass crashes on a CPU)"
        ]
        torch.set_num_threads(2)
        assert safe_cpu_threads(lines.append) == 2 and len(lines) == 1
    finally:
        torch.set_num_threads(before)


def test_a_full_disk_under_torch_s_writer_is_one_oserror_naming_the_file(tmp_path, monkeypatch):
    """torch's zip writer says 'file write failed' in a RuntimeError without a path; a full
    disk is then ENOSPC naming the file (the CLI's one line), and no temporary is left."""
    from collections import namedtuple

    from simsiam_lab import rundir as rundir_module
    from simsiam_lab import train as train_module

    def full(obj, path):
        Path(path).write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(train_module.torch, "save", full)
    monkeypatch.setattr(rundir_module.shutil, "disk_usage", lambda p: usage(100, 100, 0))
    with pytest.raises(OSError) as err:
        train_module.atomic_save({"x": 1}, tmp_path / "state.pt")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "state.pt")
    assert list(tmp_path.iterdir()) == []
    # With room left, torch's own error stands: it is not a full disk.
    monkeypatch.setattr(rundir_module.shutil, "disk_usage", lambda p: usage(1 << 40, 0, 1 << 40))
    with pytest.raises(RuntimeError, match="PytorchStreamWriter"):
        train_module.atomic_save({"x": 1}, tmp_path / "state.pt")
    assert list(tmp_path.iterdir()) == []


def test_a_trainer_clears_the_half_written_files_an_earlier_one_left(tmp_path):
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    (run.root / ".state.pt.tmp-4242").write_bytes(b"half")
    (run.root / "state.pt").write_bytes(b"kept")
    with run.exclusive():
        assert not (run.root / ".state.pt.tmp-4242").exists()
    assert (run.root / "state.pt").read_bytes() == b"kept"
