from simsiam_lab.sources import closure, rendering_code, training_code


def test_a_report_edit_retrains_nothing_and_a_rule_edit_re_renders():
    training, rendering = set(training_code()), set(rendering_code())
    report_only = {f"simsiam_lab/{m}.py" for m in ("report", "collapse", "stability", "stats")}
    assert not training & report_only
    assert report_only <= rendering
    assert "simsiam_lab/templates/table.md.j2" in rendering
    # The model, the loss and the data path are what a pretraining runs.
    assert {f"simsiam_lab/{m}.py" for m in ("model", "loss", "train", "stream")} <= training


def test_the_closure_follows_lazy_imports_and_stops_at_an_excluded_module():
    # The CLI's jobs import the report code only inside them: it is reached, unless excluded.
    assert "simsiam_lab/report.py" in closure(["cli.py"])
    assert "simsiam_lab/stats.py" not in closure(["cli.py"], exclude=("report.py",))
