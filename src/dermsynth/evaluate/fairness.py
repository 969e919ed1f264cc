"""Fairness of one run across Fitzpatrick skin-type groups.

Per group: accuracy, one-vs-rest macro AUROC (scikit-learn) and expected calibration error
(torchmetrics, 15 bins). Across groups: the worst group's accuracy, the best-worst gap and the
worst/best ratio (fairlearn ``MetricFrame``), and per condition the equal-opportunity
difference: the largest minus the smallest true-positive rate (the condition's recall, one
condition against the rest) among the groups that have images of that condition.

Images of unknown FST (-1), or of a type in no group, are left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from dermsynth.data.fst import FSTGroup, group_label
from dermsynth.errors import DermsynthError
from dermsynth.evaluate.metrics import PROBABILITY_PREFIX, model_classes, parse_groups

ECE_BINS = 15
FAIRNESS_GROUP_COLUMNS: tuple[str, ...] = (
    "fst_group",
    "n",
    "accuracy",
    "auroc",
    "auroc_note",
    "ece",
    "ece_note",
)
TPR_PREFIX = "tpr_"
EO_COLUMNS: tuple[str, ...] = ("eo_difference", "eo_groups")


@dataclass
class Fairness:
    """Per-group metrics, per-condition equal opportunity and the headline numbers of one run."""

    groups: pd.DataFrame
    conditions: pd.DataFrame
    summary: dict[str, Any]


def _group_labels(preds: pd.DataFrame, groups: Sequence[FSTGroup]) -> pd.Series:
    """Each image's group label; None where its skin type is in no group."""
    labels = pd.Series([None] * len(preds), index=preds.index, dtype=object)
    for group in groups:
        labels[preds["fst"].isin(list(group)).to_numpy()] = group_label(group)
    return labels


def _probabilities(rows: pd.DataFrame, classes: Sequence[str]) -> np.ndarray | None:
    columns = [f"{PROBABILITY_PREFIX}{c}" for c in classes]
    if not all(c in rows.columns for c in columns):
        return None
    return rows[columns].to_numpy(dtype=float)


def group_auroc(rows: pd.DataFrame, classes: Sequence[str]) -> tuple[float, str]:
    """One-vs-rest macro AUROC of ``rows`` over the model's ``classes``, and why if NaN."""
    from sklearn.metrics import roc_auc_score

    probs = _probabilities(rows, classes)
    if probs is None:
        return (math.nan, "no p_<class> columns")
    absent = [c for c in classes if c not in set(rows["label"])]
    if absent:
        return (math.nan, f"no test image of {', '.join(absent)}")
    labels = rows["label"].to_numpy()
    if len(classes) == 2:
        # scikit-learn takes a two-class problem as binary, scored by the second class; both
        # one-vs-rest AUROCs are that same number.
        return (float(roc_auc_score(labels == classes[1], probs[:, 1])), "")
    sums = probs.sum(axis=1, keepdims=True)
    # Probabilities read back from CSV carry rounding; scikit-learn wants rows summing to 1.
    probs = np.divide(probs, sums, out=probs.copy(), where=sums > 0)
    try:
        value = roc_auc_score(labels, probs, multi_class="ovr", labels=list(classes))
    except ValueError as exc:
        return (math.nan, str(exc))
    return (float(value), "")


def group_ece(
    rows: pd.DataFrame, classes: Sequence[str], n_bins: int = ECE_BINS
) -> tuple[float, str]:
    """Expected calibration error (torchmetrics, L1, ``n_bins``) of ``rows``, and why if NaN."""
    import torch
    from torchmetrics.functional.classification import multiclass_calibration_error

    probs = _probabilities(rows, classes)
    if probs is None:
        return (math.nan, "no p_<class> columns")
    if len(rows) == 0:
        return (math.nan, "no images")
    index = {c: i for i, c in enumerate(classes)}
    target = torch.tensor([index[label] for label in rows["label"]], dtype=torch.long)
    value = multiclass_calibration_error(
        torch.tensor(probs, dtype=torch.float64),
        target,
        num_classes=len(classes),
        n_bins=n_bins,
        norm="l1",
    )
    return (float(value), "")


def _accuracy_frame(rows: pd.DataFrame, sensitive: pd.Series) -> Any:
    from fairlearn.metrics import MetricFrame, count
    from sklearn.metrics import accuracy_score

    return MetricFrame(
        metrics={"n": count, "accuracy": accuracy_score},
        y_true=rows["label"].to_numpy(),
        y_pred=rows["prediction"].to_numpy(),
        sensitive_features=sensitive.to_numpy(),
    )


def _group_table(
    rows: pd.DataFrame,
    sensitive: pd.Series,
    groups: Sequence[FSTGroup],
    n_bins: int,
    accuracy: Any,
) -> pd.DataFrame:
    by_group = accuracy.by_group
    classes = model_classes(rows)
    records = []
    for group in groups:
        label = group_label(group)
        in_group = rows[(sensitive == label).to_numpy()]
        n = len(in_group)
        auroc, auroc_note = group_auroc(in_group, classes) if n else (math.nan, "no images")
        ece, ece_note = group_ece(in_group, classes, n_bins) if n else (math.nan, "no images")
        records.append(
            {
                "fst_group": label,
                "n": n,
                "accuracy": float(by_group.loc[label, "accuracy"]) if n else math.nan,
                "auroc": auroc,
                "auroc_note": auroc_note,
                "ece": ece,
                "ece_note": ece_note,
            }
        )
    return pd.DataFrame.from_records(records, columns=list(FAIRNESS_GROUP_COLUMNS))


