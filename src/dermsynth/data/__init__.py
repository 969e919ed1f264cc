"""Manifests, skin types, sample-size tables, splits and seeds, images, dedup, simulated data."""

from dermsynth.data.fst import group_label, parse_fst_group
from dermsynth.data.manifest import (
    MANIFEST_COLUMNS,
    PAPER_AUGMENTED,
    PAPER_CONDITIONS,
    known_fst,
    load_manifest,
    parse_conditions,
    resolve_conditions,
    write_manifest,
)
from dermsynth.data.splits import Direction, plan_splits
from dermsynth.data.summary import fst_table, rank_extremes, unknown_fst_counts

__all__ = [
    "MANIFEST_COLUMNS",
    "PAPER_AUGMENTED",
    "PAPER_CONDITIONS",
    "Direction",
    "fst_table",
    "group_label",
    "known_fst",
    "load_manifest",
    "parse_conditions",
    "parse_fst_group",
    "plan_splits",
    "rank_extremes",
    "resolve_conditions",
    "unknown_fst_counts",
    "write_manifest",
]
