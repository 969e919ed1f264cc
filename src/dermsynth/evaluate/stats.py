"""Arms compared across repeats: hierarchical bootstrap, p-values, multiple-testing corrections.

A study trains R classifiers per arm that differ only by the training seed, and scores every run
of a direction on the same test images. Two sources of chance then move an arm's accuracy: which
test images were drawn, and which training seeds. A paired bootstrap of one run against one run
(``paired.bootstrap_difference_ci``) sees only the first; the hierarchical bootstrap here
resamples both: each draw resamples the repeats of A and of B (separately, with replacement) and
one shared set of test images (so every image is still paired with itself across arms).

``difference`` is always B minus A, as in ``paired``: positive means arm B is more accurate.
Resampling R repeats estimates their variance at (R-1)/R of its size; each draw's per-repeat
accuracies are therefore spread about their mean by sqrt(R/(R-1)) before the repeats are
resampled (the usual small-sample correction), which keeps the intervals from being too narrow
with the 3 to 5 repeats a study affords.

Many such comparisons (conditions x groups x arms x doses) make a family; ``adjust_pvalues`` and
``multiplicity_table`` correct its p-values by Holm (family-wise error) and Benjamini-Hochberg
(false discovery rate) through statsmodels.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from dermsynth.data.fst import FSTGroup, group_label
from dermsynth.errors import DermsynthError
from dermsynth.evaluate.paired import match_predictions
from dermsynth.schema import ALL_CONDITIONS

AdjustMethod = Literal["holm", "fdr_bh"]
ADJUST_METHODS: tuple[str, ...] = ("holm", "fdr_bh")
DEFAULT_ALPHA = 0.05

HIERARCHICAL_COLUMNS: tuple[str, ...] = (
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
)

# Draws are made in blocks so memory stays O(block * n_images) whatever n_boot is; the block
# size is fixed so a seed gives the same draws on every machine.
_BLOCK = 256


@dataclass(frozen=True)
class BootstrapResult:
    """B minus A accuracy over repeats and test images, its percentile CI and bootstrap p."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    accuracy_a: float
    accuracy_b: float
    n_images: int
    repeats_a: int
    repeats_b: int
    n_boot: int
    confidence: float


# --------------------------------------------------------------------------- inputs


def _check_settings(n_boot: int, confidence: float) -> None:
    if n_boot < 1:
        raise DermsynthError(f"the bootstrap needs at least 1 resample (--n-boot), got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise DermsynthError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence}")


def _as_matrix(correct: Sequence[np.ndarray], arm: str) -> np.ndarray:
    """Repeats x images matrix of 0/1; an arm without repeats gives a 0 x 0 matrix."""
    arrays = [np.asarray(c) for c in correct]
    if not arrays:
        return np.zeros((0, 0))
    lengths = sorted({a.shape for a in arrays})
    if len(lengths) > 1 or arrays[0].ndim != 1:
        raise DermsynthError(
            f"arm {arm}: every repeat must be scored on the same test images (one flag per "
            f"image), got shapes {', '.join(map(str, lengths))}"
        )
    matrix = np.vstack(arrays)
    if matrix.dtype != bool and not np.isin(matrix, (0, 1)).all():
        raise DermsynthError(f"arm {arm}: correctness must be True/False (or 1/0) per image")
    return matrix.astype(float)


def align_runs(runs: Sequence[pd.DataFrame]) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Pair several predictions tables by ``image_id`` in the first table's order.

    Returns ``image_id, label, fst`` of the test images and one boolean "predicted right" array
    per run, all in that order, ready for the bootstrap functions (mask them for a cell). Runs
    that do not cover the same images with the same labels and skin types are an error.
    """
    if not runs:
        raise DermsynthError("no predictions to align; give at least one run")
    reference = runs[0]
    images = pd.DataFrame(
        {
            "image_id": reference["image_id"].to_numpy(),
            "label": reference["label"].to_numpy(),
            "fst": reference["fst"].to_numpy(),
        }
    )
    correct = [(reference["prediction"] == reference["label"]).to_numpy(dtype=bool)]
    for run in runs[1:]:
        # match_predictions keeps the first table's row order, so every array lines up.
        pairs = match_predictions(reference, run)
        correct.append(pairs["correct_b"].to_numpy(dtype=bool))
    return images, correct


# --------------------------------------------------------------------------- bootstrap


def _draw_means(
    matrices: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Per matrix, ``n_boot`` bootstrap means over resampled repeats and shared resampled images.

    Resampling N images (or R repeats) with replacement is the same as drawing how often each
    one is taken, a multinomial count vector; the mean of a draw is then a weighted mean, so a
    block of draws is two matrix products instead of a Python loop.
    """
    n_images = matrices[0].shape[1]
    out: list[list[np.ndarray]] = [[] for _ in matrices]
    for start in range(0, n_boot, _BLOCK):
        size = min(_BLOCK, n_boot - start)
        image_counts = rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=size)
        for k, matrix in enumerate(matrices):
            repeats = matrix.shape[0]
            repeat_counts = rng.multinomial(repeats, np.full(repeats, 1.0 / repeats), size=size)
            per_repeat = image_counts @ matrix.T / n_images
            if repeats > 1:
                # Resampling R repeats sees (R-1)/R of their variance; widen their spread
                # about the draw's mean by sqrt(R/(R-1)) so the interval is not too narrow.
                centre = per_repeat.mean(axis=1, keepdims=True)
                per_repeat = centre + (per_repeat - centre) * math.sqrt(repeats / (repeats - 1))
                # ... but never past what an accuracy can be (near the ceiling or the floor).
                per_repeat = np.clip(per_repeat, 0.0, 1.0)
            out[k].append((repeat_counts * per_repeat).sum(axis=1) / repeats)
    return [np.concatenate(parts) for parts in out]


