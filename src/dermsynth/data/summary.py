"""Sample sizes by skin type and condition (the paper's Table 1) and condition ranking."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from dermsynth.data.fst import DARK_EXTREME, FST_TYPES, LIGHT_EXTREME, UNKNOWN_FST, group_label
from dermsynth.data.manifest import resolve_conditions


def fst_table(manifest: pd.DataFrame, conditions: Sequence[str] | None = None) -> pd.DataFrame:
    """Counts of images by FST (rows ``1``..``6`` and ``total``) x condition (plus ``total``).

    Conditions keep the order given; without them, every condition, most images first.
    Images of unknown FST are not counted here (see :func:`unknown_fst_counts`).
    """
    if conditions is None:
        order = manifest["label"].value_counts(sort=True)
        conditions = sorted(order.index, key=lambda c: (-order[c], c))
    else:
        conditions = resolve_conditions(conditions, manifest["label"].unique())
    rows = manifest[manifest["label"].isin(conditions) & manifest["fst"].isin(FST_TYPES)]
    counts = pd.crosstab(rows["fst"], rows["label"])
    table = counts.reindex(index=list(FST_TYPES), columns=list(conditions), fill_value=0)
    table = table.fillna(0).astype(int)
    table["total"] = table.sum(axis=1)
    table.loc["total"] = table.sum(axis=0)
    table.index = [str(i) for i in table.index]
    table.index.name = "fst"
    table.columns.name = None
    return table


def unknown_fst_counts(manifest: pd.DataFrame, conditions: Sequence[str]) -> dict[str, int]:
    """Images of unknown FST (-1) per condition: left out of analyses, reported in summaries."""
    unknown = manifest[(manifest["fst"] == UNKNOWN_FST) & manifest["label"].isin(conditions)]
    counts = unknown["label"].value_counts()
    return {c: int(counts.get(c, 0)) for c in conditions}


def rank_extremes(manifest: pd.DataFrame, k: int | None = None) -> pd.DataFrame:
    """Rank every condition by the smaller of its FST I-II and V-VI counts (largest first).

    This is the paper's condition-selection step: conditions with many images at both ends
    of the scale can be trained on one extreme and tested on the other.
    """
    light = manifest[manifest["fst"].isin(LIGHT_EXTREME)]["label"].value_counts()
    dark = manifest[manifest["fst"].isin(DARK_EXTREME)]["label"].value_counts()
    labels = sorted(manifest["label"].unique())
    light_col, dark_col = f"fst_{group_label(LIGHT_EXTREME)}", f"fst_{group_label(DARK_EXTREME)}"
    table = pd.DataFrame(
        {
            "condition": labels,
            light_col: [int(light.get(c, 0)) for c in labels],
            dark_col: [int(dark.get(c, 0)) for c in labels],
        }
    )
    table["smaller_extreme"] = table[[light_col, dark_col]].min(axis=1)
    table = table.sort_values(
        ["smaller_extreme", dark_col, "condition"], ascending=[False, False, True], kind="stable"
    ).reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table if k is None else table.head(k)


def tone_table(
    manifest: pd.DataFrame,
    groups: Sequence[tuple[int, ...]],
    scale: str = "fst",
    conditions: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Counts of images by skin-tone group of ``scale`` (rows, then ``total``) x condition
    (plus ``total``); conditions as in :func:`fst_table`. Unknown tones are not counted."""
    from dermsynth.data.tones import scale_of

    tone_scale = scale_of(scale)
    if conditions is None:
        order = manifest["label"].value_counts(sort=True)
        conditions = sorted(order.index, key=lambda c: (-order[c], c))
    else:
        conditions = resolve_conditions(conditions, manifest["label"].unique())
    labels = [tone_scale.label(g) for g in groups]
    group_of = pd.Series("", index=manifest.index)
    for label, group in zip(labels, groups, strict=True):
        group_of = group_of.mask(manifest[tone_scale.column].isin(list(group)), label)
    rows = manifest[manifest["label"].isin(conditions) & (group_of != "")]
    counts = pd.crosstab(group_of[rows.index], rows["label"])
    table = counts.reindex(index=labels, columns=list(conditions), fill_value=0)
    table = table.fillna(0).astype(int)
    table["total"] = table.sum(axis=1)
    table.loc["total"] = table.sum(axis=0)
    table.index.name = tone_scale.column
    table.columns.name = None
    return table
