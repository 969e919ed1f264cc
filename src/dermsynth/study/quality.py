"""The images each arm adds, measured: the synthetic-set metrics for every pool of a study.

For each direction, every pool an arm of the study trains on (the selected synthetic images,
the random pick, classical augmentations, tone-shifted images, extra real images) is measured at
the full dose, all augmented conditions together, with :func:`dermsynth.evaluate.synthetic.
evaluate_synthetic` against one reference per direction: real images of the seed group and the
augmented conditions that no arm trains on and no test contains. Those are the reserve's images
left over after the extra-real arm has taken its full dose; a study without a reserve falls back
to the seeds (noted, because every seed-conditioned pool then sits next to its own parents).

The extra-real pool, measured the same way, gives each metric's value for real images at the
same N: the yardstick for the others (a KID or FID at small N is never near 0, even real vs real).
Rows of ``results/synthetic_quality.csv``: ``direction``, ``arm``, ``pool``, ``reference``, then
the table columns of :mod:`dermsynth.evaluate.synthetic`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from math import nan
from pathlib import Path

import pandas as pd

from dermsynth.arms import ARMS, first_by_rank
from dermsynth.schema import SEED, SYNTHETIC, TEST

QUALITY_FILE = "synthetic_quality.csv"
QUALITY_NOTES_FILE = "synthetic_quality_notes.json"
REFERENCE_RESERVE = "reserve (held out)"
REFERENCE_SEEDS = "seeds"
KEY_COLUMNS: tuple[str, ...] = ("direction", "arm", "pool", "reference")
# Columns a measured set keeps: anything else (selected, final, reviews) would make the metrics
# re-apply a selection the pool has already applied.
SET_COLUMNS: tuple[str, ...] = (
    "image_id",
    "path",
    "label",
    "fst",
    "parent_id",
    "seed_crop",
    "seed_mask",
)


@dataclass(frozen=True)
class DirectionImages:
    """What one direction's pools are measured against."""

    direction: str
    seed_group: tuple[int, ...]
    plan: pd.DataFrame  # the direction's plan (its test rows enter only the copy distances)
    reserve: pd.DataFrame | None  # the dataset's reserve rows, if any
    augmented: tuple[str, ...]


def measured_pools(arms: list[str]) -> dict[str, str]:
    """Pool -> the arm that trains on it at the full dose (first arm of each pool)."""
    out: dict[str, str] = {}
    for name in arms:
        pool = ARMS[name].pool
        if pool is not None and ARMS[name].dosed:
            out.setdefault(pool, name)
    return out


def as_measured_set(rows: pd.DataFrame, seeds: pd.DataFrame) -> pd.DataFrame:
    """A pool's rows in the shape the synthetic-set metrics read (every row measured), with the
    seeds they were made from (rows of origin ``seed``: found as parents, never measured)."""
    shown = rows[[c for c in SET_COLUMNS if c in rows.columns]].assign(origin=SYNTHETIC)
    parents = seeds[["image_id", "path", "label", "fst"]].assign(origin=SEED, parent_id="")
    return pd.concat([shown, parents], ignore_index=True)


def reference_images(
    images: DirectionImages, extra_real: pd.DataFrame | None
) -> tuple[pd.DataFrame, str]:
    """Real images of the seed group's augmented cells that nothing trains on, and their name:
    the reserve minus what extra-real takes, else (no reserve) the seeds."""
    if images.reserve is not None:
        reserve = images.reserve
        taken = set() if extra_real is None else set(extra_real["image_id"])
        rows = reserve[
            reserve["label"].isin(images.augmented)
            & reserve["fst"].isin(images.seed_group)
            & ~reserve["image_id"].isin(taken)
            & ~reserve["image_id"].isin(set(images.plan["image_id"]))
        ]
        if not rows.empty:
            return rows.assign(split="reference"), REFERENCE_RESERVE
    plan = images.plan
    seeds = plan[(plan["split"] == SEED) & plan["label"].isin(images.augmented)]
    return seeds.assign(split="reference"), REFERENCE_SEEDS


def _test_rows(images: DirectionImages) -> pd.DataFrame:
    plan = images.plan
    return plan[(plan["split"] == TEST) & plan["label"].isin(images.augmented)]


