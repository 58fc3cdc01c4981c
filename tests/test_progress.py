import io

from simsiam_lab import progress as progress_module
from simsiam_lab.progress import progress, write


def test_in_a_log_progress_is_whole_lines_with_an_eta(monkeypatch):
    log = io.StringIO()  # not a terminal
    monkeypatch.setattr(progress_module.sys, "stderr", log)
    monkeypatch.setattr(progress_module, "LOG_INTERVAL_S", 0.0)
    assert list(progress(range(3), total=3, desc="train", unit="img")) == [0, 1, 2]
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0].startswith("train:   0%") and lines[-1].startswith("train: 100%")
    assert "3/3" in lines[-1] and "<" in lines[-1]  # elapsed<remaining: tqdm's ETA


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_line_prints_above_the_bar_not_at_its_end(monkeypatch):
    screen = _Terminal()  # stdout and stderr share one terminal
    monkeypatch.setattr(progress_module.sys, "stdout", screen)
    monkeypatch.setattr(progress_module.sys, "stderr", screen)
    bar = progress(total=2, desc="pretrain", unit="epoch")
    bar.update(1)
    write("epoch 1: loss -0.5")
    bar.close()
    text = screen.getvalue()
    assert "\repoch 1: loss -0.5\n" in text  # the bar's line cleared first
    assert "]epoch" not in text  # as a plain print writes it: `…epoch/s]epoch 1: …`
