"""The report's tables: selections and layouts of the study's results, formatted for a page.

Every number here was computed by the study (:mod:`dermsynth.study.evidence`, from the
functions of :mod:`dermsynth.evaluate`) and read from ``RUN/results``; this module only picks
rows and formats them. Each table comes twice: a tidy frame (every number, written as CSV
beside the page) and a display frame (cells as text) for the HTML page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from dermsynth.arms import ARMS, REAL, REAL_SEED, SYNTHETIC
from dermsynth.data.fst import roman_label
from dermsynth.schema import ALL_CONDITIONS

MISSING = "—"
ARM_ORDER: tuple[str, ...] = tuple(ARMS)
CELL_COLUMNS: tuple[str, ...] = (
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
    "interval",
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
    except ValueError:
        return text
    if not values or any(v < 1 or v > 6 for v in values):
        return text
    return roman_label(values)


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
    """An arm as a heading; a dosed arm with its number of added images."""
    return f"{arm} (+{dose})" if dose else arm


def _nan(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def fmt_accuracy(accuracy: float, low: float, high: float) -> str:
    """The paper's cell: ``0.175 (0.12-0.23)``; a missing value is ``—``."""
    if _nan(accuracy):
        return MISSING
    if _nan(low) or _nan(high):
        return f"{accuracy:.3f}"
    return f"{accuracy:.3f} ({low:.2f}-{high:.2f})"


def fmt_p(p: float) -> str:
    """A p-value for a table: ``<0.001`` below that, else three decimals."""
    if _nan(p):
        return MISSING
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_difference(difference: float, low: float, high: float) -> str:
    """``+0.120 (-0.02 to +0.25)``."""
    if _nan(difference):
        return MISSING
    text = f"{difference:+.3f}"
    if not (_nan(low) or _nan(high)):
        text += f" ({low:+.2f} to {high:+.2f})"
    return text


def _int(value: Any) -> str:
    return MISSING if _nan(value) else str(int(value))


def _arm_rank(arm: str) -> int:
    return ARM_ORDER.index(arm) if arm in ARM_ORDER else len(ARM_ORDER)


# --------------------------------------------------------------------------- Table 1


def table1_display(table1: pd.DataFrame) -> pd.DataFrame:
    """Sample sizes by skin type (the paper's Table 1): types as Roman numerals."""
    shown = table1.copy()
    shown["fst"] = shown["fst"].map(
        lambda v: "Total" if str(v).strip().lower() == "total" else fst_label(str(v))
    )
    shown = shown.rename(columns={"fst": "FST", "total": "Total"})
    for column in shown.columns[1:]:
        if pd.api.types.is_numeric_dtype(shown[column]):
            shown[column] = shown[column].map(_int)
    return shown


# --------------------------------------------------------------------------- Table 2


def arm_cells(
    summary: pd.DataFrame, augmented: Sequence[str], full_dose: int, arms: Sequence[str]
) -> pd.DataFrame:
    """Accuracy of each augmented condition by direction, arm and test group, every arm at the
    full dose (``CELL_COLUMNS``). The ``real`` arm is one run per direction: its row for
    condition X is its accuracy on X."""
    parts = []
    for condition in augmented:
        rows = summary[summary["condition"] == condition]
        own = (rows["augmented"] == condition) | ~rows["arm"].map(
            lambda a: ARMS[a].augmented if a in ARMS else True
        )
        dose = (rows["dose"] == 0) | (rows["dose"] == full_dose)
        picked = rows[own & dose & rows["arm"].isin(list(arms))]
        parts.append(picked.assign(augmented=condition))
    if not parts:
        return pd.DataFrame(columns=list(CELL_COLUMNS))
    out = pd.concat(parts, ignore_index=True)[list(CELL_COLUMNS)]
    return _sorted(out, augmented)


