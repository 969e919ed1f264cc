"""The report's tables, as pure functions of the results DataFrames.

Each table comes twice: a tidy frame (one row per cell, every number, written as CSV) and a
display frame (the paper's layout, cells as formatted text) for the HTML page.

Repeats. A study may train each arm several times with different training seeds, always
scored on the same test images. A cell then shows the mean accuracy over repeats; its 95% CI
is the Wald interval computed at that mean with the cell's N test images. The test images are
the same in every repeat, so pooling them (N x repeats) would overstate the precision; the
spread across repeats (SD, min-max) is reported beside it as the training-seed variability.
With one repeat the cell is exactly the run's accuracy and CI, as in the paper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from dermsynth.data.fst import roman_label

REAL, SEED, SYNTHETIC = "real", "real+seed", "real+seed+synthetic"
ARM_ORDER: tuple[str, ...] = (REAL, SEED, SYNTHETIC)
ALL_CONDITIONS = "(all)"
MISSING = "—"
# Two-sided 95% normal quantile, as statsmodels' "normal" interval uses.
Z95 = 1.959963984540054

TABLE2_COLUMNS: tuple[str, ...] = (
    "augmented",
    "direction",
    "arm",
    "dose",
    "fst_group",
    "n",
    "repeats",
    "accuracy",
    "ci_low",
    "ci_high",
    "accuracy_sd",
    "accuracy_min",
    "accuracy_max",
)


# --------------------------------------------------------------------------- labels


def fst_label(group: str) -> str:
    """``"1-2"`` -> ``"I-II"`` (the paper's spelling); anything unreadable is kept as is."""
    text = str(group).strip()
    try:
        if "-" in text:
            low, high = (int(p) for p in text.split("-"))
            values = list(range(low, high + 1))
        else:
            values = [int(p) for p in text.replace("+", ",").split(",")]
        if not values or any(v < 1 or v > 6 for v in values):
            return text
        return roman_label(values)
    except ValueError:
        return text


def group_sort_key(group: str) -> tuple[int, str]:
    """Order FST groups by their lightest skin type (I-II before III-IV before V-VI)."""
    digits = "".join(ch if ch.isdigit() else " " for ch in str(group)).split()
    return (int(digits[0]) if digits else 99, str(group))


def direction_label(direction: str) -> str:
    """``"train_1-2"`` -> ``"Trained on FST I-II"``."""
    if direction.startswith("train_"):
        return f"Trained on FST {fst_label(direction.removeprefix('train_'))}"
    return direction


def arm_label(arm: str, dose: int = 0) -> str:
    """An arm as a column heading; the synthetic arm with its number of synthetic images."""
    if arm == SYNTHETIC and dose:
        return f"{arm} (+{dose})"
    return arm


def fmt_accuracy(accuracy: float, low: float, high: float) -> str:
    """The paper's cell: ``0.175 (0.12-0.23)``; a missing value is ``—``."""
    if _nan(accuracy):
        return MISSING
    if _nan(low) or _nan(high):
        return f"{accuracy:.3f}"
    return f"{accuracy:.3f} ({low:.2f}-{high:.2f})"


def fmt_spread(row: pd.Series | dict[str, Any]) -> str:
    """``sd 0.021, range 0.15-0.20`` over the repeats; empty for a single repeat."""
    repeats = int(row.get("repeats", 1) or 1)
    if repeats < 2 or _nan(row.get("accuracy_sd")):
        return ""
    return f"sd {row['accuracy_sd']:.3f}, range {row['accuracy_min']:.2f}-{row['accuracy_max']:.2f}"


def fmt_p(p: float) -> str:
    """A p-value for a table: ``<0.001`` below that, else three decimals."""
    if _nan(p):
        return MISSING
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _nan(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def _int_or_missing(value: Any) -> str:
    return MISSING if _nan(value) else str(int(value))


def _ordered(values: Sequence[str], first: Sequence[str] | None = None) -> list[str]:
    """Unique values in order of appearance, those listed in ``first`` leading in its order."""
    seen = list(dict.fromkeys(v for v in values if v != ""))
    if not first:
        return seen
    lead = [v for v in first if v in seen]
    return lead + [v for v in seen if v not in lead]


# --------------------------------------------------------------------------- repeats


def wald_at(accuracy: float, n: float) -> tuple[float, float]:
    """The 95% Wald interval of a proportion ``accuracy`` over ``n`` images, clipped to [0, 1]."""
    if _nan(accuracy) or _nan(n) or n <= 0:
        return (math.nan, math.nan)
    half = Z95 * math.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / n)
    return (max(0.0, accuracy - half), min(1.0, accuracy + half))


def summarize_repeats(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Collapse repeats: per ``keys``, mean accuracy, its CI (see the module doc), SD, min, max.

    ``frame`` has ``repeat``, ``n``, ``accuracy``, ``ci_low`` and ``ci_high``. A single repeat
    keeps its own CI unchanged.
    """
    columns = [
        *keys,
        "n",
        "repeats",
        "accuracy",
        "ci_low",
        "ci_high",
        "accuracy_sd",
        "accuracy_min",
        "accuracy_max",
    ]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    grouped = frame.groupby(list(keys), sort=False, dropna=False)
    out = grouped.agg(
        n=("n", "max"),
        repeats=("repeat", "nunique"),
        accuracy=("accuracy", "mean"),
        ci_low=("ci_low", "first"),
        ci_high=("ci_high", "first"),
        accuracy_sd=("accuracy", "std"),
        accuracy_min=("accuracy", "min"),
        accuracy_max=("accuracy", "max"),
    ).reset_index()
    many = out["repeats"] > 1
    for index in out.index[many]:
        out.loc[index, ["ci_low", "ci_high"]] = wald_at(
            out.at[index, "accuracy"], out.at[index, "n"]
        )
    out.loc[~many, "accuracy_sd"] = math.nan
    return out[columns]


# --------------------------------------------------------------------------- Table 1


def table1_display(table1: pd.DataFrame) -> pd.DataFrame:
    """Sample sizes by skin type (the paper's Table 1): types as Roman numerals."""
    shown = table1.copy()

    def _fst(value: Any) -> str:
        text = str(value).strip()
        if text.lower() == "total":
            return "Total"
        return fst_label(text)

    shown["fst"] = shown["fst"].map(_fst)
    shown = shown.rename(columns={"fst": "FST", "total": "Total"})
    for column in shown.columns[1:]:
        if pd.api.types.is_numeric_dtype(shown[column]):
            shown[column] = shown[column].map(_int_or_missing)
    return shown


# --------------------------------------------------------------------------- Table 2


def full_dose_of(accuracy: pd.DataFrame, full_dose: int | None) -> int | None:
    """The full synthetic dose: the config's, else the largest dose of the synthetic arm."""
    if full_dose:
        return int(full_dose)
    doses = accuracy.loc[accuracy["arm"] == SYNTHETIC, "dose"]
    return int(doses.max()) if len(doses) else None


def table2(
    accuracy: pd.DataFrame,
    augmented: Sequence[str] | None = None,
    full_dose: int | None = None,
) -> pd.DataFrame:
    """Accuracy of each augmented condition by direction, arm and test group (Table 2), tidy.

    The ``real`` arm does not depend on the augmented condition (one run per direction); its
    row for condition X is that run's accuracy on X. ``real+seed+synthetic`` is taken at the
    full dose. Columns: ``TABLE2_COLUMNS``.
    """
    conditions = _ordered(list(accuracy["augmented"]), augmented)
    dose = full_dose_of(accuracy, full_dose)
    parts = []
    for condition in conditions:
        on_condition = accuracy["condition"] == condition
        real = accuracy[on_condition & (accuracy["arm"] == REAL)]
        own = on_condition & (accuracy["augmented"] == condition)
        seed = accuracy[own & (accuracy["arm"] == SEED)]
        synthetic = accuracy[own & (accuracy["arm"] == SYNTHETIC) & (accuracy["dose"] == dose)]
        cells = pd.concat([real, seed, synthetic], ignore_index=True)
        if cells.empty:
            continue
        cells = cells.assign(augmented=condition)
        parts.append(
            summarize_repeats(cells, ["augmented", "direction", "arm", "dose", "fst_group"])
        )
    if not parts:
        return pd.DataFrame(columns=list(TABLE2_COLUMNS))
    out = pd.concat(parts, ignore_index=True)[list(TABLE2_COLUMNS)]
    return _sort(out, ["augmented", "direction"], conditions)


def _sort(frame: pd.DataFrame, outer: Sequence[str], first: Sequence[str]) -> pd.DataFrame:
    """Stable order: given outer keys in order of appearance, then arm, dose and FST group."""
    if frame.empty:
        return frame
    keys = pd.DataFrame(index=frame.index)
    for column in outer:
        if pd.api.types.is_numeric_dtype(frame[column]):
            keys[column] = frame[column]
            continue
        order = _ordered(list(frame[column]), first if column == "augmented" else None)
        # "" (the real arm, shared by every augmented condition) is not in order: -1 puts it first.
        keys[column] = frame[column].map({v: i for i, v in enumerate(order)}).fillna(-1)
    if "arm" in frame.columns:
        keys["arm"] = frame["arm"].map({a: i for i, a in enumerate(ARM_ORDER)}).fillna(9)
    if "dose" in frame.columns:
        keys["dose"] = frame["dose"]
    if "fst_group" in frame.columns:
        keys["fst_group"] = frame["fst_group"].map(lambda g: group_sort_key(g)[0])
    order = keys.sort_values(list(keys.columns), kind="stable").index
    return frame.loc[order].reset_index(drop=True)


def table2_display(
    t2: pd.DataFrame,
    condition: str,
    arms: Sequence[str] = ARM_ORDER,
    full_dose: int | None = None,
) -> pd.DataFrame:
    """One augmented condition of Table 2 in the paper's layout.

    Rows are the test groups; for each direction, one column per arm and then N. A group not
    tested in a direction, or a run not finished, shows ``—``. With repeats, a second line in
    the cell gives the spread across repeats.
    """
    rows = t2[t2["augmented"] == condition]
    groups = sorted(set(rows["fst_group"]), key=group_sort_key)
    directions = _ordered(list(rows["direction"]))
    columns: list[tuple[str, str]] = [("", "FST")]
    records: list[list[str]] = [[fst_label(g)] for g in groups]
    for direction in directions:
        in_direction = rows[rows["direction"] == direction]
        head = direction_label(direction)
        for arm in arms:
            of_arm = in_direction[in_direction["arm"] == arm]
            dose = int(of_arm["dose"].max()) if len(of_arm) else (full_dose or 0)
            columns.append((head, arm_label(arm, dose)))
            for record, group in zip(records, groups, strict=True):
                cell = of_arm[of_arm["fst_group"] == group]
                if cell.empty:
                    record.append(MISSING)
                    continue
                row = cell.iloc[0]
                text = fmt_accuracy(row["accuracy"], row["ci_low"], row["ci_high"])
                spread = fmt_spread(row)
                record.append(f"{text}\n{spread}" if spread else text)
        columns.append((head, "N"))
        for record, group in zip(records, groups, strict=True):
            ns = in_direction.loc[in_direction["fst_group"] == group, "n"]
            record.append(_int_or_missing(ns.max()) if len(ns) else MISSING)
    return pd.DataFrame(records, columns=pd.MultiIndex.from_tuples(columns))


# --------------------------------------------------------------------------- Table 3


def table3(
    accuracy: pd.DataFrame,
    augmented: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Dose-response (Table 3), tidy: accuracy of each augmented condition by dose and group.

    Every dose of the synthetic arm, and the seed-only arm as dose 0 for reference. Columns:
    ``augmented, direction, arm, dose, fst_group, n, repeats, accuracy, ci_low, ci_high, ...``.
    """
    conditions = _ordered(list(accuracy["augmented"]), augmented)
    own = (accuracy["condition"] == accuracy["augmented"]) & accuracy["augmented"].isin(conditions)
    rows = accuracy[own & accuracy["arm"].isin([SEED, SYNTHETIC])]
    out = summarize_repeats(rows, ["augmented", "direction", "arm", "dose", "fst_group"])
    out = out[[c for c in TABLE2_COLUMNS if c in out.columns]]
    return _sort(out, ["augmented", "direction"], conditions)


def table3_display(t3: pd.DataFrame) -> pd.DataFrame:
    """Table 3 in the paper's layout: a row per condition x direction x group, a column per dose.

    Accuracies with two decimals as the paper; with repeats, ``mean ± sd``.
    """
    doses = sorted(set(t3["dose"]))
    columns = (
        ["Condition", "Direction", "FST"]
        + ["seed only (+0)" if d == 0 else f"+{d} images" for d in doses]
        + ["N"]
    )
    records = []
    for (condition, direction), block in t3.groupby(["augmented", "direction"], sort=False):
        for index, group in enumerate(sorted(set(block["fst_group"]), key=group_sort_key)):
            cells = block[block["fst_group"] == group]
            record = [
                condition if index == 0 else "",
                direction_label(direction) if index == 0 else "",
                fst_label(group),
            ]
            for dose in doses:
                cell = cells[cells["dose"] == dose]
                if cell.empty or _nan(cell.iloc[0]["accuracy"]):
                    record.append(MISSING)
                    continue
                row = cell.iloc[0]
                text = f"{row['accuracy']:.2f}"
                if row["repeats"] > 1 and not _nan(row["accuracy_sd"]):
                    text += f" ± {row['accuracy_sd']:.2f}"
                record.append(text)
            record.append(_int_or_missing(cells["n"].max()))
            records.append(record)
    return pd.DataFrame(records, columns=columns)


# --------------------------------------------------------------------------- spillover

SPILLOVER_COLUMNS: tuple[str, ...] = (
    "direction",
    "augmented",
    "condition",
    "fst_group",
    "n",
    "accuracy_real",
    "accuracy_synthetic",
    "change",
    "repeats_real",
    "repeats_synthetic",
)


def spillover(
    accuracy: pd.DataFrame,
    augmented: Sequence[str] | None = None,
    full_dose: int | None = None,
) -> pd.DataFrame:
    """Supplementary Table 1, tidy: every condition's accuracy change when one is augmented.

    For each direction and augmented condition, each condition x test group: accuracy of the
    full synthetic arm minus that of the ``real`` arm (means over repeats).
    """
    conditions = _ordered(list(accuracy["augmented"]), augmented)
    dose = full_dose_of(accuracy, full_dose)
    keys = ["condition", "fst_group"]
    parts = []
    for direction in _ordered(list(accuracy["direction"])):
        in_direction = accuracy[accuracy["direction"] == direction]
        real = summarize_repeats(in_direction[in_direction["arm"] == REAL], keys)
        for condition in conditions:
            synthetic = in_direction[
                (in_direction["arm"] == SYNTHETIC)
                & (in_direction["augmented"] == condition)
                & (in_direction["dose"] == dose)
            ]
            if real.empty and synthetic.empty:
                continue
            synthetic = summarize_repeats(synthetic, keys)
            merged = real[[*keys, "n", "accuracy", "repeats"]].merge(
                synthetic[[*keys, "n", "accuracy", "repeats"]],
                on=keys,
                how="outer",
                suffixes=("_real", "_synthetic"),
            )
            merged["n"] = merged[["n_real", "n_synthetic"]].max(axis=1)
            merged["change"] = merged["accuracy_synthetic"] - merged["accuracy_real"]
            merged["direction"] = direction
            merged["augmented"] = condition
            parts.append(merged)
    if not parts:
        return pd.DataFrame(columns=list(SPILLOVER_COLUMNS))
    out = pd.concat(parts, ignore_index=True)[list(SPILLOVER_COLUMNS)]
    condition_order = {c: i for i, c in enumerate(_ordered(list(accuracy["condition"])))}
    out = out.assign(_c=out["condition"].map(condition_order))
    out = _sort(out, ["direction", "augmented", "_c"], conditions).drop(columns="_c")
    return out


def spillover_display(sp: pd.DataFrame, direction: str, condition: str) -> pd.DataFrame:
    """One block of Supplementary Table 1: a row per condition, per group change and N."""
    block = sp[(sp["direction"] == direction) & (sp["augmented"] == condition)]
    groups = sorted(set(block["fst_group"]), key=group_sort_key)
    columns: list[tuple[str, str]] = [("", "Condition")]
    for group in groups:
        columns += [
            (f"FST {fst_label(group)}", "change (real → synthetic)"),
            (f"FST {fst_label(group)}", "N"),
        ]
    records = []
    for name in _ordered(list(block["condition"])):
        label = f"{name} (augmented)" if name == condition else name
        record = [label]
        for group in groups:
            cell = block[(block["condition"] == name) & (block["fst_group"] == group)]
            if cell.empty:
                record += [MISSING, MISSING]
                continue
            row = cell.iloc[0]
            if _nan(row["change"]):
                record.append(MISSING)
            else:
                record.append(
                    f"{row['change']:+.3f} ({row['accuracy_real']:.3f} → "
                    f"{row['accuracy_synthetic']:.3f})"
                )
            record.append(_int_or_missing(row["n"]))
        records.append(record)
    return pd.DataFrame(records, columns=pd.MultiIndex.from_tuples(columns))


# --------------------------------------------------------------------------- paired tests

PAIRED_COLUMNS: tuple[str, ...] = (
    "direction",
    "augmented",
    "arm_a",
    "arm_b",
    "dose_b",
    "condition",
    "fst_group",
    "n",
    "repeats",
    "accuracy_a",
    "accuracy_b",
    "difference",
    "difference_sd",
    "diff_ci_low",
    "diff_ci_high",
    "mcnemar_p",
    "mcnemar_p_max",
    "significant_repeats",
)


def paired_summary(paired: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Paired tests between arms with repeats collapsed (columns ``PAIRED_COLUMNS``).

    One repeat: the row as it is. Several: mean accuracies and difference, SD of the
    difference, the median McNemar p and its largest value, how many repeats had p < alpha,
    and as CI the envelope of the repeats' bootstrap CIs (lowest low, highest high): a
    conservative summary, never narrower than any one repeat's interval.
    """
    keys = ["direction", "augmented", "arm_a", "arm_b", "dose_b", "condition", "fst_group"]
    if paired.empty:
        return pd.DataFrame(columns=list(PAIRED_COLUMNS))
    frame = paired.assign(_significant=(paired["mcnemar_p"] < alpha).astype(int))
    out = (
        frame.groupby(keys, sort=False, dropna=False)
        .agg(
            n=("n", "max"),
            repeats=("repeat", "nunique"),
            accuracy_a=("accuracy_a", "mean"),
            accuracy_b=("accuracy_b", "mean"),
            difference=("difference", "mean"),
            difference_sd=("difference", "std"),
            diff_ci_low=("diff_ci_low", "min"),
            diff_ci_high=("diff_ci_high", "max"),
            mcnemar_p=("mcnemar_p", "median"),
            mcnemar_p_max=("mcnemar_p", "max"),
            significant_repeats=("_significant", "sum"),
        )
        .reset_index()
    )
    return out[list(PAIRED_COLUMNS)]


def paired_display(
    summary: pd.DataFrame, direction: str, condition: str, full_dose: int | None = None
) -> pd.DataFrame:
    """The paired tests of one direction and augmented condition worth reading on the page.

    Rows: the augmented condition, then all conditions together, per test group and arm;
    comparisons of other conditions and at intermediate doses stay in the CSV.
    """
    rows = summary[(summary["direction"] == direction) & (summary["augmented"] == condition)]
    rows = rows[rows["condition"].isin([condition, ALL_CONDITIONS])]
    if full_dose:
        rows = rows[(rows["arm_b"] != SYNTHETIC) | (rows["dose_b"] == full_dose)]
    if rows.empty:
        return pd.DataFrame()
    order = pd.DataFrame(
        {
            "all": (rows["condition"] == ALL_CONDITIONS).astype(int),
            "group": rows["fst_group"].map(lambda g: group_sort_key(g)[0]),
            "a": rows["arm_a"].map({a: i for i, a in enumerate(ARM_ORDER)}).fillna(9),
            "b": rows["arm_b"].map({a: i for i, a in enumerate(ARM_ORDER)}).fillna(9),
            "dose": rows["dose_b"],
        },
        index=rows.index,
    )
    rows = rows.loc[order.sort_values(list(order.columns), kind="stable").index]
    many = bool((rows["repeats"] > 1).any())
    records = []
    for _, row in rows.iterrows():
        record = {
            "Condition": "all conditions"
            if row["condition"] == ALL_CONDITIONS
            else row["condition"],
            "FST": fst_label(row["fst_group"]),
            "Arm A → arm B": f"{row['arm_a']} → {arm_label(row['arm_b'], int(row['dose_b']))}",
            "N": _int_or_missing(row["n"]),
            "Accuracy A": MISSING if _nan(row["accuracy_a"]) else f"{row['accuracy_a']:.3f}",
            "Accuracy B": MISSING if _nan(row["accuracy_b"]) else f"{row['accuracy_b']:.3f}",
            "B − A (95% CI)": _fmt_difference(row),
            "McNemar p": fmt_p(row["mcnemar_p"]),
        }
        if many:
            record["p < 0.05"] = (
                f"{int(row['significant_repeats'])} of {int(row['repeats'])} repeats"
            )
        records.append(record)
    return pd.DataFrame.from_records(records)


def _fmt_difference(row: pd.Series) -> str:
    if _nan(row["difference"]):
        return MISSING
    text = f"{row['difference']:+.3f}"
    if not (_nan(row["diff_ci_low"]) or _nan(row["diff_ci_high"])):
        text += f" ({row['diff_ci_low']:+.2f} to {row['diff_ci_high']:+.2f})"
    if row["repeats"] > 1 and not _nan(row["difference_sd"]):
        text += f"\nsd {row['difference_sd']:.3f}"
    return text


# --------------------------------------------------------------------------- fairness gap

GAP_COLUMNS: tuple[str, ...] = (
    "direction",
    "augmented",
    "arm",
    "dose",
    "metric",
    "repeats",
    "best_group",
    "best",
    "worst_group",
    "worst",
    "gap",
    "gap_sd",
)
GAP_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy")


def gaps(groups: pd.DataFrame) -> pd.DataFrame:
    """Best minus worst test group per run kind (direction, arm, augmented, dose) and metric.

    Best, worst and gap come from the repeat means of each group; ``gap_sd`` is the SD of the
    per-repeat gaps (NaN for one repeat). Groups without images are left out.
    """
    keys = ["direction", "augmented", "arm", "dose"]
    filled = groups[groups["n"] > 0]
    records: list[dict[str, Any]] = []
    for key, block in filled.groupby(keys, sort=False, dropna=False):
        for metric in GAP_METRICS:
            means = block.groupby("fst_group")[metric].mean().dropna()
            if len(means) < 2:
                continue
            per_repeat = block.groupby("repeat")[metric].agg(lambda s: s.max() - s.min())
            records.append(
                {
                    **dict(zip(keys, key, strict=True)),
                    "metric": metric,
                    "repeats": int(block["repeat"].nunique()),
                    "best_group": str(means.idxmax()),
                    "best": float(means.max()),
                    "worst_group": str(means.idxmin()),
                    "worst": float(means.min()),
                    "gap": float(means.max() - means.min()),
                    "gap_sd": float(per_repeat.std()) if len(per_repeat) > 1 else math.nan,
                }
            )
    out = pd.DataFrame.from_records(records, columns=list(GAP_COLUMNS))
    return _sort(out, ["direction", "augmented"], [])


def gaps_display(gap: pd.DataFrame, full_dose: int | None = None) -> pd.DataFrame:
    """The accuracy gap of the main arms (real, seed, full synthetic) as a page table."""
    rows = gap[gap["metric"] == "accuracy"]
    if full_dose:
        rows = rows[(rows["arm"] != SYNTHETIC) | (rows["dose"] == full_dose)]
    records = []
    for _, row in rows.iterrows():
        text = f"{row['gap']:.3f}"
        if row["repeats"] > 1 and not _nan(row["gap_sd"]):
            text += f" ± {row['gap_sd']:.3f}"
        records.append(
            {
                "Direction": direction_label(row["direction"]),
                "Augmented": row["augmented"] or "(none: real data only)",
                "Arm": arm_label(row["arm"], int(row["dose"])),
                "Best group": f"FST {fst_label(row['best_group'])} ({row['best']:.3f})",
                "Worst group": f"FST {fst_label(row['worst_group'])} ({row['worst']:.3f})",
                "Gap (best − worst)": text,
            }
        )
    return pd.DataFrame.from_records(records)
