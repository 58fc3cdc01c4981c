"""The next look of the sequential study: which rows need more seeds, read from the table
reports' claims (each claim's looks and why it stopped), and what training them would cost."""

from __future__ import annotations

import statistics
from typing import Any

from .sequential import WAITING


def wanted(summaries: list[dict[str, Any]]) -> dict[str, int]:
    """{TABLE:ROW: trials} that the judged tables' waiting claims ask for: each claim still
    undecided, neither futile nor out of budget, wants its next look's seeds of every row it
    names."""
    found: dict[str, int] = {}
    for table in (t for t in summaries if t["judged"]):
        for claim in table["claims"]:
            sequence = claim.get("sequence") or {}
            if sequence.get("stopped") != WAITING or not sequence.get("next_seeds"):
                continue
            for row in claim["rows"]:
                ref = f"{table['table']}:{row}"
                found[ref] = max(found.get(ref, 0), int(sequence["next_seeds"]))
    return found


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
