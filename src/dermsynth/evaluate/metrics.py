"""Accuracy of a classifier by condition x Fitzpatrick skin-type group, with confidence intervals.

The metric is the paper's: the accuracy of a condition within an FST group is the share of that
group's test images of that condition that the model predicted as that condition (the
condition's recall in the group). Its 95% interval is the normal approximation (Wald) clipped to
[0, 1], as the paper reports it (0.175 with N = 177 gives 0.12-0.23); the Wilson interval is
given beside it because Wald is poor for small N or accuracies near 0 or 1.

Per group there is also the overall accuracy, the balanced accuracy (mean recall over the
conditions present in the group) and the macro-F1, and across groups the gap between the best
and the worst group.

Predictions files are what ``dermsynth predict`` writes: ``image_id,label,fst,prediction`` and
one ``p_<class>`` probability column per class; ``test_group``, ``split`` and ``run`` may ride
along and are ignored here. Images of unknown FST (-1) fall in no group and are counted apart.
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermsynth.data.fst import FST_TYPES, UNKNOWN_FST, FSTGroup, group_label, parse_fst_group
from dermsynth.errors import DermsynthError
from dermsynth.schema import ACCURACY_COLUMNS, SUMMARY_COLUMNS

PREDICTION_COLUMNS: tuple[str, ...] = ("image_id", "label", "fst", "prediction")
PROBABILITY_PREFIX = "p_"
DEFAULT_GROUPS = "1-2,3-4,5-6"

GAP_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_f1")
GAP_ROW_LABEL = "gap"

_MAX_LISTED = 5


# --------------------------------------------------------------------------- intervals


def wald_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Normal-approximation (Wald) interval of ``correct / n`` clipped to [0, 1]; NaNs if n = 0."""
    from statsmodels.stats.proportion import proportion_confint

    if n <= 0:
        return (math.nan, math.nan)
    low, high = proportion_confint(correct, n, alpha=1.0 - confidence, method="normal")
    # The raw Wald interval can leave [0, 1] near the ends; the paper reports it clipped.
    return (float(np.clip(low, 0.0, 1.0)), float(np.clip(high, 0.0, 1.0)))


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of ``correct / n``; NaNs for n = 0."""
    from statsmodels.stats.proportion import proportion_confint

    if n <= 0:
        return (math.nan, math.nan)
    low, high = proportion_confint(correct, n, alpha=1.0 - confidence, method="wilson")
    return (float(low), float(high))


def _cell(correct: int, n: int) -> dict[str, Any]:
    """n, correct, accuracy and both intervals of one cell; n = 0 gives NaNs, never a division."""
    ci_low, ci_high = wald_interval(correct, n)
    wilson_low, wilson_high = wilson_interval(correct, n)
    return {
        "n": int(n),
        "correct": int(correct),
        "accuracy": correct / n if n > 0 else math.nan,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "wilson_low": wilson_low,
        "wilson_high": wilson_high,
    }


# --------------------------------------------------------------------------- groups


def parse_groups(
    text: str | Sequence[str | Sequence[int]], *, option: str = "--groups"
) -> list[FSTGroup]:
    """Parse ``"1-2,3-4,5-6"`` (groups split by commas; ``1+3`` for a non-contiguous group).

    Groups must not overlap: the best-worst gap compares disjoint groups of patients.
    """
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",")]
        if not any(parts):
            raise DermsynthError(f"{option}: empty; give FST groups like '1-2,3-4,5-6'")
        if not all(parts):
            raise DermsynthError(
                f"{option}: {text!r} has an empty group; give groups like '1-2,3-4,5-6'"
            )
        raw: list[str | Sequence[int]] = [p.replace("+", ",") for p in parts]
    else:
        raw = list(text)
        if not raw:
            raise DermsynthError(f"{option}: no FST group given")
    groups = [parse_fst_group(p, option=option) for p in raw]
    seen: dict[int, FSTGroup] = {}
    for group in groups:
        for fst in group:
            if fst in seen:
                raise DermsynthError(
                    f"{option}: skin type {fst} is in both {group_label(seen[fst])} and "
                    f"{group_label(group)}; groups must not overlap "
                    "(run again for another grouping)"
                )
            seen[fst] = group
    return groups


# --------------------------------------------------------------------------- loading


def _lines(index: Sequence[int] | pd.Index) -> str:
    """Data-row positions -> CSV line numbers (the header is line 1), a few at most."""
    lines = [str(int(i) + 2) for i in list(index)[:_MAX_LISTED]]
    more = len(index) - len(lines)
    word = "line" if len(index) == 1 else "lines"
    return f"{word} {', '.join(lines)}" + (f" and {more} more" if more > 0 else "")


def _read_predictions(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise DermsynthError(f"no such file: {path}")
    if path.is_dir():
        raise DermsynthError(f"{path} is a folder; give the predictions CSV inside it")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    except pd.errors.EmptyDataError:
        raise DermsynthError(f"{path}: the file is empty; expected a predictions CSV") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DermsynthError(f"{path}: not a readable CSV ({exc})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise DermsynthError(
            f"{path}: predictions are missing column(s) {', '.join(missing)}; expected "
            f"{','.join(PREDICTION_COLUMNS)} and one p_<class> column per class "
            "(as `dermsynth predict` writes them)"
        )
    if frame.empty:
        raise DermsynthError(f"{path}: no predictions (a header but no rows)")
    return frame.reset_index(drop=True)


def _model_classes_of(path: Path, frame: pd.DataFrame) -> tuple[list[str], str]:
    """The classes from the ``p_*`` columns (checked numbers), else from the predictions."""
    prob_columns = [c for c in frame.columns if c.startswith(PROBABILITY_PREFIX)]
    if not prob_columns:
        return sorted(frame["prediction"].unique()), "no p_* columns, so the set of predictions"
    classes = [c[len(PROBABILITY_PREFIX) :] for c in prob_columns]
    if any(not c.strip() for c in classes):
        raise DermsynthError(f"{path}: a probability column is named only 'p_'; name its class")
    for column in prob_columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = frame.index[values.isna()]
        if len(bad):
            raise DermsynthError(f"{path}: {column} is not a number on {_lines(bad)}")
        frame[column] = values.astype(float)
    source = "its p_* columns"
    strange = _unknown_values(frame["prediction"], classes)
    if strange:
        raise DermsynthError(
            f"{path}: prediction(s) not among the model's classes ({source}): "
            f"{_describe_unknown(strange, classes)}"
        )
    return classes, source


def load_predictions(path: str | Path) -> pd.DataFrame:
    """Read and check a predictions CSV; ``fst`` becomes an int (-1 = unknown, rows kept).

    The model's classes (``model_classes``) come from the ``p_<class>`` columns, or, where the
    file has none, from the set of predictions. Errors name the offending columns, labels and
    CSV lines.
    """
    path = Path(path)
    frame = _read_predictions(path)
    for column in ("image_id", "label", "prediction"):
        frame[column] = frame[column].str.strip()
        blank = frame.index[frame[column] == ""]
        if len(blank):
            raise DermsynthError(f"{path}: empty {column} on {_lines(blank)}")
    frame["fst"] = _parse_fst(path, frame["fst"])
    _check_unique_ids(path, frame)
    classes, source = _model_classes_of(path, frame)
    unknown = _unknown_values(frame["label"], classes)
    if unknown:
        raise DermsynthError(
            f"{path}: label(s) unknown to the model: {_describe_unknown(unknown, classes)}; "
            f"the model's classes ({source}) are: {', '.join(classes)}"
        )
    frame.attrs["path"] = str(path)
    frame.attrs["classes"] = list(classes)
    return frame


def _parse_fst(path: Path, column: pd.Series) -> pd.Series:
    values = pd.to_numeric(column.str.strip(), errors="coerce")
    allowed = {*FST_TYPES, UNKNOWN_FST}
    ok = values.notna() & values.isin(allowed)
    bad = column.index[~ok]
    if len(bad):
        shown = ", ".join(repr(v) for v in column[bad].unique()[:_MAX_LISTED])
        raise DermsynthError(
            f"{path}: fst must be 1..6 or -1 (unknown); got {shown} on {_lines(bad)}"
        )
    return values.astype(int)


def _check_unique_ids(path: Path, frame: pd.DataFrame) -> None:
    dup = frame["image_id"].duplicated(keep=False)
    if not dup.any():
        return
    ids = list(dict.fromkeys(frame.loc[dup, "image_id"]))
    hint = ""
    if "run" in frame.columns and frame["run"].nunique() > 1:
        runs = ", ".join(sorted(frame["run"].unique())[:_MAX_LISTED])
        hint = f"; the file holds several runs (column run: {runs}): evaluate one run at a time"
    raise DermsynthError(
        f"{path}: {len(ids)} image_id(s) appear more than once "
        f"(e.g. {', '.join(ids[:_MAX_LISTED])}){hint}"
    )


def _unknown_values(values: pd.Series, classes: Sequence[str]) -> dict[str, pd.Index]:
    known = set(classes)
    mask = ~values.isin(known)
    return {str(v): values.index[mask & (values == v)] for v in dict.fromkeys(values[mask])}


def _describe_unknown(unknown: dict[str, pd.Index], classes: Sequence[str]) -> str:
    parts = []
    for value, rows in list(unknown.items())[:_MAX_LISTED]:
        close = difflib.get_close_matches(value, list(classes), n=1, cutoff=0.6)
        if not close:
            close = [c for c in classes if c.lower() == value.lower()]
        hint = f"; did you mean {close[0]!r}?" if close else ""
        parts.append(f"{value!r} ({_lines(rows)}{hint})")
    more = len(unknown) - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def model_classes(preds: pd.DataFrame) -> list[str]:
    """The classes of the model that wrote ``preds``: its p_* columns, else its predictions."""
    classes = preds.attrs.get("classes")
    if classes:
        return list(classes)
    prob = [c[len(PROBABILITY_PREFIX) :] for c in preds.columns if c.startswith(PROBABILITY_PREFIX)]
    return prob or sorted(preds["prediction"].unique())


def unknown_fst_count(preds: pd.DataFrame) -> int:
    """How many images have an unknown skin type (-1) and so fall in no group."""
    return int((preds["fst"] == UNKNOWN_FST).sum())


def rows_in_group(preds: pd.DataFrame, group: Sequence[int]) -> pd.DataFrame:
    """The predictions of images whose skin type is in ``group``."""
    return preds[preds["fst"].isin(list(group))]


# --------------------------------------------------------------------------- tables


def accuracy_table(
    preds: pd.DataFrame,
    groups: Sequence[FSTGroup],
    conditions: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per condition x FST group (conditions outer): ``ACCURACY_COLUMNS``.

    Conditions default to the model's classes, so the grid is complete: a cell without test
    images has n = 0 and NaN accuracy and intervals.
    """
    names = list(conditions) if conditions is not None else model_classes(preds)
    hit = preds["label"] == preds["prediction"]
    records = []
    for condition in names:
        of_condition = preds["label"] == condition
        for group in groups:
            mask = of_condition & preds["fst"].isin(list(group))
            n = int(mask.sum())
            correct = int((mask & hit).sum())
            records.append(
                {"condition": condition, "fst_group": group_label(group), **_cell(correct, n)}
            )
    return pd.DataFrame.from_records(records, columns=list(ACCURACY_COLUMNS))


