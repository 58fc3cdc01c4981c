import math

import pytest
import torch
from torch import nn

from simsiam_lab.evaluate import collapse_std
from simsiam_lab.report import RowResult, RunResult, batch_norm_std_floor, verdict


def _trial(
    status="ok",
    linear=50.0,
    knn=40.0,
    random_knn=20.0,
    ratio=0.9,
    share=0.3,
    losses=(-0.5, -0.9),
    similarity="cosine",
    batch=512,
):
    metrics = {
        "status": status,
        "linear_acc": linear,
        "knn_acc": knn,
        "random_init_knn": random_knn,
        "final_z_std_ratio": ratio,
        "z_top_share": share,
        "final_loss": losses[-1] if status == "ok" else None,
    }
    history = [{"epoch": i + 1, "loss": loss} for i, loss in enumerate(losses)]
    config = {"loss": {"similarity": similarity}, "optim": {"batch_size": batch}}
    return RunResult(config, metrics, history)


def _row(row_id, *trials):
    return RowResult(row_id, list(trials) or [_trial()])


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [(60.0, 50.0, "reproduced"), (50.5, 50.0, "inconclusive"), (40.0, 50.0, "not reproduced")],
)
def test_better_uses_the_margin(x, y, expected):
    rows = {"x": _row("x", _trial(linear=x)), "y": _row("y", _trial(linear=y))}
    assert verdict({"better": "x", "than": "y"}, rows, margin=1.0)[0] == expected


def test_similar_and_not_worse_use_the_margin():
    rows = {
        "x": _row("x", _trial(linear=50.4)),
        "y": _row("y", _trial(linear=50.0)),
        "z": _row("z", _trial(linear=55.0)),
    }
    assert verdict({"similar": "x", "to": "y"}, rows, 1.0)[0] == "reproduced"
    assert verdict({"similar": "z", "to": "y"}, rows, 1.0)[0] == "not reproduced"
    assert verdict({"not_worse": "y", "than": "x"}, rows, 1.0)[0] == "reproduced"
    assert verdict({"not_worse": "y", "than": "z"}, rows, 1.0)[0] == "not reproduced"


def test_the_trials_spread_widens_the_margin():
    noisy = _row("x", _trial(linear=50.0), _trial(linear=56.0), _trial(linear=62.0))
    rows = {"x": noisy, "y": _row("y", _trial(linear=52.0))}
    result, evidence = verdict({"better": "x", "than": "y"}, rows, 1.0)
    assert result == "inconclusive" and "margin 6.0" in evidence  # Δ 4 < std 6


def test_a_better_claim_needs_the_better_row_to_have_learned():
    rows = {"x": _row("x", _trial(linear=60.0, knn=20.5)), "y": _row("y", _trial(linear=40.0))}
    result, evidence = verdict({"better": "x", "than": "y"}, rows, 1.0)
    assert result == "inconclusive" and "random init" in evidence
    # ... but not the worse one: a collapsed row beaten by a trained one is a real result.
    rows = {"x": _row("x", _trial(linear=60.0)), "y": _row("y", _trial(linear=10.0, knn=10.0))}
    assert verdict({"better": "x", "than": "y"}, rows, 1.0)[0] == "reproduced"


def test_collapse_needs_a_flat_std_and_a_minimal_loss():
    rows = {
        "ok": _row("ok"),
        "flat": _row("flat", _trial(ratio=0.01, losses=(-0.5, -0.999))),
        "flat-high-loss": _row("flat-high-loss", _trial(ratio=0.01, losses=(-0.5, -0.6))),
        "nan": _row("nan", _trial(status="diverged", linear=None, knn=None, ratio=None)),
    }
    assert verdict({"not_collapsed": "ok"}, rows, 1.0)[0] == "reproduced"
    assert verdict({"collapsed": "flat"}, rows, 1.0)[0] == "reproduced"
    assert verdict({"collapsed": "flat-high-loss"}, rows, 1.0)[0] == "not reproduced"
    assert verdict({"not_collapsed": "flat"}, rows, 1.0)[0] == "not reproduced"
    assert verdict({"collapsed": "nan"}, rows, 1.0)[0] == "inconclusive"


def test_batch_norm_keeps_a_small_batch_above_the_std_threshold():
    # Outputs identical but for one image, through the affine-free BN that ends the projector.
    for batch in (64, 512):
        h = torch.zeros(batch, 128)
        h[0] = 100 * torch.randn(128)  # far above BN's eps
        z = nn.BatchNorm1d(128, affine=False)(h)
        ratio = collapse_std(z) * math.sqrt(128)
        assert ratio == pytest.approx(batch_norm_std_floor(batch), rel=1e-3)
    assert batch_norm_std_floor(64) > 0.1 > batch_norm_std_floor(512)


def test_collapse_onto_one_direction_counts_with_the_batch_s_loss_bound():
    # No-predictor at batch 64 as measured on the cpu profile: std at the BN floor, z on a line.
    line = _trial(ratio=0.27, share=0.9999, losses=(-0.5, -0.940), batch=64)
    spread = _trial(ratio=0.27, share=0.7, losses=(-0.5, -0.940), batch=64)
    # The same loss at the paper's batch is 0.06 above what a collapsed batch of 512 reaches.
    big_batch = _trial(ratio=0.27, share=0.9999, losses=(-0.5, -0.940), batch=512)
    rows = {"line": _row("line", line), "spread": _row("spread", spread)}
    rows["big"] = _row("big", big_batch)
    assert verdict({"collapsed": "line"}, rows, 1.0)[0] == "reproduced"
    assert verdict({"collapsed": "spread"}, rows, 1.0)[0] == "not reproduced"
    assert verdict({"collapsed": "big"}, rows, 1.0)[0] == "not reproduced"


def test_a_row_collapses_only_when_all_its_trials_do():
    row = _row("r", _trial(ratio=0.01, losses=(-0.5, -0.999)), _trial())
    assert not row.collapsed and row.status == "ok"


def test_instability():
    rows = {
        "ok": _row("ok"),
        "nan": _row("nan", _trial(status="diverged", linear=None, knn=None, ratio=None)),
        "rising": _row("rising", _trial(losses=(-0.9, -0.6))),
    }
    assert verdict({"unstable": "nan"}, rows, 1.0)[0] == "reproduced"
    assert verdict({"unstable": "rising"}, rows, 1.0)[0] == "reproduced"
    assert verdict({"unstable": "ok"}, rows, 1.0)[0] == "not reproduced"
