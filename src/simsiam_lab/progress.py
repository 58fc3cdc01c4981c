"""Progress with an ETA for long work (decoding, pretraining epochs, linear probes): a tqdm bar
on a terminal; in a log file, a whole line every 30 s instead of carriage-return redraws."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")
LOG_INTERVAL_S = 30.0


class _Lines:
    """A stream for tqdm that writes each redraw as one line, so a log stays readable."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(
    iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str, unit: str
) -> tqdm:
    stream = sys.stderr
    style: dict[str, Any] = {"desc": desc, "unit": unit, "total": total}
    if stream.isatty():
        return tqdm(iterable, file=stream, leave=False, **style)
    return tqdm(
        iterable, file=_Lines(stream), mininterval=LOG_INTERVAL_S, ascii=True, ncols=90, **style
    )


def write(line: str) -> None:
    """One line on stdout; on a terminal, above the bar, which a plain print would land in the
    middle of (the bar is stderr's last line, without a newline)."""
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()  # in a job's log, in order with stderr's lines
