"""The next look of the sequential study: which rows need more seeds, read from the table
reports' claims (each claim's looks and why it stopped), and what training them would cost."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from .sequential import WAITING


@dataclass(frozen=True)
class Waiting:
    """A claim that waits for its next look: the trials each of its rows needs then, and the
    seeds a row it would need to be decided at its estimate and SD (None: not estimated)."""

    text: str
    trials: dict[str, int]  # TABLE:ROW: trials at its next look
    needed: int | None


def waiting(summaries: list[dict[str, Any]]) -> list[Waiting]:
    """The judged tables' claims still undecided (study-wide: pass the summaries through
    index.study_verdicts, where Holm may decide what a page left waiting), neither futile nor
    out of budget, the most
    decidable first (the fewest seeds needed): where a budget runs out, the claims it leaves
    are those the next look was least likely to decide."""
    found = []
    for table in (t for t in summaries if t["judged"]):
        for claim in table["claims"]:
            sequence = claim.get("sequence") or {}
            if sequence.get("stopped") != WAITING or not sequence.get("next_seeds"):
                continue
            if claim["verdict"] != "inconclusive":  # decided study-wide (index.study_verdicts)
                continue
            rows = {f"{table['table']}:{row}": int(sequence["next_seeds"]) for row in claim["rows"]}
            found.append(Waiting(claim["text"], rows, sequence.get("seeds_needed")))
    return sorted(found, key=lambda w: math.inf if w.needed is None else w.needed)


def job_seconds(summaries: list[dict[str, Any]]) -> dict[str, float]:
    """{TABLE:ROW: the median measured seconds of one of its trials, its pretraining and its
    evaluation (its pretraining alone, for runs that predate the evaluation's time)}."""
    found = {}
    for table in summaries:
        for row_id, row in table["rows"].items():
            times = [t["job_s"] for t in row["trials"] if t.get("job_s")]
            if times:
                found[f"{table['table']}:{row_id}"] = statistics.median(times)
    return found
