"""The index: every table's claims and verdicts on one page, the study-wide count under Holm's
procedure, and what each verdict hangs on."""

from __future__ import annotations

from typing import Any

from ..claims import CHECKS
from .render import template
from .rules import RULES
from .stats import holm
from .verdict import ALPHA, NOT_JUDGED, VERDICTS
from .votes import CHOICES


def render_index(summaries: list[dict[str, Any]], commit: str, fmt: str = "md") -> str:
    """Every table's claims and verdicts on one page, as Markdown linking to each table's
    report or as one self-contained HTML page."""
    unjudged = sorted({t["profile"] for t in summaries if not t["judged"]})
    return template(f"index.{fmt}.j2").render(
        tables=summaries,
        totals=_totals(summaries),
        study=study_wide(summaries),
        sensitivity=sensitivity(summaries),
        unjudged=unjudged,
        rules=RULES,
        commit=commit,
    )


def _totals(summaries: list[dict[str, Any]]) -> dict[str, int]:
    """Each verdict's count over the judged tables, and their claims."""
    judged = [t for t in summaries if t["judged"]]
    totals = {
        verdict: sum(c["verdict"] == verdict for t in judged for c in t["claims"])
        for verdict in VERDICTS
    }
    return totals | {"claims": sum(t["claims_total"] for t in judged)}


def index_json(summaries: list[dict[str, Any]], commit: str) -> dict[str, Any]:
    """The index's counts, for a script: per table, over the judged tables (each table's
    Bonferroni), and study-wide (Holm over every comparison claim)."""
    return {
        "commit": commit,
        "tables": {
            t["table"]: {"profile": t["profile"], "judged": t["judged"]}
            | {v: sum(c["verdict"] == v for c in t["claims"]) for v in (*VERDICTS, NOT_JUDGED)}
            for t in summaries
        },
        "totals": _totals(summaries),
        "study_wide": study_wide(summaries),
        "sensitivity": sensitivity(summaries),
    }


def _under_holm(summaries: list[dict[str, Any]]) -> list[tuple[dict[str, Any], bool]]:
    """The judged tables' comparison claims, the study-wide family, in the index's order, each
    with whether Holm's procedure over that family at the one-sided ALPHA reproduces it. A
    comparison without a p-value (a row skipped, one trial, a row that did not beat its random
    init) stays in the family and is never reproduced."""
    family = [c for t in summaries if t["judged"] for c in t["claims"] if CHECKS.get(c["kind"])]
    rejected = holm([1.0 if c["p_value"] is None else c["p_value"] for c in family], ALPHA)
    return list(zip(family, rejected, strict=True))


def sensitivity(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """What each judged verdict hangs on: per claim, each choice within whose range the
    verdict would change (a margin, a rule's threshold, the family a count corrects over),
    its value, where the verdict changes and to what; and how many claims no such choice
    changes."""
    under_holm = {id(c): rejected for c, rejected in _under_holm(summaries)}
    rows, unchanged = [], 0
    for t in (t for t in summaries if t["judged"]):
        for c in t["claims"]:
            unit = " (final loss)" if c["kind"] == "loss_above" else ""
            found = [
                f"{CHOICES[ch['choice']]}{unit} {ch['rule']:.3g}: "
                f"{ch['to']} at {ch['flips_at']:.3g}"
                for ch in c["choices"]
            ]
            if c["verdict"] == "reproduced" and under_holm.get(id(c)) is False:
                found.append(
                    "family, its table (Bonferroni): inconclusive over the whole study (Holm)"
                )
            if found:
                rows.append(
                    {
                        "table": t["table"],
                        "claim": c["text"],
                        "verdict": c["verdict"],
                        "choices": found,
                    }
                )
            unchanged += not found
    return {"rows": rows, "unchanged": unchanged}


def study_wide(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline count under one correction for the whole study: Holm's procedure over
    every comparison claim of the judged tables at the one-sided ALPHA, beside the count with
    Bonferroni within each table (_under_holm)."""
    claims = [c for t in summaries if t["judged"] for c in t["claims"]]
    family = _under_holm(summaries)
    return {
        "family": len(family),
        "method": "holm",
        "alpha": ALPHA,
        "reproduced_holm": sum(rejected for _, rejected in family),
        "reproduced_per_table": sum(c["verdict"] == "reproduced" for c, _ in family),
        "other_claims": len(claims) - len(family),
    }
