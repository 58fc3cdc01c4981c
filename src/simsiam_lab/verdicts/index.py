"""The index: every table's claims and verdicts on one page, the study-wide count under Holm's
procedure over the comparisons that were tested, and what each verdict hangs on."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from ..claims import CHECKS
from .compare import compared
from .render import template
from .rules import RULES
from .sequential import LOOKS, Design, level_holm, sequential_verdict
from .verdict import ALPHA, NOT_JUDGED, NOT_TESTABLE, VERDICTS
from .votes import CHOICES


def render_index(summaries: list[dict[str, Any]], commit: str, fmt: str = "md") -> str:
    """Every table's claims and verdicts on one page, as Markdown linking to each table's
    report or as one self-contained HTML page."""
    unjudged = sorted({t["profile"] for t in summaries if not t["judged"]})
    summaries = study_verdicts(summaries)
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
    """The index's counts, for a script: per table and over the judged tables, with each
    comparison's verdict the study-wide one (Holm over the tested comparisons), and the
    family it controls."""
    summaries = study_verdicts(summaries)
    study = study_wide(summaries)
    return {
        "commit": commit,
        "tables": {
            t["table"]: {"profile": t["profile"], "judged": t["judged"]}
            | {v: sum(c["verdict"] == v for c in t["claims"]) for v in (*VERDICTS, NOT_JUDGED)}
            for t in summaries
        },
        "totals": _totals(summaries),
        "headline": _headline(summaries, study),
        "study_wide": study,
        "sensitivity": sensitivity(summaries),
    }


def tested(claim: dict[str, Any]) -> bool:
    """A comparison that was put to its test: its rows trained and learned, its margin is no
    finer than the instrument, and its paired differences are in the summary."""
    return bool(CHECKS.get(claim["kind"])) and bool(claim.get("tested"))


@cache
def _reproduces(
    kind: str, diffs: tuple[float, ...], margin: float, looks: tuple[int, ...], level: float
) -> bool:
    """Whether the claim's sequential test, at one-sided `level`, reproduces it on its seeds."""
    design = Design(looks=looks, alpha=level)
    return sequential_verdict(compared(kind).rule, list(diffs), margin, design).result == (
        "reproduced"
    )


def _decides(claim: dict[str, Any]):
    diffs, margin = tuple(claim["diffs"]), float(claim["margin"] or 0.0)
    looks = tuple(claim["sequence"].get("planned") or LOOKS)
    return lambda level: _reproduces(claim["kind"], diffs, margin, looks, level)


def _under_holm(summaries: list[dict[str, Any]]) -> list[tuple[dict[str, Any], bool]]:
    """The study-wide family, the judged tables' tested comparison claims in the index's order,
    each with whether Holm's procedure over it at the one-sided ALPHA reproduces it (each
    claim's sequential test run at Holm's levels on its own seeds: sequential.level_holm)."""
    family = [c for t in summaries if t["judged"] for c in t["claims"] if tested(c)]
    rejected = level_holm([_decides(c) for c in family], ALPHA)
    return list(zip(family, rejected, strict=True))


def study_verdicts(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The summaries with each tested comparison's verdict the study's: reproduced where
    Holm over the family reproduces it, which can only add to its page's (decided there at
    ALPHA over every planned comparison, Bonferroni)."""
    found = copy.deepcopy(summaries)
    for claim, rejected in _under_holm(found):
        if rejected and claim["verdict"] != "reproduced":
            claim["evidence"] += (
                f"; reproduced under the study's Holm over its tested comparisons (its "
                f"table's page, at one-sided {claim['sequence']['alpha']:.4g}: "
                f"{claim['verdict']})"
            )
            claim["verdict"] = "reproduced"
    for t in found:
        t["claims_reproduced"] = sum(c["verdict"] == "reproduced" for c in t["claims"])
    return found


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
            if id(c) in under_holm:
                within = _decides(c)(ALPHA / _comparisons(t))
                if within != under_holm[id(c)]:
                    other = "reproduced" if within else "inconclusive"
                    found.append(f"family, the study's (Holm): {other} within its table")
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
    """The headline's family: Holm's procedure over the judged tables' tested comparison
    claims at the one-sided ALPHA; the comparisons left out and why; the per-table count
    (Bonferroni within each table) beside it; and the error statement of the rate claims."""
    judged = [t for t in summaries if t["judged"]]
    family = _under_holm(summaries)
    per_table = sum(
        _decides(c)(ALPHA / _comparisons(t)) for t in judged for c in t["claims"] if tested(c)
    )
    untested = [
        {"table": t["table"], "claim": c["text"], "why": _why_untested(c)}
        for t in judged
        for c in t["claims"]
        if CHECKS.get(c["kind"]) and not tested(c)
    ]
    rates = [c for t in judged for c in t["claims"] if c["kind"] in RATE_KINDS]
    return {
        "family": len(family),
        "family_claims": [c["text"] for c, _ in family],
        "method": "holm",
        "alpha": ALPHA,
        "reproduced_holm": sum(rejected for _, rejected in family),
        "reproduced_per_table": per_table,
        "untested": untested,
        "rate_claims": len(rates),
        "rate_alpha": ALPHA,
        "rate_expected_errors": len(rates) * ALPHA,
        "other_claims": sum(len(t["claims"]) for t in judged) - len(family) - len(untested),
    }


def _headline(summaries: list[dict[str, Any]], study: dict[str, Any]) -> dict[str, Any]:
    """The study's count as one statement: the verdicts over every judged claim, comparisons
    under Holm over the tested ones (`study`: study_wide's), and the family each kind of claim
    is controlled in."""
    totals = _totals(summaries)
    return {
        "reproduced": totals["reproduced"],
        "claims": totals["claims"],
        "decided": totals["reproduced"] + totals["not reproduced"],
        "not_testable": totals[NOT_TESTABLE],
        "inconclusive": totals["inconclusive"],
        "family": f"comparisons: Holm at one-sided {ALPHA} over the {study['family']} tested "
        f"({len(study['untested'])} untested listed apart); collapse and instability: an "
        f"exact rate test each, one-sided {ALPHA} at each end; the kNN trend: a t test at "
        f"one-sided {ALPHA}",
    }


def _comparisons(table: dict[str, Any]) -> int:
    """A table's comparison claims: the family of its Bonferroni count."""
    return max(1, sum(bool(CHECKS.get(c["kind"])) for c in table["claims"]))


# The claims read as a rate over trials (collapse, instability): an exact test each.
RATE_KINDS = ("collapsed", "not_collapsed", "unstable")


def _why_untested(claim: dict[str, Any]) -> str:
    if claim["verdict"] == NOT_TESTABLE:
        return "margin finer than the instrument at this scale"
    if "not trained at this scale" in claim["evidence"]:
        return "a row not trained at this scale"
    return "a row not shown to learn over its random init, or no seeds in common"
