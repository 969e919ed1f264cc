"""Two models scored on the same test images: paired tests per condition x FST group.

Because every arm of one direction is scored on the same test images, the fair comparison is
paired: for each image, was model A right, was model B right? Per cell that gives a 2 x 2 table
(both right, only A, only B, neither). McNemar's exact test (statsmodels) asks whether the
discordant images split evenly; the bootstrap CI of the accuracy difference resamples the
cell's images with their pairing kept.

``difference`` is always B minus A: positive means the second model is more accurate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermsynth.data.fst import FSTGroup, group_label
from dermsynth.errors import DermsynthError
from dermsynth.evaluate.metrics import model_classes
from dermsynth.schema import ALL_CONDITIONS, COMPARE_COLUMNS

_MAX_LISTED = 5


def _name(frame: pd.DataFrame, fallback: str) -> str:
    path = frame.attrs.get("path")
    return Path(path).name if path else fallback


def match_predictions(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Pair the rows of two predictions tables by ``image_id``.

    Returns ``image_id, label, fst, correct_a, correct_b``. The two must cover the same test
    images with the same labels and skin types, else the pairing means nothing: the error says
    how many differ and shows a few.
    """
    name_a, name_b = _name(a, "A"), _name(b, "B")
    if name_a == name_b:
        name_a, name_b = f"A ({name_a})", f"B ({name_b})"
    ids_a, ids_b = set(a["image_id"]), set(b["image_id"])
    if ids_a != ids_b:
        only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
        raise DermsynthError(
            f"{name_a} and {name_b} do not cover the same test images: "
            f"{len(only_a)} image(s) only in {name_a}{_examples(only_a)}, "
            f"{len(only_b)} only in {name_b}{_examples(only_b)}; "
            "compare models scored on the same test set"
        )
    left = a[["image_id", "label", "fst", "prediction"]]
    right = b[["image_id", "label", "fst", "prediction"]]
    merged = left.merge(right, on="image_id", suffixes=("_a", "_b"), validate="one_to_one")
    for column in ("label", "fst"):
        differ = merged[merged[f"{column}_a"] != merged[f"{column}_b"]]
        if len(differ):
            shown = ", ".join(
                f"{r.image_id}: {getattr(r, column + '_a')!r} vs {getattr(r, column + '_b')!r}"
                for r in differ.head(_MAX_LISTED).itertuples()
            )
            raise DermsynthError(
                f"{len(differ)} image(s) have a different {column} in {name_a} and {name_b} "
                f"({shown}); both files must describe the same test images"
            )
    return pd.DataFrame(
        {
            "image_id": merged["image_id"],
            "label": merged["label_a"],
            "fst": merged["fst_a"],
            "correct_a": (merged["prediction_a"] == merged["label_a"]).to_numpy(),
            "correct_b": (merged["prediction_b"] == merged["label_a"]).to_numpy(),
        }
    )


def _examples(ids: Sequence[str]) -> str:
    if not ids:
        return ""
    more = len(ids) - _MAX_LISTED
    return f" (e.g. {', '.join(ids[:_MAX_LISTED])}{' ...' if more > 0 else ''})"


def paired_table(correct_a: np.ndarray, correct_b: np.ndarray) -> np.ndarray:
    """The 2 x 2 table of paired correctness: rows A right / wrong, columns B right / wrong."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError("correct_a and correct_b must pair up image by image")
    return np.array([[(a & b).sum(), (a & ~b).sum()], [(~a & b).sum(), (~a & ~b).sum()]])


def mcnemar_exact_p(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value (statsmodels) of paired correctness; NaN for no images.

    With no discordant image the test has nothing to weigh and gives 1.0.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    table = paired_table(correct_a, correct_b)
    if table.sum() == 0:
        return math.nan
    return float(mcnemar(table, exact=True).pvalue)


def bootstrap_difference_ci(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    n_boot: int = 2000,
    random_seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``mean(correct_b) - mean(correct_a)`` over paired images.

    Resampling n images with replacement, pairs kept, only changes how many images of each
    kind (both right, only A, only B, neither) the sample holds, and those counts are
    multinomial with the observed shares. Drawing the counts is the same bootstrap, exactly,
    in O(n_boot) memory instead of O(n_boot * n). NaNs for an empty cell.
    """
    if n_boot < 1:
        raise DermsynthError(f"the bootstrap needs at least 1 resample (--n-boot), got {n_boot}")
    table = paired_table(correct_a, correct_b)
    n = int(table.sum())
    if n == 0:
        return (math.nan, math.nan)
    # Order: both right, only A right, only B right, neither.
    counts = table.ravel()
    rng = np.random.default_rng(random_seed)
    draws = rng.multinomial(n, counts / n, size=n_boot)
    diffs = (draws[:, 2] - draws[:, 1]) / n
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    return (float(low), float(high))


