"""One claim's verdict from its rows' trials: the claim's kind decides which test."""

from __future__ import annotations

from ..claims import Claim
from .compare import compare
from .results import RowResult
from .sequential import LOOKS
from .verdict import NOT_TESTED, NOT_TRAINED, Verdict
from .votes import collapse_verdict, improving_verdict, instability_verdict, refresh_steps


def verdict(
    claim: Claim, rows: dict[str, RowResult], alpha: float, looks: tuple[int, ...] = LOOKS
) -> Verdict:
    """One claim, decided from its rows' trials; `alpha` is a comparison's one-sided share of
    the study's error rate; `looks`, the seeds a row has at each look (the profile's)."""
    if skipped := [rows[r] for r in claim.named if rows[r].status == "skipped"]:
        return Verdict(
            "inconclusive",
            "; ".join(
                f"{row.id}: not trained at this scale "
                f"({row.trials[0].metrics.get('reason') or 'not run at this scale'})"
                for row in skipped
            ),
            sequence={"looks": 0, "seeds": 0, "stopped": NOT_TRAINED, "next_seeds": None},
        )
    row = rows[claim.row]
    if claim.longer_than is not None:
        other = rows[claim.longer_than]
        steps, others = refresh_steps(row), refresh_steps(other)
        if steps is None or others is None or steps <= others:
            return Verdict(
                "inconclusive",
                f"{row.id} refreshes its target every {steps or '?'} SGD steps at this scale, "
                f"not less often than {other.id}'s {others or '?'}: the row does not test the "
                "longer interval the claim is about",
                sequence={"looks": 0, "seeds": 0, "stopped": NOT_TESTED, "next_seeds": None},
            )
    if claim.kind == "improving":
        return improving_verdict(row)
    if claim.kind == "unstable":
        return instability_verdict(row, rows[claim.other], looks)
    if not claim.compares:
        return collapse_verdict(claim.kind, row, looks)
    return compare(claim, rows, alpha, looks)