def group_summary(preds: pd.DataFrame, groups: Sequence[FSTGroup]) -> pd.DataFrame:
    """One row per FST group: ``SUMMARY_COLUMNS``.

    ``accuracy`` is over all the group's images; ``balanced_accuracy`` (scikit-learn) is the
    mean of the per-condition accuracies of the conditions present in the group, so it equals
    the mean of that group's non-empty cells in ``accuracy_table``; ``macro_f1`` (scikit-learn)
    averages F1 over the same conditions. An empty group has n = 0 and NaN metrics.
    """
    from sklearn.metrics import balanced_accuracy_score, f1_score

    records = []
    for group in groups:
        rows = rows_in_group(preds, group)
        n = len(rows)
        correct = int((rows["label"] == rows["prediction"]).sum())
        record: dict[str, Any] = {"fst_group": group_label(group), **_cell(correct, n)}
        if n:
            present = sorted(rows["label"].unique())
            with warnings.catch_warnings():
                # Predicted classes absent from the group's labels are expected (a model confuses
                # conditions); scikit-learn warns about them but leaves them out, as intended.
                warnings.simplefilter("ignore")
                balanced = balanced_accuracy_score(rows["label"], rows["prediction"])
            macro_f1 = f1_score(
                rows["label"], rows["prediction"], labels=present, average="macro", zero_division=0
            )
            record.update(
                balanced_accuracy=float(balanced),
                macro_f1=float(macro_f1),
                n_conditions=len(present),
            )
        else:
            record.update(balanced_accuracy=math.nan, macro_f1=math.nan, n_conditions=0)
        records.append(record)
    return pd.DataFrame.from_records(records, columns=list(SUMMARY_COLUMNS))