def measure_direction(
    images: DirectionImages,
    pools: dict[str, pd.DataFrame],
    arms_of: dict[str, str],
    *,
    features: object,
    random_seed: int,
) -> tuple[pd.DataFrame, list[str]]:
    """The quality table of one direction's pools (``pools``: pool -> its full-dose rows)."""
    from dermsynth.evaluate.synthetic import evaluate_synthetic

    reference, reference_name = reference_images(images, pools.get("extra-real"))
    real = pd.concat([reference, _test_rows(images)], ignore_index=True)
    seeds = images.plan[images.plan["split"] == SEED]
    frames, notes = [], []
    for pool, rows in pools.items():
        if rows.empty:
            notes.append(f"{images.direction}, {pool}: no images to measure")
            continue
        result = evaluate_synthetic(
            as_measured_set(rows, seeds),
            real,
            features=features,  # type: ignore[arg-type]
            groups=[list(images.seed_group)],
            generator_data=seeds,
            random_seed=random_seed,
        )
        table = result.table.assign(
            direction=images.direction,
            arm=arms_of[pool],
            pool=pool,
            reference=f"{reference_name}, N={len(reference)}",
        )
        frames.append(table)
        notes.extend(f"{images.direction}, {pool}: {n}" for n in result.notes)
    if not frames:
        return pd.DataFrame(columns=list(KEY_COLUMNS)), notes
    table = pd.concat(frames, ignore_index=True)
    return table[[*KEY_COLUMNS, *(c for c in table.columns if c not in KEY_COLUMNS)]], notes


def full_dose_pools(
    pool_of: Callable[[str, str], pd.DataFrame], pools: list[str], augmented: list[str], dose: int
) -> dict[str, pd.DataFrame]:
    """Each pool's full-dose rows, all augmented conditions together (what the arm trains on)."""
    out = {}
    for pool in pools:
        parts = [first_by_rank(pool_of(condition, pool), dose) for condition in augmented]
        out[pool] = pd.concat(parts, ignore_index=True)
    return out


def pools_key(sets: dict[str, dict[str, pd.DataFrame]], features: str) -> str:
    """A digest of what is measured: every direction's pools' image ids, and the features."""
    content = {
        direction: {pool: sorted(map(str, rows["image_id"])) for pool, rows in pools.items()}
        for direction, pools in sets.items()
    }
    text = json.dumps({"sets": content, "features": features}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


SIGNAL_FILE = "selection_signal.csv"
SIGNAL_COLUMNS: tuple[str, ...] = (
    "direction",
    "condition",
    "classifier",
    "n_intended",
    "n_other",
    "p_intended_mean",
    "auroc",
    "note",
)


def pathology_signal(
    direction: str, candidates: pd.DataFrame, classifiers: dict[str, str]
) -> pd.DataFrame:
    """How well each condition's pathology scorer tells its own candidates from the other
    augmented conditions' candidates: one-vs-rest AUROC of the probability of the condition
    (``candidates``: every candidate of the direction, paths readable; ``classifiers``:
    condition -> the run folder that scored it in selection)."""
    from sklearn.metrics import roc_auc_score

    from dermsynth.select.pathology import probabilities

    rows = []
    for condition, run in classifiers.items():
        probs = probabilities(run, candidates[["image_id", "path", "label"]], device="cpu")
        scored = candidates.merge(probs, on="image_id")
        intended = (scored["label"] == condition).to_numpy()
        score = scored[f"p_{condition}"].to_numpy(dtype=float)
        n_other = int((~intended).sum())
        auroc, note = float("nan"), ""
        if n_other and intended.any():
            auroc = float(roc_auc_score(intended, score))
        else:
            note = "one augmented condition only: no other candidates to tell apart"
        rows.append(
            {
                "direction": direction,
                "condition": condition,
                "classifier": Path(run).name,
                "n_intended": int(intended.sum()),
                "n_other": n_other,
                "p_intended_mean": float(score[intended].mean()) if intended.any() else nan,
                "auroc": auroc,
                "note": note,
            }
        )
    return pd.DataFrame(rows, columns=list(SIGNAL_COLUMNS))
