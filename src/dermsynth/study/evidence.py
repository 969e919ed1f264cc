"""The statistics a study's claims rest on, computed from every finished run's predictions.

* ``results/summary.csv``: accuracy of each cell (direction x arm x augmented condition x dose x
  condition x test group) over its repeats. With several repeats the interval is a hierarchical
  bootstrap over repeats and test images (it includes training-seed variation); with one, the
  run's Wald interval, as the paper reports it. The ``interval`` column says which.
* ``results/comparisons.csv``: ``real+seed+synthetic`` against every other arm of the same
  direction, augmented condition and dose (the undosed arms at every dose): per condition x test
  group, the difference pooled over repeats with its hierarchical-bootstrap CI and p, McNemar's
  exact test per repeat, and Holm and Benjamini-Hochberg adjusted p-values. Two families are
  corrected apart: ``primary`` (the augmented condition itself, in every test group, every
  comparison, dose and direction) and ``spillover`` (every other condition, and all conditions
  together).
* ``results/fairness.csv``: per run kind, fairness over the test groups averaged over repeats:
  worst-group accuracy, best-worst gap and ratio, the largest equal-opportunity difference, and
  AUROC and calibration error per group (:mod:`dermsynth.evaluate.fairness`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dermsynth.arms import ARMS, SYNTHETIC
from dermsynth.data.fst import FSTGroup, group_label
from dermsynth.schema import ALL_CONDITIONS

N_BOOT = 2000
CellKey = tuple[str, str, str, int]  # direction, arm, augmented, dose

SUMMARY_COLUMNS: tuple[str, ...] = (
    "direction",
    "arm",
    "augmented",
    "dose",
    "condition",
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
COMPARISON_KEYS: tuple[str, ...] = (
    "family",
    "direction",
    "augmented",
    "arm_a",
    "dose_a",
    "arm_b",
    "dose_b",
)


@dataclass
class Cell:
    """The test images of a direction and, per repeat, which ones a run kind got right."""

    images: pd.DataFrame  # image_id, label, fst
    correct: list[np.ndarray]  # one boolean array per repeat, in ``images`` order


def cells(
    runs: Sequence[tuple[CellKey, int, pd.DataFrame]],
) -> dict[CellKey, Cell]:
    """Group finished runs ``(key, repeat, predictions)`` by run kind, aligned image by image
    with the first run of their direction."""
    from dermsynth.evaluate.stats import align_runs

    reference: dict[str, pd.DataFrame] = {}
    grouped: dict[CellKey, list[tuple[int, pd.DataFrame]]] = defaultdict(list)
    for key, repeat, preds in runs:
        reference.setdefault(key[0], preds)
        grouped[key].append((repeat, preds))
    out: dict[CellKey, Cell] = {}
    for key, members in grouped.items():
        ordered = [p for _, p in sorted(members, key=lambda m: m[0])]
        images, correct = align_runs([reference[key[0]], *ordered])
        out[key] = Cell(images, correct[1:])
    return out


def _masks(
    images: pd.DataFrame, conditions: Sequence[str], groups: Sequence[FSTGroup]
) -> list[tuple[str, str, np.ndarray]]:
    label, fst = images["label"].to_numpy(), images["fst"].to_numpy()
    out = []
    for condition in [*conditions, ALL_CONDITIONS]:
        of = np.ones(len(images), bool) if condition == ALL_CONDITIONS else label == condition
        for group in groups:
            out.append((condition, group_label(group), of & np.isin(fst, list(group))))
    return out


def _accuracy_cell(correct: list[np.ndarray], random_seed: int) -> dict[str, object]:
    from dermsynth.evaluate.metrics import wald_interval
    from dermsynth.evaluate.stats import hierarchical_bootstrap_accuracy

    n = len(correct[0]) if correct else 0
    per_repeat = [float(c.mean()) for c in correct] if n else []
    if n == 0:
        mean = low = high = math.nan
        interval = ""
    elif len(correct) == 1:
        mean = per_repeat[0]
        low, high = wald_interval(int(correct[0].sum()), n)
        interval = "Wald (one run)"
    else:
        mean, low, high = hierarchical_bootstrap_accuracy(
            correct, n_boot=N_BOOT, random_seed=random_seed
        )
        interval = f"hierarchical bootstrap ({len(correct)} repeats x {n} images)"
    return {
        "n": n,
        "repeats": len(correct),
        "accuracy": mean,
        "ci_low": low,
        "ci_high": high,
        "interval": interval,
        "accuracy_sd": float(np.std(per_repeat, ddof=1)) if len(per_repeat) > 1 else math.nan,
        "accuracy_min": min(per_repeat) if per_repeat else math.nan,
        "accuracy_max": max(per_repeat) if per_repeat else math.nan,
    }


def summary_table(
    table: dict[CellKey, Cell],
    conditions: Sequence[str],
    tests: Mapping[str, Sequence[FSTGroup]],
    random_seed: int = 0,
) -> pd.DataFrame:
    """Accuracy of every cell over its repeats (see the module doc); ``SUMMARY_COLUMNS``."""
    records = []
    for (direction, arm, augmented, dose), cell in table.items():
        for condition, group, mask in _masks(cell.images, conditions, tests[direction]):
            correct = [c[mask] for c in cell.correct]
            records.append(
                {
                    "direction": direction,
                    "arm": arm,
                    "augmented": augmented,
                    "dose": dose,
                    "condition": condition,
                    "fst_group": group,
                    **_accuracy_cell(correct, random_seed),
                }
            )
    return pd.DataFrame.from_records(records, columns=list(SUMMARY_COLUMNS))


def comparison_pairs(keys: Sequence[CellKey]) -> list[tuple[CellKey, CellKey]]:
    """(other arm, synthetic arm) run kinds compared: same direction and augmented condition,
    same dose (an undosed arm is compared at every dose of the synthetic arm)."""
    pairs = []
    for synth in keys:
        direction, arm, augmented, dose = synth
        if arm != SYNTHETIC:
            continue
        for other in keys:
            o_direction, o_arm, o_augmented, o_dose = other
            if o_direction != direction or o_arm == SYNTHETIC:
                continue
            if ARMS[o_arm].augmented and o_augmented != augmented:
                continue
            if ARMS[o_arm].dosed and o_dose != dose:
                continue
            pairs.append((other, synth))
    return pairs


def _mcnemar_per_repeat(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[float, int, int]:
    """Median exact McNemar p over the repeats both arms have, and how many had p < 0.05."""
    from dermsynth.evaluate.paired import mcnemar_exact_p

    ps = [mcnemar_exact_p(x, y) for x, y in zip(a, b, strict=False)]
    ps = [p for p in ps if not math.isnan(p)]
    if not ps:
        return math.nan, 0, 0
    return float(np.median(ps)), sum(p < 0.05 for p in ps), len(ps)


def comparisons_table(
    table: dict[CellKey, Cell],
    conditions: Sequence[str],
    tests: Mapping[str, Sequence[FSTGroup]],
    random_seed: int = 0,
) -> pd.DataFrame:
    """The synthetic arm against every other arm (see the module doc), corrected per family."""
    from dermsynth.evaluate.stats import hierarchical_compare, multiplicity_table

    frames = []
    for other, synth in comparison_pairs(list(table)):
        a, b = table[other], table[synth]
        rows = hierarchical_compare(
            b.images, a.correct, b.correct, tests[synth[0]], conditions=conditions,
            n_boot=N_BOOT, random_seed=random_seed,
        )  # fmt: skip
        mcnemar = [
            _mcnemar_per_repeat([c[mask] for c in a.correct], [c[mask] for c in b.correct])
            for _, _, mask in _masks(b.images, conditions, tests[synth[0]])
        ]
        frames.append(
            rows.assign(
                family=np.where(rows["condition"] == synth[2], "primary", "spillover"),
                direction=synth[0],
                augmented=synth[2],
                arm_a=other[1],
                dose_a=other[3],
                arm_b=synth[1],
                dose_b=synth[3],
                mcnemar_p_median=[m[0] for m in mcnemar],
                mcnemar_significant=[m[1] for m in mcnemar],
                mcnemar_repeats=[m[2] for m in mcnemar],
            )
        )
    if not frames:
        return pd.DataFrame(columns=list(COMPARISON_KEYS))
    frame = pd.concat(frames, ignore_index=True)
    frame = multiplicity_table(frame, "p", family_columns=["family"])
    first = list(COMPARISON_KEYS)
    return frame[first + [c for c in frame.columns if c not in first]]


def fairness_table(
    runs: Sequence[tuple[CellKey, int, pd.DataFrame]],
    tests: Mapping[str, Sequence[FSTGroup]],
) -> pd.DataFrame:
    """Fairness of each run over its direction's test groups, then averaged per run kind."""
    from dermsynth.evaluate.fairness import fairness_report

    records = []
    for (direction, arm, augmented, dose), repeat, preds in runs:
        report = fairness_report(preds, list(tests[direction]))
        row = {"direction": direction, "arm": arm, "augmented": augmented, "dose": dose}
        row |= {"repeat": repeat, **_fairness_numbers(report)}
        records.append(row)
    if not records:
        return pd.DataFrame()
    frame = pd.DataFrame.from_records(records)
    keys = ["direction", "arm", "augmented", "dose"]
    numbers = [c for c in frame.columns if c not in (*keys, "repeat", "worst_group", "best_group")]
    means = frame.groupby(keys, sort=False)[numbers].mean()
    counts = frame.groupby(keys, sort=False).agg(
        repeats=("repeat", "nunique"),
        worst_group=("worst_group", lambda s: s.mode().iloc[0]),
        gap_sd=("gap", lambda s: s.std(ddof=1) if len(s) > 1 else math.nan),
    )
    return counts.join(means).reset_index()


def _fairness_numbers(report: object) -> dict[str, object]:
    summary = report.summary  # type: ignore[attr-defined]
    groups = report.groups  # type: ignore[attr-defined]
    out: dict[str, object] = {
        "worst_group": summary["worst_group"],
        "best_group": summary["best_group"],
        "worst_accuracy": summary["worst_accuracy"],
        "gap": summary["gap"],
        "ratio": summary["ratio"],
        "max_eo_difference": summary["max_eo_difference"],
    }
    for row in groups.itertuples(index=False):
        out[f"auroc_{row.fst_group}"] = row.auroc
        out[f"ece_{row.fst_group}"] = row.ece
    return out
