"""One claim's verdict from its rows' trials: the claim's kind decides which test."""

from __future__ import annotations

from typing import Any

from ..claims import CHECKS, LONGER_THAN, REFERENCE, claim_kind
from .compare import compare
from .results import RowResult
from .verdict import Verdict
from .votes import collapse_verdict, improving_verdict, instability_verdict, refresh_steps


def verdict(check: dict[str, Any], rows: dict[str, RowResult], alpha: float) -> Verdict:
    """One claim's check, decided from the rows' trials; `alpha` is this claim's one-sided
    share of the table's error rate."""
    named = [rows[v] for k, v in check.items() if k in CHECKS or k in ("than", "to", LONGER_THAN)]
    if skipped := [r for r in named if r.status == "skipped"]:
        reason = skipped[0].trials[0].metrics.get("reason") or "not run at this scale"
        return Verdict("inconclusive", f"{skipped[0].id}: not trained at this scale ({reason})")
    kind = claim_kind(check)
    if LONGER_THAN in check:
        row, other = rows[check[kind]], rows[check[LONGER_THAN]]
        steps, others = refresh_steps(row), refresh_steps(other)
        if steps is None or others is None or steps <= others:
            return Verdict(
                "inconclusive",
                f"{row.id} refreshes its target every {steps or '?'} SGD steps at this scale, "
                f"not less often than {other.id}'s {others or '?'}: the row does not test the "
                "longer interval the claim is about",
            )
    if kind == "improving":
        return improving_verdict(rows[check[kind]])
    if kind in REFERENCE:
        return instability_verdict(rows[check[kind]], rows[check[REFERENCE[kind]]])
    if CHECKS[kind] is None:
        return collapse_verdict(kind, rows[check[kind]])
    return compare(kind, check, rows, alpha)
