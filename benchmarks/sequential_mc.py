"""The sequential designs' operating characteristics, by Monte-Carlo runs of the whole
procedure (looks, futility and the budget included), as the README's table prints them:

    python benchmarks/sequential_mc.py

Comparisons: paired seed differences, normal with SD 1 (the t statistics do not depend on it),
at the edge of each claim's null (the difference at the threshold; better and not worse read the
same t statistic) and at the difference the design states it detects 80% of the time; at the cpu
study's level (0.05 over its 18 planned comparisons) and at 0.05. Rates: trials that collapse
with probability one half (the edge of both nulls) and 0.1 (a clear rate), with and without a
fifth of the trials undecided.
Seeded: the same figures on every machine; tests/test_sequential.py holds the README to them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from simsiam_lab.verdicts.sequential import Design, RateDesign, simulate, simulate_rates

STUDIES = 12_000  # a rate of 0.05 to within 0.002 (one Monte-Carlo standard error)
LEVELS = {"0.05/18 (cpu)": 0.05 / 18, "0.05": 0.05}


@dataclass(frozen=True)
class Row:
    """One procedure's figures: how often it says 'reproduced' with no effect (the edge of the
    null), at `level`, and at the stated effect (None: no effect stated), with the seeds (or
    trials) a row trains on average."""

    procedure: str
    level: float
    null: float
    null_seeds: float
    effect: str
    power: float | None
    power_seeds: float | None
    stated: bool = True  # the design states this power (not where trials' signals disagree)

    def line(self) -> str:
        power = "–" if self.power is None else f"{self.effect}: {self.power:.3f}"
        seeds = "–" if self.power_seeds is None else f"{self.power_seeds:.1f}"
        return (
            f"| {self.procedure} | {self.null:.4f} (± {_se(self.level):.4f}) | "
            f"{self.null_seeds:.1f} | {power} | {seeds} |"
        )


def comparison_rows() -> list[Row]:
    rows = []
    for name, alpha in LEVELS.items():
        design = Design(alpha=alpha)
        shift = design.detects(1.0)
        null = simulate(design, "better", 0.0, 1.0, 0.0, STUDIES, seed=7)
        power = simulate(design, "better", shift, 1.0, 0.0, STUDIES, seed=8)
        rows.append(
            Row(
                f"better or not worse (X − Y against its threshold), one-sided {name}",
                alpha,
                null.reproduced,
                null.mean_seeds,
                f"{shift:.2f} SD above",
                power.reproduced,
                power.mean_seeds,
            )
        )
        null = simulate(design, "similar", 1.0, 1.0, 1.0, STUDIES, seed=9)
        rows.append(
            Row(
                f"similar (margin 1 SD, X − Y at it), one-sided {name}",
                alpha,
                null.reproduced,
                null.mean_seeds,
                "",
                None,
                None,
                stated=False,
            )
        )
    return rows


def rate_rows() -> list[Row]:
    design, rows = RateDesign(), []
    for unsure in (0.0, 0.2):
        null = simulate_rates(design, True, 0.5, unsure, STUDIES, seed=11)
        clear = simulate_rates(design, False, 0.1, unsure, STUDIES, seed=12)
        rows.append(
            Row(
                f"collapse rate against 1/2, {unsure:.0%} of trials with signals that disagree",
                design.alpha,
                max(null.reproduced, null.not_reproduced),
                null.mean_seeds,
                "rate 0.1",
                clear.reproduced,
                clear.mean_seeds,
                stated=unsure == 0.0,
            )
        )
    return rows


def _se(rate: float) -> float:
    return math.sqrt(rate * (1 - rate) / STUDIES)


def table(rows: list[Row]) -> str:
    head = [
        f"| procedure, level | 'reproduced' with no effect, of {STUDIES:,} studies "
        "(± 1 MC SE) | seeds a row | reproduced at the stated effect | seeds a row |",
        "|---|--:|--:|--:|--:|",
    ]
    return "\n".join(head + [row.line() for row in rows])


def measure() -> list[Row]:
    return comparison_rows() + rate_rows()


if __name__ == "__main__":
    print(table(measure()))
