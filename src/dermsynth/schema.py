"""The study's vocabulary: the words every stage shares, and every table's columns with dtypes.

A manifest is one row per image (see ``DESIGN.md``: data contracts); stages add columns to it.
Manifests and results tables are CSV files, so a reader gets text back: :func:`coerce` gives
each known column its dtype again (booleans are booleans, ranks are integers), so no stage
parses ``"True"`` by hand. The arm names live with the arms, in :mod:`dermsynth.arms`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

# -- what an image is and where it goes ------------------------------------------------------

REAL, SEED, SYNTHETIC, AUGMENTED = "real", "seed", "synthetic", "augmented"
# augmented: made from real images by a classical method (crops and flips, a tone shift): a
# control, not a generated image.
ORIGINS: tuple[str, ...] = (REAL, SEED, SYNTHETIC, AUGMENTED)

TRAIN, TEST = "train", "test"
SPLITS: tuple[str, ...] = (TRAIN, SEED, TEST)
TRAIN_SPLITS: tuple[str, ...] = (TRAIN, SEED)

ALL_CONDITIONS = "(all)"  # a results row over every condition of a test group

# -- manifests ------------------------------------------------------------------------------

MANIFEST_COLUMNS: tuple[str, ...] = ("image_id", "path", "label", "fst", "origin", "parent_id")
# Columns that hold a file's path. A manifest stores a path under its folder's tree (a study's
# folder) relative to the manifest's own folder, so a moved folder still finds its images.
PATH_COLUMNS: tuple[str, ...] = ("path", "seed_crop", "seed_mask")

# -- skin tone ----------------------------------------------------------------------------------

# The skin-tone scales a dataset may be rated on, each the name of the manifest column holding
# it: Fitzpatrick skin type (1..6) and the Monk skin tone scale (1..10); -1 = unknown.
FST, MST = "fst", "mst"
TONE_SCALES: tuple[str, ...] = (FST, MST)
UNKNOWN_TONE = -1
ITA_RATER = "ita"  # the skin type estimated from the image's healthy skin (FST only)
CONSENSUS_RULES: tuple[str, ...] = ("mean", "median", "majority", "first")
# The label a dataset gave an image, kept beside the study condition a label map made of it.
DATASET_LABEL = "dataset_label"
LABEL_MAP_COLUMNS: tuple[str, ...] = (DATASET_LABEL, "condition")
RATER_AGREEMENT_COLUMNS: tuple[str, ...] = (
    "rater_a",
    "rater_b",
    "n",
    "agreement",
    "kappa",
    "kappa_quadratic",
)
MISSING_IMAGE_COLUMNS: tuple[str, ...] = ("image_id", "label", "path")
PLAN_COLUMNS: tuple[str, ...] = (
    "image_id",
    "label",
    "fst",
    "split",
    "test_group",
    "train_group",
    "path",
    "origin",
    "parent_id",
)
# Columns a study adds to a run's training rows: the sampler weight of a row (1 = as any other
# image of its class; the reweight arm raises it) and which set of augmented views a repeated
# image uses (0 = its own; copy k of an oversampled seed uses the k-th set, so copies differ).
WEIGHT, VIEW_SET = "weight", "view_set"

SELECTION_COLUMNS: tuple[str, ...] = (
    "ita",
    "fst_estimated",
    "skin_fallback",
    "score_tone",
    "score_pathology",
    "similarity",
    "flag_similarity",
    "score_similarity",
    "blur",
    "clipped",
    "colour_cast",
    "score_quality",
    "leak_distance",
    "leak_nearest",
    "excluded",
    "score",
    "rank",
    "selected",
    "reviewed",
    "final",
    "reason",
)
REVIEW_VALUES: tuple[str, ...] = ("accepted", "rejected", "")

# -- results of a study -------------------------------------------------------------------------

RUN_KEYS: tuple[str, ...] = ("run_id", "direction", "arm", "augmented", "dose", "repeat")
ACCURACY_COLUMNS: tuple[str, ...] = (
    "condition",
    "fst_group",
    "n",
    "correct",
    "accuracy",
    "ci_low",
    "ci_high",
    "wilson_low",
    "wilson_high",
)
SUMMARY_COLUMNS: tuple[str, ...] = (
    "fst_group",
    "n",
    "correct",
    "accuracy",
    "ci_low",
    "ci_high",
    "wilson_low",
    "wilson_high",
    "balanced_accuracy",
    "macro_f1",
    "n_conditions",
)
COMPARE_COLUMNS: tuple[str, ...] = (
    "condition",
    "fst_group",
    "n",
    "correct_a",
    "correct_b",
    "accuracy_a",
    "accuracy_b",
    "difference",
    "both_correct",
    "only_a_correct",
    "only_b_correct",
    "neither_correct",
    "mcnemar_p",
    "diff_ci_low",
    "diff_ci_high",
)
PAIRED_KEYS: tuple[str, ...] = ("direction", "augmented", "repeat", "arm_a", "arm_b", "dose_b")
FIGURE2_COLUMNS: tuple[str, ...] = (
    "direction",
    "condition",
    "seed_id",
    "seed_path",
    "synthetic_path",
    "rank",
)

# -- dtypes -----------------------------------------------------------------------------------

TEXT, INT, FLOAT, BOOL = "text", "int", "float", "bool"
NULLABLE_INT, NULLABLE_BOOL = "nullable int", "nullable bool"

DTYPES: dict[str, str] = {
    # manifests
    "image_id": TEXT,
    "path": TEXT,
    "label": TEXT,
    "fst": INT,
    MST: INT,
    DATASET_LABEL: TEXT,
    "origin": TEXT,
    "parent_id": TEXT,
    "split": TEXT,
    "test_group": TEXT,
    "train_group": TEXT,
    WEIGHT: FLOAT,
    VIEW_SET: INT,
    # selection
    "ita": FLOAT,
    "fst_estimated": NULLABLE_INT,
    "skin_fallback": NULLABLE_BOOL,
    "score_tone": FLOAT,
    "score_pathology": FLOAT,
    "similarity": FLOAT,
    "flag_similarity": TEXT,
    "score_similarity": FLOAT,
    "blur": FLOAT,
    "clipped": FLOAT,
    "colour_cast": FLOAT,
    "score_quality": FLOAT,
    "leak_distance": NULLABLE_INT,
    "leak_nearest": TEXT,
    "excluded": BOOL,
    "score": FLOAT,
    "rank": NULLABLE_INT,
    "selected": BOOL,
    "reviewed": TEXT,
    "final": BOOL,
    "reason": TEXT,
    # results
    "run_id": TEXT,
    "direction": TEXT,
    "arm": TEXT,
    "augmented": TEXT,
    "dose": INT,
    "repeat": INT,
    "condition": TEXT,
    "fst_group": TEXT,
    "status": TEXT,
    "arm_a": TEXT,
    "arm_b": TEXT,
    "dose_b": INT,
    "seed_id": TEXT,
    "seed_path": TEXT,
    "synthetic_path": TEXT,
    "family": TEXT,
    "interval": TEXT,
    "significant_holm": BOOL,
    "significant_bh": BOOL,
    "kind": TEXT,
    "arm_other": TEXT,
    "verdict": TEXT,
    "sentence": TEXT,
    "worst_group": TEXT,
    "best_group": TEXT,
}

_TRUE = frozenset({"true", "1", "1.0", "yes"})
_FALSE = frozenset({"false", "0", "0.0", "no", ""})


def as_bool(values: pd.Series, *, nullable: bool = False) -> pd.Series:
    """A boolean column from booleans or their CSV text (True/False, 1/0, yes/no, empty)."""
    if pd.api.types.is_bool_dtype(values):
        return values.astype("boolean") if nullable else values.fillna(False).astype(bool)
    text = values.astype("string").str.strip().str.lower().fillna("")
    bad = ~text.isin(_TRUE | _FALSE)
    if bad.any():
        raise ValueError(f"not a boolean: {values[bad].iloc[0]!r}")
    out = pd.Series(text.isin(_TRUE), index=values.index)
    if nullable:
        out = out.astype("boolean").mask(text == "")
    return out


def _as_number(values: pd.Series, dtype: str) -> pd.Series:
    if dtype == INT and pd.api.types.is_integer_dtype(values):
        return values
    text = values.astype("string").str.strip().replace({"": pd.NA})
    numbers = pd.to_numeric(text, errors="raise")
    if dtype == FLOAT:
        return numbers.astype(float)
    whole = numbers.dropna()
    if not np.all(np.mod(whole.to_numpy(dtype=float), 1) == 0):
        raise ValueError(f"not a whole number: {whole[np.mod(whole, 1) != 0].iloc[0]!r}")
    return numbers.astype("Int64" if dtype == NULLABLE_INT else int)


def coerce(frame: pd.DataFrame, dtypes: Mapping[str, str] = DTYPES) -> pd.DataFrame:
    """``frame`` with each known column in its dtype (text stays text; unknown columns untouched).

    Raises ``ValueError`` naming the column for a value that does not fit its dtype.
    """
    out = frame.copy()
    for column in out.columns:
        kind = dtypes.get(str(column))
        if kind is None:
            continue
        try:
            if kind == TEXT:
                out[column] = out[column].fillna("").astype(str)
            elif kind in (BOOL, NULLABLE_BOOL):
                out[column] = as_bool(out[column], nullable=kind == NULLABLE_BOOL)
            else:
                out[column] = _as_number(out[column], kind)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"column {column!r}: {exc}") from None
    return out
