"""Skin-tone scales, raters and their agreement.

Two scales are first-class: the Fitzpatrick skin type (FST, 1..6) and the Monk skin tone scale
(MST, 1..10), each with its default grouping (FST I-II / III-IV / V-VI, MST 1-3 / 4-7 / 8-10).
A dataset may have several raters of one scale (Fitzpatrick 17k: two annotation companies;
SCIN: the contributor, up to three dermatologists, two lay graders of MST); a study uses one
rater or a consensus of several (:func:`consensus`). The ITA-based estimate from the images
(:func:`ita_ratings`, the check Fitzpatrick 17k made of its own labels) is one more FST rater.
Agreement between raters is Cohen's kappa, unweighted and quadratic-weighted (scikit-learn).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dermsynth.errors import DermsynthError
from dermsynth.schema import (
    CONSENSUS_RULES,
    FST,
    MST,
    RATER_AGREEMENT_COLUMNS,
    TONE_SCALES,
    UNKNOWN_TONE,
)

ToneGroup = tuple[int, ...]


@dataclass(frozen=True)
class ToneScale:
    """A skin-tone scale: its values, its manifest column and its default grouping."""

    name: str
    title: str
    values: tuple[int, ...]
    groups: tuple[ToneGroup, ...]

    @property
    def column(self) -> str:
        """The manifest column holding this scale (``fst`` or ``mst``)."""
        return self.name

    def label(self, group: Sequence[int]) -> str:
        """``(1, 2, 3)`` -> ``"1-3"``; a single value -> ``"5"``; gaps -> ``"1+3"``."""
        values = sorted(group)
        if len(values) == 1:
            return str(values[0])
        if values == list(range(values[0], values[-1] + 1)):
            return f"{values[0]}-{values[-1]}"
        return "+".join(str(v) for v in values)


SCALES: dict[str, ToneScale] = {
    FST: ToneScale(FST, "Fitzpatrick skin type", (1, 2, 3, 4, 5, 6), ((1, 2), (3, 4), (5, 6))),
    MST: ToneScale(
        MST,
        "Monk skin tone",
        tuple(range(1, 11)),
        ((1, 2, 3), (4, 5, 6, 7), (8, 9, 10)),
    ),
}
assert tuple(SCALES) == TONE_SCALES


def scale_of(name: str) -> ToneScale:
    """The scale called ``name`` (fst or mst)."""
    if name not in SCALES:
        raise DermsynthError(f"unknown skin-tone scale {name!r}; choose {' or '.join(SCALES)}")
    return SCALES[name]


def _group(text: str, scale: ToneScale, option: str) -> ToneGroup:
    raw = text.strip()
    try:
        if "-" in raw:
            low, high = (int(p) for p in raw.split("-"))
            values = list(range(low, high + 1))
        else:
            values = [int(p) for p in raw.split("+")]
    except ValueError:
        raise DermsynthError(
            f"{option}: cannot read group {text!r}; write groups like "
            f"{','.join(scale.label(g) for g in scale.groups)}"
        ) from None
    bad = [v for v in values if v not in scale.values]
    if bad or not values:
        raise DermsynthError(
            f"{option}: {scale.title} values are {scale.values[0]}..{scale.values[-1]}, "
            f"got {text!r}"
        )
    return tuple(sorted(values))


def parse_tone_groups(
    text: str | Sequence[Sequence[int]] | None, scale: ToneScale, *, option: str = "groups"
) -> list[ToneGroup]:
    """``"1-3,4-7,8-10"`` (or lists of values) as groups of ``scale``; None: its default."""
    if text is None:
        return list(scale.groups)
    if isinstance(text, str):
        groups = [_group(part, scale, option) for part in text.split(",") if part.strip()]
    else:
        groups = [_group("+".join(str(v) for v in g), scale, option) for g in text]
    if not groups:
        raise DermsynthError(f"{option}: no group given")
    seen: set[int] = set()
    for group in groups:
        if seen & set(group):
            raise DermsynthError(f"{option}: group {scale.label(group)} overlaps another group")
        seen |= set(group)
    return groups


def group_counts(tones: pd.Series, scale: ToneScale, groups: Sequence[ToneGroup]) -> pd.Series:
    """Images per group of ``scale`` (index: group labels, then ``unknown``)."""
    counts = {scale.label(g): int(tones.isin(list(g)).sum()) for g in groups}
    counts["unknown"] = int((tones == UNKNOWN_TONE).sum())
    return pd.Series(counts, name="images")


def _round_half_up(values: pd.Series) -> pd.Series:
    # A mean or median of 2.5 is 3: the usual clinical rounding, not numpy's round-half-even.
    return np.floor(values + 0.5)


def consensus(ratings: pd.DataFrame, rule: str, scale: ToneScale) -> pd.Series:
    """One value per row from several raters' columns (-1 = that rater gave none).

    ``mean`` and ``median``: of the known ratings, rounded half up; ``majority``: the value
    more than half of the known ratings give (else unknown); ``first``: the first rater's,
    else the next known. Rows no rater rated stay unknown (-1).
    """
    if rule not in CONSENSUS_RULES:
        raise DermsynthError(
            f"unknown consensus rule {rule!r}; choose one of {', '.join(CONSENSUS_RULES)}"
        )
    known = ratings.where(ratings != UNKNOWN_TONE)
    n_known = known.notna().sum(axis=1)
    if rule == "mean":
        value = _round_half_up(known.mean(axis=1, skipna=True))
    elif rule == "median":
        value = _round_half_up(known.median(axis=1, skipna=True))
    elif rule == "first":
        value = known.bfill(axis=1).iloc[:, 0]
    else:
        value = pd.Series(np.nan, index=ratings.index)
        for v in scale.values:
            wins = (known == v).sum(axis=1) * 2 > n_known
            value = value.mask(wins, v)
    return value.where(n_known > 0).fillna(UNKNOWN_TONE).astype(int)


def _to_bins(values: pd.Series, bins: Sequence[ToneGroup] | None) -> pd.Series:
    if bins is None:
        return values
    out = pd.Series(UNKNOWN_TONE, index=values.index)
    for group in bins:
        out = out.mask(values.isin(list(group)), group[0])
    return out


def _kappas(a: pd.Series, b: pd.Series, labels: list[int]) -> tuple[float, float]:
    from sklearn.metrics import cohen_kappa_score

    with warnings.catch_warnings():
        # One value only on both sides: kappa is undefined (NaN), scikit-learn warns.
        warnings.simplefilter("ignore")
        plain = cohen_kappa_score(a, b, labels=labels)
        quadratic = cohen_kappa_score(a, b, labels=labels, weights="quadratic")
    return float(plain), float(quadratic)


def rater_agreement(
    ratings: pd.DataFrame, scale: ToneScale, bins: Sequence[ToneGroup] | None = None
) -> pd.DataFrame:
    """Cohen's kappa (unweighted and quadratic) of every pair of raters, on the rows both rated.

    ``bins``: compare at a coarser resolution (DDI rates FST in pairs: 1-2, 3-4, 5-6), each
    rating replaced by its bin. Columns: ``RATER_AGREEMENT_COLUMNS``.
    """
    labels = sorted({g[0] for g in bins}) if bins is not None else list(scale.values)
    records = []
    for first, second in itertools.combinations(ratings.columns, 2):
        a, b = _to_bins(ratings[first], bins), _to_bins(ratings[second], bins)
        both = (a != UNKNOWN_TONE) & (b != UNKNOWN_TONE)
        n = int(both.sum())
        kappa, quadratic = _kappas(a[both], b[both], labels) if n else (math.nan, math.nan)
        records.append(
            {
                "rater_a": str(first),
                "rater_b": str(second),
                "n": n,
                "agreement": float((a[both] == b[both]).mean()) if n else math.nan,
                "kappa": kappa,
                "kappa_quadratic": quadratic,
            }
        )
    return pd.DataFrame.from_records(records, columns=list(RATER_AGREEMENT_COLUMNS))


def ita_ratings(paths: pd.Series, *, thresholds: Sequence[float] | None = None) -> pd.Series:
    """FST estimated from each image's healthy skin (ITA, Kinyanjui thresholds); -1 where an
    image is missing or unreadable. See :mod:`dermsynth.select.tone`."""
    from dermsynth.data.fst import KINYANJUI_ITA_THRESHOLDS
    from dermsynth.data.images import BadImageError, load_rgb
    from dermsynth.select.tone import tone_score

    limits = KINYANJUI_ITA_THRESHOLDS if thresholds is None else tuple(thresholds)
    values = []
    for path in paths:
        try:
            rgb = np.asarray(load_rgb(path))
        except BadImageError:
            values.append(UNKNOWN_TONE)
            continue
        values.append(tone_score(rgb, UNKNOWN_TONE, thresholds=limits).fst_estimated)
    return pd.Series(values, index=paths.index, name="ita", dtype=int)