def group_gaps(summary: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Best minus worst group for each of ``GAP_METRICS``, over groups with images.

    Each entry holds ``best_group``, ``best``, ``worst_group``, ``worst`` and ``gap``; with fewer
    than two non-empty groups there is nothing to compare and the values are None / NaN.
    """
    gaps: dict[str, dict[str, Any]] = {}
    filled = summary[summary["n"] > 0]
    for metric in GAP_METRICS:
        values = filled[["fst_group", metric]].dropna()
        if len(values) < 2:
            gaps[metric] = {
                "best_group": None,
                "best": math.nan,
                "worst_group": None,
                "worst": math.nan,
                "gap": math.nan,
            }
            continue
        best = values.iloc[values[metric].argmax()]
        worst = values.iloc[values[metric].argmin()]
        gaps[metric] = {
            "best_group": str(best["fst_group"]),
            "best": float(best[metric]),
            "worst_group": str(worst["fst_group"]),
            "worst": float(worst[metric]),
            "gap": float(best[metric] - worst[metric]),
        }
    return gaps


def summary_with_gap_row(summary: pd.DataFrame, gaps: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The per-group summary plus a last row ``fst_group = "gap"`` holding best minus worst.

    Only the ``GAP_METRICS`` columns are filled on that row; this is the ``<stem>_groups.csv``
    that ``dermsynth evaluate --out`` writes.
    """
    gap_row = {"fst_group": GAP_ROW_LABEL, **{m: gaps[m]["gap"] for m in GAP_METRICS}}
    out = pd.concat([summary, pd.DataFrame([gap_row])], ignore_index=True)
    for column in ("n", "correct", "n_conditions"):
        out[column] = out[column].astype("Int64")
    return out


# --------------------------------------------------------------------------- all in one


@dataclass
class Evaluation:
    """Everything ``dermsynth evaluate`` reports for one predictions file."""

    table: pd.DataFrame
    summary: pd.DataFrame
    gaps: dict[str, dict[str, Any]]
    groups: list[FSTGroup]
    n_images: int
    n_unknown_fst: int
    warnings: list[str] = field(default_factory=list)


def evaluate_predictions(preds: pd.DataFrame, groups: Sequence[FSTGroup]) -> Evaluation:
    """Accuracy table, per-group summary and gaps of ``preds`` over ``groups``.

    A group without images is reported with n = 0 and a warning; only when no group has any
    image is the request meaningless, and that is an error naming the skin types the file has.
    """
    groups = list(groups)
    if not groups:
        raise DermsynthError("no FST group to evaluate; give --groups like '1-2,3-4,5-6'")
    summary = group_summary(preds, groups)
    if int(summary["n"].sum()) == 0:
        present = sorted(int(v) for v in preds["fst"].unique())
        where = preds.attrs.get("path", "the predictions")
        raise DermsynthError(
            f"{where}: no image falls in any of the groups "
            f"{', '.join(group_label(g) for g in groups)} (the file's skin types: "
            f"{', '.join(map(str, present))}); choose --groups that match the test images"
        )
    notes = [
        f"FST group {row.fst_group} has no images: its rows show n=0 and no accuracy"
        for row in summary.itertuples()
        if row.n == 0
    ]
    return Evaluation(
        table=accuracy_table(preds, groups),
        summary=summary,
        gaps=group_gaps(summary),
        groups=groups,
        n_images=len(preds),
        n_unknown_fst=unknown_fst_count(preds),
        warnings=notes,
    )
