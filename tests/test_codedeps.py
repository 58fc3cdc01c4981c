from simsiam_lab.codedeps import closure, imports, rendering_code, training_code


def test_a_report_edit_retrains_nothing_and_a_rule_edit_re_renders():
    training, rendering = set(training_code()), set(rendering_code())
    verdicts = {f"simsiam_lab/verdicts/{m}.py" for m in ("report", "collapse", "stability")}
    assert not training & verdicts
    assert verdicts <= rendering
    assert "simsiam_lab/templates/table.md.j2" in rendering
    # The model, the loss and the data path are what a pretraining runs; its curves too.
    run = {f"simsiam_lab/{m}.py" for m in ("model", "loss", "train", "stream", "cli", "curves")}
    assert run <= training


def test_the_closure_follows_lazy_and_subpackage_imports():
    # The CLI imports the report commands only inside a function: they are reached.
    assert "simsiam_lab/verdicts/report.py" in closure(["cli.py"])
    # `from . import stability` in the subpackage names a module; `..config` the parent's.
    assert {"verdicts/stability.py", "config.py"} <= set(imports("verdicts/results.py"))
    assert "simsiam_lab/verdicts/__init__.py" in closure(["verdicts/stats.py"])