def _paired_cell(
    condition: str,
    group: str,
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    n_boot: int,
    random_seed: int,
) -> dict[str, Any]:
    table = paired_table(correct_a, correct_b)
    n = int(table.sum())
    both, only_a, only_b = int(table[0, 0]), int(table[0, 1]), int(table[1, 0])
    acc_a = float(correct_a.mean()) if n else math.nan
    acc_b = float(correct_b.mean()) if n else math.nan
    # Each cell draws from its own generator seeded alike, so a cell's CI depends only on its
    # own images and the seed, not on which other conditions or groups are in the table.
    low, high = bootstrap_difference_ci(correct_a, correct_b, n_boot, random_seed)
    return {
        "condition": condition,
        "fst_group": group,
        "n": n,
        "correct_a": int(correct_a.sum()),
        "correct_b": int(correct_b.sum()),
        "accuracy_a": acc_a,
        "accuracy_b": acc_b,
        "difference": acc_b - acc_a if n else math.nan,
        "both_correct": both,
        "only_a_correct": only_a,
        "only_b_correct": only_b,
        "neither_correct": n - both - only_a - only_b,
        "mcnemar_p": mcnemar_exact_p(correct_a, correct_b),
        "diff_ci_low": low,
        "diff_ci_high": high,
    }


def compare_predictions(
    a: pd.DataFrame,
    b: pd.DataFrame,
    groups: Sequence[FSTGroup],
    n_boot: int = 2000,
    random_seed: int = 0,
) -> pd.DataFrame:
    """Paired comparison of two models: ``COMPARE_COLUMNS``, one row per condition x group.

    Conditions are model A's classes (every label is among them), conditions outer; then one
    row per group with ``condition = "(all)"`` over all its images. Empty cells have n = 0,
    NaN statistics. Images of unknown FST (-1) are in no group.
    """
    groups = list(groups)
    if not groups:
        raise DermsynthError("no FST group to compare; give --groups like '1-2,3-4,5-6'")
    if n_boot < 1:
        raise DermsynthError(f"the bootstrap needs at least 1 resample (--n-boot), got {n_boot}")
    pairs = match_predictions(a, b)
    conditions = model_classes(a)
    extra = [c for c in model_classes(b) if c not in conditions]
    conditions += extra
    label = pairs["label"].to_numpy()
    fst = pairs["fst"].to_numpy()
    ca = pairs["correct_a"].to_numpy(dtype=bool)
    cb = pairs["correct_b"].to_numpy(dtype=bool)
    records = []
    for condition in [*conditions, ALL_CONDITIONS]:
        if condition == ALL_CONDITIONS:
            of_condition = np.ones(len(pairs), dtype=bool)
        else:
            of_condition = label == condition
        for group in groups:
            mask = of_condition & np.isin(fst, list(group))
            records.append(
                _paired_cell(condition, group_label(group), ca[mask], cb[mask], n_boot, random_seed)
            )
    table = pd.DataFrame.from_records(records, columns=list(COMPARE_COLUMNS))
    if int(table.loc[table["condition"] == ALL_CONDITIONS, "n"].sum()) == 0:
        raise DermsynthError(
            f"no test image falls in any of the groups {', '.join(group_label(g) for g in groups)} "
            f"(skin types in the files: {', '.join(map(str, sorted(set(fst.tolist()))))}); "
            "choose --groups that match the test images"
        )
    return table