def _condition_table(
    rows: pd.DataFrame, sensitive: pd.Series, groups: Sequence[FSTGroup]
) -> pd.DataFrame:
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import recall_score

    classes = model_classes(rows)
    # Recall per label over the model's labels is each condition's one-vs-rest true-positive
    # rate: one scikit-learn call per group gives every condition's. A group without images of
    # a condition has no true-positive rate (NaN, not 0).
    frame = MetricFrame(
        metrics={"tpr": partial(recall_score, labels=classes, average=None, zero_division=np.nan)},
        y_true=rows["label"].to_numpy(),
        y_pred=rows["prediction"].to_numpy(),
        sensitive_features=sensitive.to_numpy(),
    )
    per_group = frame.by_group["tpr"]
    rates = pd.DataFrame(np.vstack(per_group.to_numpy()), index=per_group.index, columns=classes)
    # MetricFrame.difference() takes scalar metrics only; this is its between-groups difference
    # (largest minus smallest rate, NaN groups left out) for every condition at once.
    differences = rates.max() - rates.min()
    labels = [group_label(g) for g in groups]
    rates = rates.reindex(labels)
    records = []
    for condition in classes:
        of_condition = rates[condition]
        measured = int(of_condition.notna().sum())
        record: dict[str, Any] = {"condition": condition}
        record.update({f"{TPR_PREFIX}{g}": float(of_condition[g]) for g in labels})
        record["eo_difference"] = float(differences[condition]) if measured >= 2 else math.nan
        record["eo_groups"] = measured
        records.append(record)
    columns = ["condition", *(f"{TPR_PREFIX}{g}" for g in labels), *EO_COLUMNS]
    return pd.DataFrame.from_records(records, columns=columns)


def _summary(accuracy_frame: Any, conditions: pd.DataFrame, n_images: int) -> dict[str, Any]:
    frame = accuracy_frame
    accuracy = frame.by_group["accuracy"].dropna()
    compared = len(accuracy) >= 2
    eo = conditions.dropna(subset=["eo_difference"])
    worst_eo = eo.iloc[int(np.argmax(eo["eo_difference"].to_numpy()))] if len(eo) else None
    return {
        "n_images": n_images,
        "worst_group": str(accuracy.idxmin()) if len(accuracy) else None,
        "worst_accuracy": float(accuracy.min()) if len(accuracy) else math.nan,
        "best_group": str(accuracy.idxmax()) if len(accuracy) else None,
        "best_accuracy": float(accuracy.max()) if len(accuracy) else math.nan,
        "gap": float(frame.difference()["accuracy"]) if compared else math.nan,
        "ratio": float(frame.ratio()["accuracy"]) if compared else math.nan,
        "max_eo_difference": float(worst_eo["eo_difference"]) if worst_eo is not None else math.nan,
        "max_eo_condition": str(worst_eo["condition"]) if worst_eo is not None else None,
    }


def fairness_report(
    preds: pd.DataFrame, groups: Sequence[FSTGroup], *, n_bins: int = ECE_BINS
) -> Fairness:
    """Fairness of one predictions table across ``groups`` (disjoint tuples of skin types).

    ``groups``: ``FAIRNESS_GROUP_COLUMNS``, one row per group in the order given (n = 0 and NaN
    metrics for an empty group; the notes say why an AUROC or ECE is NaN). ``conditions``: one
    row per model class with ``tpr_<group>`` per group, ``eo_difference`` (max minus min TPR over
    groups having the condition; NaN with fewer than two) and ``eo_groups`` (how many). ``summary``:
    worst / best group and accuracy, ``gap`` (best minus worst), ``ratio`` (worst / best; NaN
    with fewer than two groups with images), and the largest equal-opportunity difference.
    """
    # Disjoint groups only: an image counted in two groups would blur the comparison.
    groups = parse_groups(list(groups), option="groups")
    if n_bins < 1:
        raise DermsynthError(f"calibration needs at least 1 bin, got {n_bins}")
    sensitive = _group_labels(preds, groups)
    kept = sensitive.notna().to_numpy()
    if not kept.any():
        raise DermsynthError(
            f"no test image falls in any of the groups {', '.join(group_label(g) for g in groups)}"
            f" (skin types present: {', '.join(map(str, sorted(set(preds['fst'].tolist()))))}); "
            "choose groups that match the test images"
        )
    rows = preds[kept]
    rows.attrs = dict(preds.attrs)
    in_groups = sensitive[kept]
    conditions = _condition_table(rows, in_groups, groups)
    # One accuracy frame serves the per-group table and the headline numbers.
    accuracy = _accuracy_frame(rows, in_groups)
    return Fairness(
        groups=_group_table(rows, in_groups, groups, n_bins, accuracy),
        conditions=conditions,
        summary=_summary(accuracy, conditions, len(rows)),
    )