def _percentile_ci(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    return (float(low), float(high))


def bootstrap_p_value(draws: np.ndarray) -> float:
    """Two-sided bootstrap p of "no difference": ``2 min(P(d <= 0), P(d >= 0))``, +1 corrected.

    The +1 on both counts keeps p above zero with finitely many resamples; capped at 1.
    """
    n = len(draws)
    if n == 0:
        return math.nan
    below = (int((draws <= 0).sum()) + 1) / (n + 1)
    above = (int((draws >= 0).sum()) + 1) / (n + 1)
    return float(min(1.0, 2.0 * min(below, above)))


def hierarchical_bootstrap_difference(
    correct_a: Sequence[np.ndarray],
    correct_b: Sequence[np.ndarray],
    *,
    n_boot: int = 2000,
    random_seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapResult:
    """Arm B minus arm A accuracy, averaged over repeats, with a two-level bootstrap CI and p.

    ``correct_a`` / ``correct_b``: one boolean array per repeat, all over the same test images
    in the same order (A and B may have different numbers of repeats). Each draw resamples A's
    repeats, B's repeats and one shared set of images. No repeat or no image: NaNs.
    """
    _check_settings(n_boot, confidence)
    a, b = _as_matrix(correct_a, "A"), _as_matrix(correct_b, "B")
    if a.size and b.size and a.shape[1] != b.shape[1]:
        raise DermsynthError(
            f"arms A and B must be scored on the same test images: A has {a.shape[1]} images "
            f"per repeat, B has {b.shape[1]}"
        )
    n_images = a.shape[1] if a.size and b.size else 0
    if n_images == 0:
        nan = math.nan
        return BootstrapResult(
            nan, nan, nan, nan, nan, nan, 0, a.shape[0], b.shape[0], n_boot, confidence
        )
    rng = np.random.default_rng(random_seed)
    draws_a, draws_b = _draw_means([a, b], n_boot, rng)
    diffs = draws_b - draws_a
    accuracy_a, accuracy_b = float(a.mean()), float(b.mean())
    low, high = _percentile_ci(diffs, confidence)
    return BootstrapResult(
        difference=accuracy_b - accuracy_a,
        ci_low=low,
        ci_high=high,
        p_value=bootstrap_p_value(diffs),
        accuracy_a=accuracy_a,
        accuracy_b=accuracy_b,
        n_images=int(n_images),
        repeats_a=int(a.shape[0]),
        repeats_b=int(b.shape[0]),
        n_boot=int(n_boot),
        confidence=float(confidence),
    )


def hierarchical_bootstrap_accuracy(
    correct: Sequence[np.ndarray],
    *,
    n_boot: int = 2000,
    random_seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Accuracy averaged over repeats and its percentile CI resampling repeats and images.

    Returns ``(mean, low, high)``; NaNs without repeats or images.
    """
    _check_settings(n_boot, confidence)
    matrix = _as_matrix(correct, "")
    if matrix.size == 0:
        return (math.nan, math.nan, math.nan)
    (draws,) = _draw_means([matrix], n_boot, np.random.default_rng(random_seed))
    low, high = _percentile_ci(draws, confidence)
    return (float(matrix.mean()), low, high)


def hierarchical_compare(
    images: pd.DataFrame,
    correct_a: Sequence[np.ndarray],
    correct_b: Sequence[np.ndarray],
    groups: Sequence[FSTGroup],
    *,
    conditions: Sequence[str] | None = None,
    n_boot: int = 2000,
    random_seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """``HIERARCHICAL_COLUMNS``, one row per condition x FST group (then ``"(all)"`` per group).

    ``images`` and the arrays are what ``align_runs`` returns. Conditions default to the labels
    present, sorted. Each cell bootstraps its own images with a generator seeded alike, so a
    cell's numbers do not depend on which other cells are in the table.
    """
    if not list(groups):
        raise DermsynthError("no FST group to compare; give groups like '1-2,3-4,5-6'")
    a = [np.asarray(c, dtype=bool) for c in correct_a]
    b = [np.asarray(c, dtype=bool) for c in correct_b]
    label, fst = images["label"].to_numpy(), images["fst"].to_numpy()
    names = list(conditions) if conditions is not None else sorted(set(label.tolist()))
    records = []
    for condition in [*names, ALL_CONDITIONS]:
        if condition == ALL_CONDITIONS:
            of_condition = np.ones(len(images), dtype=bool)
        else:
            of_condition = label == condition
        for group in groups:
            mask = of_condition & np.isin(fst, list(group))
            result = hierarchical_bootstrap_difference(
                [c[mask] for c in a],
                [c[mask] for c in b],
                n_boot=n_boot,
                random_seed=random_seed,
                confidence=confidence,
            )
            records.append(
                {
                    "condition": condition,
                    "fst_group": group_label(group),
                    "n": int(mask.sum()),
                    "repeats_a": result.repeats_a,
                    "repeats_b": result.repeats_b,
                    "accuracy_a": result.accuracy_a,
                    "accuracy_b": result.accuracy_b,
                    "difference": result.difference,
                    "ci_low": result.ci_low,
                    "ci_high": result.ci_high,
                    "p": result.p_value,
                }
            )
    return pd.DataFrame.from_records(records, columns=list(HIERARCHICAL_COLUMNS))


# --------------------------------------------------------------------------- multiplicity


@contextmanager
def _older_objects_frozen() -> Iterator[None]:
    """Keep the objects that exist now out of any garbage collection run inside the block."""
    # statsmodels' Holm step ends in gc.collect(): a full pass over every live object, a few
    # tenths of a second once torch and diffusers are loaded, paid per family corrected. Frozen
    # objects are skipped by that pass and rejoin the oldest generation after it; no number
    # changes. A process that froze objects itself keeps its own freeze untouched.
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _multipletests(p: Sequence[float], method: str, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """statsmodels' ``multipletests`` over the finite p-values; NaN p stays NaN, never rejected."""
    from statsmodels.stats.multitest import multipletests

    if method not in ADJUST_METHODS:
        raise DermsynthError(
            f"unknown p-value adjustment {method!r}; choose one of {', '.join(ADJUST_METHODS)}"
        )
    values = np.asarray(p, dtype=float).ravel()
    finite = ~np.isnan(values)
    if ((values[finite] < 0) | (values[finite] > 1)).any():
        raise DermsynthError("p-values must lie between 0 and 1")
    adjusted = np.full(values.shape, math.nan)
    reject = np.zeros(values.shape, dtype=bool)
    if finite.any():
        # A NaN is a test that could not be run (an empty cell): it is not part of the family.
        with _older_objects_frozen():
            rejected, corrected, _, _ = multipletests(values[finite], alpha=alpha, method=method)
        adjusted[finite] = corrected
        reject[finite] = rejected
    return reject, adjusted


def adjust_pvalues(p: Sequence[float], method: AdjustMethod = "holm") -> np.ndarray:
    """Holm or Benjamini-Hochberg adjusted p-values (statsmodels); NaNs stay NaN, out of the family."""
    return _multipletests(p, method, DEFAULT_ALPHA)[1]


def multiplicity_table(
    frame: pd.DataFrame,
    p_column: str = "p",
    family_columns: Sequence[str] | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> pd.DataFrame:
    """``frame`` plus ``p_holm``, ``p_bh``, ``significant_holm``, ``significant_bh``.

    All rows form one family, or one family per distinct value of ``family_columns``. Rows with
    a NaN p get NaN adjusted p-values and are not significant.
    """
    missing = [c for c in [p_column, *(family_columns or [])] if c not in frame.columns]
    if missing:
        raise DermsynthError(
            f"the table has no column(s) {', '.join(missing)}; "
            f"its columns are {', '.join(map(str, frame.columns))}"
        )
    if not 0.0 < alpha < 1.0:
        raise DermsynthError(f"alpha must be between 0 and 1 (e.g. 0.05), got {alpha}")
    p_values = pd.to_numeric(frame[p_column], errors="coerce").to_numpy(dtype=float)
    if family_columns:
        grouped = frame.reset_index(drop=True).groupby(list(family_columns), dropna=False)
        families = [np.asarray(rows) for rows in grouped.indices.values()]
    else:
        families = [np.arange(len(frame))]
    adjusted = {name: np.full(len(frame), math.nan) for name in ("holm", "bh")}
    significant = {name: np.zeros(len(frame), dtype=bool) for name in ("holm", "bh")}
    for rows in families:
        for method, name in (("holm", "holm"), ("fdr_bh", "bh")):
            significant[name][rows], adjusted[name][rows] = _multipletests(
                p_values[rows], method, alpha
            )
    out = frame.copy()
    out["p_holm"], out["p_bh"] = adjusted["holm"], adjusted["bh"]
    out["significant_holm"], out["significant_bh"] = significant["holm"], significant["bh"]
    return out