def _sorted(frame: pd.DataFrame, augmented: Sequence[str]) -> pd.DataFrame:
    order = {c: i for i, c in enumerate(augmented)}
    keys = pd.DataFrame(
        {
            "c": frame["augmented"].map(order).fillna(len(order)),
            "d": frame["direction"].map(
                {d: i for i, d in enumerate(dict.fromkeys(frame["direction"]))}
            ),
            "a": frame["arm"].map(_arm_rank),
            "dose": frame["dose"],
            "g": frame["fst_group"].map(lambda g: group_sort_key(g)[0]),
        },
        index=frame.index,
    )
    return frame.loc[keys.sort_values(list(keys.columns), kind="stable").index].reset_index(
        drop=True
    )


def _cell_text(row: pd.Series) -> str:
    text = fmt_accuracy(row["accuracy"], row["ci_low"], row["ci_high"])
    if row["repeats"] > 1 and not _nan(row["accuracy_sd"]):
        text += f"\nsd {row['accuracy_sd']:.3f}, range {row['accuracy_min']:.2f}-{row['accuracy_max']:.2f}"
    return text


def table2_display(cells: pd.DataFrame, condition: str, arms: Sequence[str]) -> pd.DataFrame:
    """One augmented condition in the paper's layout: rows are the test groups; for each
    direction a column per arm, then N. A group not tested in a direction shows ``—``."""
    rows = cells[(cells["augmented"] == condition) & cells["arm"].isin(list(arms))]
    groups = sorted(set(rows["fst_group"]), key=group_sort_key)
    columns: list[tuple[str, str]] = [("", "FST")]
    records: list[list[str]] = [[fst_label(g)] for g in groups]
    for direction in dict.fromkeys(rows["direction"]):
        block = rows[rows["direction"] == direction]
        head = direction_label(direction)
        for arm in [a for a in arms if a in set(block["arm"])]:
            of_arm = block[block["arm"] == arm]
            columns.append((head, arm_label(arm, int(of_arm["dose"].max()))))
            for record, group in zip(records, groups, strict=True):
                cell = of_arm[of_arm["fst_group"] == group]
                record.append(_cell_text(cell.iloc[0]) if len(cell) else MISSING)
        columns.append((head, "N"))
        for record, group in zip(records, groups, strict=True):
            ns = block.loc[block["fst_group"] == group, "n"]
            record.append(_int(ns.max()) if len(ns) else MISSING)
    return pd.DataFrame(records, columns=pd.MultiIndex.from_tuples(columns))


def arms_display(cells: pd.DataFrame, condition: str) -> pd.DataFrame:
    """Every arm of one augmented condition at the full dose: a row per arm, a column per
    direction and test group (the N of each group in the last row)."""
    rows = cells[cells["augmented"] == condition]
    keys = [
        (d, g)
        for d in dict.fromkeys(rows["direction"])
        for g in sorted(set(rows.loc[rows["direction"] == d, "fst_group"]), key=group_sort_key)
    ]
    columns = [("", "Arm")] + [(direction_label(d), f"FST {fst_label(g)}") for d, g in keys]
    records = []
    for arm in sorted(set(rows["arm"]), key=_arm_rank):
        of_arm = rows[rows["arm"] == arm]
        record = [arm_label(arm, int(of_arm["dose"].max()))]
        for d, g in keys:
            cell = of_arm[(of_arm["direction"] == d) & (of_arm["fst_group"] == g)]
            record.append(_cell_text(cell.iloc[0]) if len(cell) else MISSING)
        records.append(record)
    n_row = ["N"] + [
        _int(rows.loc[(rows["direction"] == d) & (rows["fst_group"] == g), "n"].max())
        for d, g in keys
    ]
    return pd.DataFrame([*records, n_row], columns=pd.MultiIndex.from_tuples(columns))


# --------------------------------------------------------------------------- Table 3


def table3(summary: pd.DataFrame, augmented: Sequence[str]) -> pd.DataFrame:
    """Dose-response, tidy: each dosed arm's accuracy on its augmented condition by dose, with
    ``real+seed`` as dose 0 (``CELL_COLUMNS``)."""
    own = (summary["condition"] == summary["augmented"]) & summary["augmented"].isin(
        list(augmented)
    )
    dosed = summary["arm"].map(lambda a: a == REAL_SEED or (a in ARMS and ARMS[a].dosed))
    rows = summary[own & dosed]
    return _sorted(rows[list(CELL_COLUMNS)], augmented)


