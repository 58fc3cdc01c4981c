import pytest

from simsiam_lab.report import RunResult, verdict


def _run(row, status="ok", linear=50.0, knn=40.0, random_knn=20.0, ratio=0.9, losses=(-0.5, -0.9)):
    metrics = {
        "status": status,
        "linear_acc": linear,
        "knn_acc": knn,
        "random_init_knn": random_knn,
        "final_z_std_ratio": ratio,
    }
    history = [{"epoch": i + 1, "loss": loss} for i, loss in enumerate(losses)]
    return RunResult(row, {}, metrics, history)


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [(60.0, 50.0, "reproduced"), (50.5, 50.0, "inconclusive"), (40.0, 50.0, "not reproduced")],
)
def test_better_uses_the_margin(x, y, expected):
    runs = {"x": _run("x", linear=x), "y": _run("y", linear=y)}
    assert verdict({"better": "x", "than": "y"}, runs, margin=1.0)[0] == expected


def test_similar_uses_the_margin():
    runs = {"x": _run("x", linear=50.4), "y": _run("y", linear=50.0), "z": _run("z", linear=55.0)}
    assert verdict({"similar": "x", "to": "y"}, runs, 1.0)[0] == "reproduced"
    assert verdict({"similar": "z", "to": "y"}, runs, 1.0)[0] == "not reproduced"


def test_comparisons_of_untrained_runs_are_inconclusive():
    runs = {"x": _run("x", linear=60.0, knn=20.5), "y": _run("y", linear=40.0)}
    result, evidence = verdict({"better": "x", "than": "y"}, runs, 1.0)
    assert result == "inconclusive" and "random init" in evidence


def test_collapse_and_instability():
    runs = {
        "ok": _run("ok"),
        "flat": _run("flat", ratio=0.01, losses=(-0.5, -0.999)),
        "nan": _run("nan", status="diverged", linear=None, knn=None, ratio=None),
        "rising": _run("rising", losses=(-0.9, -0.6)),
    }
    assert verdict({"not_collapsed": "ok"}, runs, 1.0)[0] == "reproduced"
    assert verdict({"not_collapsed": "flat"}, runs, 1.0)[0] == "not reproduced"
    assert verdict({"not_collapsed": "nan"}, runs, 1.0)[0] == "inconclusive"
    assert verdict({"unstable": "nan"}, runs, 1.0)[0] == "reproduced"
    assert verdict({"unstable": "rising"}, runs, 1.0)[0] == "reproduced"
    assert verdict({"unstable": "ok"}, runs, 1.0)[0] == "not reproduced"
