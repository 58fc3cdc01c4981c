"""The claim grammar of a table's YAML: a claim's check names one kind and the rows it compares,
with a margin where the kind needs one. Parsed once, at planning, into a Claim (a misspelt claim
stops the plan); judged by the verdicts package."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from .config import Config
from .errors import ConfigError

# A claim's check: one kind naming a row, plus the other row for comparisons.
CHECKS = {
    "collapsed": None,
    "not_collapsed": None,
    "unstable": None,
    "improving": None,
    "better": "than",
    "not_worse": "than",
    "similar": "to",
    "loss_above": "than",
}


@dataclass(frozen=True)
class Claim:
    """A table's claim: its kind (a key of CHECKS), the row it is about, the row it is compared
    with or judged against, its margin as the table declares it (in points or as a share of
    the reference row's gain, with the reason), and the row whose target interval its row's
    must exceed at this scale (refresh_longer_than)."""

    text: str
    kind: str
    row: str
    other: str | None = None
    margin: float | None = None
    margin_of_gain: float | None = None
    margin_reason: str | None = None
    longer_than: str | None = None

    @classmethod
    def parse(cls, raw: Any, rows: Collection[str], where: str) -> Claim:
        """A claim of a table's YAML, checked against the grammar and the table's rows."""
        check_claim(raw, rows, where)
        return cls.of_check(raw["text"], raw["check"], raw.get("margin_reason"))

    @classmethod
    def of_check(cls, text: str, check: Config, margin_reason: str | None = None) -> Claim:
        """A claim from its (checked) `check` mapping."""
        kind = claim_kind(check)
        other = CHECKS[kind] or REFERENCE.get(kind)
        return cls(
            text=text,
            kind=kind,
            row=check[kind],
            other=check[other] if other else None,
            margin=check.get("margin"),
            margin_of_gain=check.get("margin_of_gain"),
            margin_reason=margin_reason,
            longer_than=check.get(LONGER_THAN),
        )

    @property
    def compares(self) -> bool:
        """A comparison of two rows' means (the family the study's error rate controls)."""
        return CHECKS[self.kind] is not None

    @property
    def named(self) -> list[str]:
        """Every row the claim names, its own first."""
        return [r for r in (self.row, self.other, self.longer_than) if r is not None]


def claim_kind(check: Config) -> str:
    """The one CHECKS kind a (validated) claim's check names; CHECKS[kind] is its other row's
    key for a comparison, None for a collapse or instability claim."""
    return next(k for k in CHECKS if k in check)


# The equivalence or non-inferiority margin is part of the claim, so the table must state it:
# in accuracy points (`margin`), or as a share of what the reference row learned over its random
# init at the profile (`margin_of_gain`), a unit that carries from one scale to another.
MARGIN_REQUIRED = ("not_worse", "similar")
MARGINS = ("margin", "margin_of_gain")
# Kinds outside the comparisons' family that still name a reference row: a run's step noise
# is judged against the reference's (stability.py).
REFERENCE = {"unstable": "than"}
# A claim about a target refreshed less often than another row's holds only at a scale where
# its interval in SGD steps is the longer (§5.2's "once per epoch" against k = 100).
LONGER_THAN = "refresh_longer_than"


def check_claim(claim: Any, rows: Collection[str], where: str) -> None:
    check = claim["check"]
    kinds = [k for k in CHECKS if k in check]
    if len(kinds) != 1:
        raise ConfigError(
            f"{where}: expected {{text: ..., check: {{KIND: ROW, ...}}}} with one KIND of "
            f"{', '.join(CHECKS)}"
        )
    other = CHECKS[kinds[0]] or REFERENCE.get(kinds[0])
    keys = (kinds[0], other, *MARGINS, LONGER_THAN)
    if unknown := sorted(set(check) - set(keys)):
        allowed = ", ".join(k for k in keys if k)
        raise ConfigError(f"{where}: unknown key 'check.{unknown[0]}' (allowed here: {allowed})")
    named = [check[kinds[0]]] + ([check.get(other)] if other else [])
    named += [check[LONGER_THAN]] if LONGER_THAN in check else []
    if unknown := [r for r in named if r not in rows]:
        missing = f"the '{kinds[0]}' check needs '{other}: ROW'; " if unknown[0] is None else ""
        raise ConfigError(f"{where}: {missing}unknown row {unknown[0]!r} (rows: {', '.join(rows)})")
    _check_margin(check, kinds[0], claim, where)


def _check_margin(check: Config, kind: str, claim: Config, where: str) -> None:
    given = [k for k in MARGINS if k in check]
    if kind in MARGIN_REQUIRED and not given:
        raise ConfigError(
            f"{where}: a '{kind}' check needs a margin: 'margin_of_gain: 0.015' (a share of "
            "what its reference row learned over random init) or 'margin: 1.0' (accuracy points)"
        )
    if len(given) > 1:
        raise ConfigError(f"{where}: give one of margin and margin_of_gain, not both")
    key = given[0] if given else None
    value = check.get(key)
    if key and (isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0):
        raise ConfigError(
            f"{where}: {key} = {value!r}: must be a number >= 0 (accuracy points)"
            if key == "margin"
            else f"{where}: margin_of_gain = {value!r}: must be a share >= 0 (0.015 is 1.5%)"
        )
    if key == "margin_of_gain" and value >= 1:
        raise ConfigError(
            f"{where}: margin_of_gain = {value!r}: a share of the learned gain, below 1 "
            "(0.015 is 1.5%); for accuracy points use 'margin'"
        )
    if (key is None) != ("margin_reason" not in claim):
        raise ConfigError(
            f"{where}: a margin needs its reason beside it, and a reason its margin: "
            "{text: ..., check: {..., margin_of_gain: 0.015}, margin_reason: why 1.5%}"
        )