def table3_display(t3: pd.DataFrame, arm: str = SYNTHETIC) -> pd.DataFrame:
    """Table 3 in the paper's layout for one arm: a row per condition x direction x group, a
    column per dose (two decimals as the paper; ``mean ± sd`` over repeats)."""
    rows = t3[t3["arm"].isin([REAL_SEED, arm])]
    doses = sorted(set(rows["dose"]))
    columns = ["Condition", "Direction", "FST"]
    columns += ["seed only (+0)" if d == 0 else f"+{d} images" for d in doses] + ["N"]
    records = []
    for (condition, direction), block in rows.groupby(["augmented", "direction"], sort=False):
        for index, group in enumerate(sorted(set(block["fst_group"]), key=group_sort_key)):
            cells = block[block["fst_group"] == group]
            record = [
                condition if index == 0 else "",
                direction_label(str(direction)) if index == 0 else "",
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
            record.append(_int(cells["n"].max()))
            records.append(record)
    return pd.DataFrame(records, columns=columns)


# --------------------------------------------------------------------------- comparisons

COMPARISON_COLUMNS: tuple[str, ...] = (
    "family",
    "direction",
    "augmented",
    "arm_a",
    "dose_a",
    "arm_b",
    "dose_b",
    "condition",
    "fst_group",
    "n",
    "repeats_a",
    "repeats_b",
    "accuracy_a",
    "accuracy_b",
    "difference",
    "ci_low",
    "ci_high",
    "p",
    "p_holm",
    "p_bh",
    "mcnemar_p_median",
    "mcnemar_significant",
    "mcnemar_repeats",
)


def comparisons_display(
    comparisons: pd.DataFrame, direction: str, condition: str, full_dose: int
) -> pd.DataFrame:
    """The synthetic arm at the full dose against every other arm, on the augmented condition
    and on all conditions, per test group (every dose and condition is in the CSV)."""
    rows = comparisons[
        (comparisons["direction"] == direction)
        & (comparisons["augmented"] == condition)
        & (comparisons["dose_b"] == full_dose)
        & comparisons["condition"].isin([condition, ALL_CONDITIONS])
    ]
    if rows.empty:
        return pd.DataFrame()
    rows = rows.assign(
        _all=(rows["condition"] == ALL_CONDITIONS).astype(int),
        _g=rows["fst_group"].map(lambda g: group_sort_key(g)[0]),
        _a=rows["arm_a"].map(_arm_rank),
    ).sort_values(["_all", "_g", "_a"], kind="stable")
    records = []
    for _, row in rows.iterrows():
        records.append(
            {
                "Condition": "all conditions"
                if row["condition"] == ALL_CONDITIONS
                else row["condition"],
                "FST": fst_label(row["fst_group"]),
                "Synthetic vs": arm_label(row["arm_a"], int(row["dose_a"])),
                "N": _int(row["n"]),
                "Other arm": MISSING if _nan(row["accuracy_a"]) else f"{row['accuracy_a']:.3f}",
                "Synthetic": MISSING if _nan(row["accuracy_b"]) else f"{row['accuracy_b']:.3f}",
                "Synthetic − other (95% CI)": fmt_difference(
                    row["difference"], row["ci_low"], row["ci_high"]
                ),
                "p": fmt_p(row["p"]),
                "Holm p": fmt_p(row["p_holm"]),
                "BH p": fmt_p(row["p_bh"]),
                "McNemar p < 0.05": f"{int(row['mcnemar_significant'])} of {int(row['mcnemar_repeats'])} repeats",
            }
        )
    return pd.DataFrame.from_records(records)


def spillover(comparisons: pd.DataFrame, full_dose: int) -> pd.DataFrame:
    """Supplementary Table 1, tidy: every condition's accuracy change (full synthetic arm minus
    ``real``) when one condition is augmented, with its interval and p-values."""
    rows = comparisons[
        (comparisons["arm_a"] == REAL)
        & (comparisons["dose_b"] == full_dose)
        & (comparisons["condition"] != ALL_CONDITIONS)
    ]
    return rows[[c for c in COMPARISON_COLUMNS if c in rows.columns]].reset_index(drop=True)


def spillover_display(sp: pd.DataFrame, direction: str, condition: str) -> pd.DataFrame:
    """One block of Supplementary Table 1: a row per condition, per group the change and N."""
    block = sp[(sp["direction"] == direction) & (sp["augmented"] == condition)]
    groups = sorted(set(block["fst_group"]), key=group_sort_key)
    columns: list[tuple[str, str]] = [("", "Condition")]
    for group in groups:
        columns += [
            (f"FST {fst_label(group)}", "change (real → synthetic)"),
            (f"FST {fst_label(group)}", "N"),
        ]
    records = []
    for name in dict.fromkeys(block["condition"]):
        record = [f"{name} (augmented)" if name == condition else name]
        for group in groups:
            cell = block[(block["condition"] == name) & (block["fst_group"] == group)]
            if cell.empty or _nan(cell.iloc[0]["difference"]):
                record += [MISSING, _int(cell.iloc[0]["n"]) if len(cell) else MISSING]
                continue
            row = cell.iloc[0]
            record.append(
                f"{row['difference']:+.3f} ({row['accuracy_a']:.3f} → {row['accuracy_b']:.3f})"
                f"\nCI {row['ci_low']:+.2f} to {row['ci_high']:+.2f}, Holm p {fmt_p(row['p_holm'])}"
            )
            record.append(_int(row["n"]))
        records.append(record)
    return pd.DataFrame(records, columns=pd.MultiIndex.from_tuples(columns))


# --------------------------------------------------------------------------- findings


def findings_display(findings: pd.DataFrame, direction: str, condition: str) -> pd.DataFrame:
    """The verdicts of one direction and augmented condition: a row per arm compared, a column
    per test group: ``better`` / ``worse`` / ``no significant difference`` with the numbers."""
    rows = findings[
        (findings["kind"].isin(["comparison", "ceiling"]))
        & (findings["direction"] == direction)
        & (findings["augmented"] == condition)
    ]
    groups = sorted(set(rows["fst_group"]), key=group_sort_key)
    records = []
    for arm in sorted(set(rows["arm_other"]), key=_arm_rank):
        record = {"Synthetic vs": arm}
        for group in groups:
            cell = rows[(rows["arm_other"] == arm) & (rows["fst_group"] == group)]
            record[f"FST {fst_label(group)}"] = (
                _finding_text(cell.iloc[0]) if len(cell) else MISSING
            )
        records.append(record)
    return pd.DataFrame.from_records(records)


def _finding_text(row: pd.Series) -> str:
    if row["kind"] == "ceiling":
        return (
            f"ceiling {row['accuracy_other']:.3f} vs synthetic {row['accuracy_synthetic']:.3f}"
            f"\nsynthetic {row['accuracy_synthetic'] - row['accuracy_other']:+.3f} to it"
        )
    return (
        f"{row['verdict']}\n{fmt_difference(row['difference'], row['ci_low'], row['ci_high'])}, "
        f"Holm p {fmt_p(row['p_holm'])}"
    )


def harms_display(findings: pd.DataFrame, limit: int = 12) -> pd.DataFrame:
    """The largest accuracy drops on other conditions (synthetic vs ``real+seed``)."""
    harms = findings[findings["kind"] == "harm"].head(limit)
    records = [
        {
            "Direction": direction_label(r["direction"]),
            "Augmented": r["augmented"],
            "Condition": "all conditions" if r["condition"] == ALL_CONDITIONS else r["condition"],
            "FST": fst_label(r["fst_group"]),
            "N": _int(r["n"]),
            "real+seed → synthetic": f"{r['accuracy_other']:.3f} → {r['accuracy_synthetic']:.3f}",
            "Change (95% CI)": fmt_difference(r["difference"], r["ci_low"], r["ci_high"]),
            "Holm p (spillover family)": fmt_p(r["p_holm"]),
        }
        for _, r in harms.iterrows()
    ]
    return pd.DataFrame.from_records(records)


# --------------------------------------------------------------------------- fairness


def fairness_display(fairness: pd.DataFrame, full_dose: int) -> pd.DataFrame:
    """Fairness over the test groups of each arm at the full dose, averaged over repeats."""
    rows = fairness[(fairness["dose"] == 0) | (fairness["dose"] == full_dose)]
    rows = rows.assign(_a=rows["arm"].map(_arm_rank)).sort_values(
        ["direction", "augmented", "_a"], kind="stable"
    )
    per_group = [c for c in fairness.columns if c.startswith(("auroc_", "ece_"))]
    records = []
    for _, row in rows.iterrows():
        record = {
            "Direction": direction_label(row["direction"]),
            "Augmented": row["augmented"] or "(none: real data only)",
            "Arm": arm_label(row["arm"], int(row["dose"])),
            "Worst group": f"FST {fst_label(str(row['worst_group']))} ({row['worst_accuracy']:.3f})",
            "Gap (best − worst)": MISSING if _nan(row["gap"]) else f"{row['gap']:.3f}",
            "Ratio (worst / best)": MISSING if _nan(row["ratio"]) else f"{row['ratio']:.2f}",
            "Largest TPR gap": MISSING
            if _nan(row["max_eo_difference"])
            else f"{row['max_eo_difference']:.3f}",
        }
        for column in per_group:
            kind, group = column.split("_", 1)
            label = f"{'AUROC' if kind == 'auroc' else 'ECE'} {fst_label(group)}"
            record[label] = MISSING if _nan(row[column]) else f"{row[column]:.2f}"
        records.append(record)
    return pd.DataFrame.from_records(records)


# --------------------------------------------------------------------------- synthetic quality


def _num(value: Any, digits: int = 2) -> str:
    return MISSING if _nan(value) else f"{float(value):.{digits}f}"


def _kid_text(row: pd.Series) -> str:
    if _nan(row["kid"]):
        return MISSING
    return f"{row['kid']:.3f} ± {row['kid_std']:.3f}"


def _cas_text(row: pd.Series) -> str:
    if _nan(row["cas"]):
        return MISSING
    ratio = "" if _nan(row["cas_ratio"]) else f" (ratio {row['cas_ratio']:.2f})"
    return f"{row['cas']:.2f} vs real {_num(row['cas_real'])}{ratio}"


def quality_display(quality: pd.DataFrame, direction: str) -> pd.DataFrame:
    """The images each arm adds in one direction, measured against held-out real images."""
    rows = quality[quality["direction"] == direction]
    rows = rows.assign(_a=rows["arm"].map(_arm_rank)).sort_values(
        ["condition", "_a"], kind="stable"
    )
    records = []
    for _, row in rows.iterrows():
        records.append(
            {
                "Condition": row["condition"],
                "FST": fst_label(str(row["fst_group"])),
                "Images of": row["arm"],
                "N (set / real)": f"{_int(row['n_synthetic'])} / {_int(row['n_real'])}",
                "KID ± sd": _kid_text(row),
                "Precision / recall": f"{_num(row['precision'])} / {_num(row['recall'])}",
                "Density / coverage": f"{_num(row['density'])} / {_num(row['coverage'])}",
                "CAS": _cas_text(row),
                "Copy rate": _num(row["copy_rate"]),
                "Diversity ratio": _num(row["diversity_ratio"]),
                "ITA W1 / tone match": f"{_num(row['ita_wasserstein'], 1)} / "
                f"{_num(row['tone_match'])}",
            }
        )
    return pd.DataFrame.from_records(records)


def signal_display(signal: pd.DataFrame) -> pd.DataFrame:
    """The pathology scorer's discrimination per direction and augmented condition."""
    return pd.DataFrame(
        {
            "Direction": signal["direction"].map(direction_label),
            "Condition": signal["condition"],
            "Scored by": signal["classifier"],
            "N (intended / other)": [
                f"{_int(a)} / {_int(b)}"
                for a, b in zip(signal["n_intended"], signal["n_other"], strict=True)
            ],
            "Mean p(intended)": signal["p_intended_mean"].map(_num),
            "AUROC": signal["auroc"].map(_num),
        }
    )
