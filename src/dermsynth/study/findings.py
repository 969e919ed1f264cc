"""Findings: what a study shows, stated by fixed rules from its numbers, favourable or not.

Rules (also printed in the report's Methods):

1. For every direction, augmented condition and test group, the synthetic arm at the full dose
   is set against every other arm the study trained (``real``, ``real+seed`` and each control
   at the same dose), on the augmented condition's test images of that group.
2. A comparison is *better* or *worse* only when its Holm-adjusted p-value over the primary
   family (every such comparison of the study) is below ``alpha`` (0.05); otherwise it is *no
   significant difference*, whatever the point estimate. The raw and Benjamini-Hochberg p are
   given beside it.
3. Where ``real+seed+extra-real`` ran, the synthetic arm's distance to it is reported: the
   accuracy more real images of the target group reached at the same count.
4. Harms: every spillover comparison of the synthetic arm at the full dose against
   ``real+seed`` (other conditions, and all conditions together, in every test group) with a
   negative difference is listed, largest drop first, significant after correction (in the
   spillover family) or not.

Every cell produces a row, in both directions: nothing is left out because it is unfavourable.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from dermsynth.arms import ARMS, REAL_SEED, SYNTHETIC
from dermsynth.schema import ALL_CONDITIONS

ALPHA = 0.05
EXTRA_REAL = "real+seed+extra-real"
FINDING_COLUMNS: tuple[str, ...] = (
    "kind",
    "direction",
    "augmented",
    "condition",
    "fst_group",
    "arm_other",
    "dose",
    "n",
    "accuracy_synthetic",
    "accuracy_other",
    "difference",
    "ci_low",
    "ci_high",
    "p",
    "p_holm",
    "p_bh",
    "verdict",
    "sentence",
)


def verdict(difference: float, p_adjusted: float, alpha: float = ALPHA) -> str:
    """``better``, ``worse`` or ``no significant difference`` (rule 2)."""
    if math.isnan(p_adjusted) or math.isnan(difference) or p_adjusted >= alpha:
        return "no significant difference"
    return "better" if difference > 0 else "worse"


def _fmt(value: float, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _sentence(row: dict[str, Any]) -> str:
    where = f"{row['direction']}, {row['condition']} in FST {row['fst_group']}"
    if row["kind"] == "ceiling":
        return (
            f"{where}: synthetic {_fmt(row['accuracy_synthetic'])} vs extra-real "
            f"{_fmt(row['accuracy_other'])} ({_fmt(row['difference'], True)} to the ceiling, N={row['n']})"
        )
    stats = (
        f"{_fmt(row['difference'], True)} (95% CI {_fmt(row['ci_low'], True)} to "
        f"{_fmt(row['ci_high'], True)}), p={_fmt(row['p'])}, Holm p={_fmt(row['p_holm'])}, N={row['n']}"
    )
    return (
        f"{where}: synthetic {_fmt(row['accuracy_synthetic'])} vs {row['arm_other']} "
        f"{_fmt(row['accuracy_other'])}, {stats}: {row['verdict']}"
    )


def _row(kind: str, comparison: pd.Series, condition: str) -> dict[str, Any]:
    row = {
        "kind": kind,
        "direction": comparison["direction"],
        "augmented": comparison["augmented"],
        "condition": condition,
        "fst_group": comparison["fst_group"],
        "arm_other": comparison["arm_a"],
        "dose": int(comparison["dose_b"]),
        "n": int(comparison["n"]),
        "accuracy_synthetic": float(comparison["accuracy_b"]),
        "accuracy_other": float(comparison["accuracy_a"]),
        "difference": float(comparison["difference"]),
        "ci_low": float(comparison["ci_low"]),
        "ci_high": float(comparison["ci_high"]),
        "p": float(comparison["p"]),
        "p_holm": float(comparison["p_holm"]),
        "p_bh": float(comparison["p_bh"]),
    }
    row["verdict"] = verdict(row["difference"], row["p_holm"])
    if kind == "ceiling":
        row["verdict"] = "ceiling"
        row["difference"] = row["accuracy_other"] - row["accuracy_synthetic"]
    row["sentence"] = _sentence(row)
    return row


def findings_table(comparisons: pd.DataFrame, full_dose: int) -> pd.DataFrame:
    """Every finding of a study by the rules of this module (``FINDING_COLUMNS``)."""
    if comparisons.empty:
        return pd.DataFrame(columns=list(FINDING_COLUMNS))
    at_full = comparisons[
        (comparisons["arm_b"] == SYNTHETIC) & (comparisons["dose_b"] == full_dose)
    ]
    rows: list[dict[str, Any]] = []
    primary = at_full[at_full["family"] == "primary"]
    for _, comparison in primary.iterrows():
        kind = "ceiling" if comparison["arm_a"] == EXTRA_REAL else "comparison"
        rows.append(_row(kind, comparison, comparison["augmented"]))
    spill = at_full[(at_full["family"] == "spillover") & (at_full["arm_a"] == REAL_SEED)]
    drops = spill[spill["difference"] < 0].sort_values("difference", kind="stable")
    for _, comparison in drops.iterrows():
        rows.append(_row("harm", comparison, comparison["condition"]))
    frame = pd.DataFrame.from_records(rows, columns=list(FINDING_COLUMNS))
    order = {name: i for i, name in enumerate(ARMS)}
    frame = frame.assign(
        _kind=frame["kind"].map({"comparison": 0, "ceiling": 1, "harm": 2}),
        _arm=frame["arm_other"].map(order),
        _all=(frame["condition"] == ALL_CONDITIONS).astype(int),
    )
    frame = frame.sort_values(
        ["_kind", "direction", "augmented", "fst_group", "_arm"], kind="stable"
    ).drop(columns=["_kind", "_arm", "_all"])
    return frame.reset_index(drop=True)


def headline(findings: pd.DataFrame) -> dict[str, int]:
    """Counts of the primary comparisons by verdict, and the harms found."""
    comparisons = findings[findings["kind"] == "comparison"]
    counts = comparisons["verdict"].value_counts()
    harms = findings[findings["kind"] == "harm"]
    return {
        "comparisons": len(comparisons),
        "better": int(counts.get("better", 0)),
        "worse": int(counts.get("worse", 0)),
        "no_difference": int(counts.get("no significant difference", 0)),
        "harms": len(harms),
        "significant_harms": int((harms["p_holm"] < ALPHA).sum()),
    }
