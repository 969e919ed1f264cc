"""The image pools arms draw from, made once per direction and augmented condition.

A pool is a table of images with a ``rank`` per seed (best or first = 1); an arm takes its dose
from it round-robin over seeds (:func:`dermsynth.arms.first_by_rank`). Pools:

``synthetic``         the selected candidates the study trains on (a reviewer may change them)
``synthetic-random``  ``synthetic_per_seed`` candidates per seed drawn at random from the
                      usable ones (leaks and unreadable images excluded as always)
``classical``         classical augmentations of the seeds (:mod:`dermsynth.generate.controls`)
``tone-shift``        training-group images of the condition shifted in CIE-Lab to the seeds'
                      skin tone, kept only where the tone scorer maps them to the seed group
``extra-real``        further real images of the seed group and condition from the dataset's
                      reserve table (never in any test set), in a seeded random order

Made pools are written under ``RUN/controls/<direction>/<condition>/<pool>/`` (PNGs and a
``manifest.csv``, finished when ``done.json`` exists), so a study resumes them like any step.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dermsynth.arms import (
    POOL_CLASSICAL,
    POOL_EXTRA_REAL,
    POOL_SYNTHETIC,
    POOL_SYNTHETIC_RANDOM,
    POOL_TONE_SHIFT,
)
from dermsynth.data.manifest import load_manifest, write_manifest
from dermsynth.errors import DermsynthError
from dermsynth.io import atomic_save, atomic_write_json
from dermsynth.schema import AUGMENTED, MANIFEST_COLUMNS, REAL, SEED, TRAIN
from dermsynth.select.selection import training_selection
from dermsynth.study import layout


@dataclass(frozen=True)
class PoolRequest:
    """What a pool is made for: one direction and augmented condition of a study."""

    out: Path  # the study folder
    direction: str
    condition: str
    plan: pd.DataFrame  # the direction's plan
    seed_group: tuple[int, ...]  # the skin types seeds come from: the target group
    per_seed: int  # synthetic images kept per seed (k)
    size: int  # images the largest dose needs
    random_seed: int
    reserve: pd.DataFrame | None = None  # the dataset's reserve rows (extra-real)

    @property
    def seeds(self) -> pd.DataFrame:
        """The condition's seed rows."""
        plan = self.plan
        return plan[(plan["split"] == SEED) & (plan["label"] == self.condition)]

    def folder(self, pool: str) -> Path:
        """Where a made pool is written."""
        return self.out / "controls" / self.direction / layout.slug(self.condition) / pool

    def rng(self, pool: str) -> np.random.Generator:
        """A generator of its own per pool, direction and condition."""
        key = f"{pool}:{self.direction}:{self.condition}".encode()
        return np.random.default_rng([self.random_seed, zlib.crc32(key)])


def _ranked_random(rows: pd.DataFrame, per_seed: int, rng: np.random.Generator) -> pd.DataFrame:
    """``per_seed`` rows per seed in a random order, ranked 1..per_seed."""
    parts = []
    for _, group in rows.groupby("parent_id", sort=True):
        order = rng.permutation(len(group))[:per_seed]
        parts.append(group.iloc[order].assign(rank=np.arange(1, len(order) + 1)))
    return pd.concat(parts, ignore_index=True) if parts else rows.assign(rank=[])


def synthetic_pool(request: PoolRequest) -> pd.DataFrame:
    """The selected candidates the study trains on, best-ranked first."""
    frame = load_manifest(layout.selection_path(request.out, request.direction, request.condition))
    return training_selection(frame, request.per_seed)


def synthetic_random_pool(request: PoolRequest) -> pd.DataFrame:
    """``per_seed`` usable candidates per seed at random: the selection ablation."""
    frame = load_manifest(layout.selection_path(request.out, request.direction, request.condition))
    usable = frame[~frame["excluded"].astype(bool)].drop(columns=["rank"])
    return _ranked_random(usable, request.per_seed, request.rng(POOL_SYNTHETIC_RANDOM))


def _png_row(folder: Path, image_id: str, image: np.ndarray, **values: object) -> dict[str, object]:
    from PIL import Image

    path = folder / "images" / f"{image_id}.png"
    atomic_save(path, lambda handle: Image.fromarray(image).save(handle, format="PNG"))
    return {"image_id": image_id, "path": str(path), "origin": AUGMENTED, **values}


def classical_pool(request: PoolRequest) -> pd.DataFrame:
    """Classical augmentations of every seed, enough for the largest dose (round-robin)."""
    from dermsynth.data.images import load_rgb
    from dermsynth.generate.controls import classical_variants

    seeds = request.seeds
    per_seed = -(-request.size // max(1, len(seeds)))
    folder = request.folder(POOL_CLASSICAL)
    rows = []
    for seed_index, seed in enumerate(seeds.itertuples(index=False)):
        image = load_rgb(str(seed.path))
        base = int(request.rng(POOL_CLASSICAL).integers(2**31)) + seed_index
        for rank, variant in enumerate(classical_variants(image, per_seed, base), start=1):
            rows.append(
                _png_row(
                    folder,
                    f"{seed.image_id}_classical{rank:02d}",
                    np.asarray(variant),
                    label=seed.label,
                    fst=seed.fst,
                    parent_id=seed.image_id,
                    rank=rank,
                    method="classical",
                )
            )
    return pd.DataFrame(rows)


def _seed_tones(seeds: pd.DataFrame) -> list[tuple[tuple[float, float, float], int, str]]:
    """Each seed's healthy-skin tone in CIE-Lab, its FST and id (the targets of tone-shift)."""
    from dermsynth.data.images import load_rgb
    from dermsynth.generate.controls import healthy_skin_lab

    return [
        (healthy_skin_lab(np.asarray(load_rgb(str(path)))), int(str(fst)), str(image_id))
        for path, fst, image_id in zip(seeds["path"], seeds["fst"], seeds["image_id"], strict=True)
    ]


def _tone_shift_pairs(
    n_sources: int, n_seeds: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """(source, seed) pairs in the order they are tried: every source once towards one seed's
    tone (seeds in turn), then every source again towards the next seed, and so on."""
    order = rng.permutation(n_sources)
    return [
        (int(order[i]), (i + round_) % n_seeds)
        for round_ in range(n_seeds)
        for i in range(n_sources)
    ]


def tone_shift_pool(request: PoolRequest) -> pd.DataFrame:
    """Training images of the condition moved to a seed's skin tone (seeds in turn, so a
    source may serve several seeds); only those the tone scorer maps into the seed group are
    kept (each with its ITA and estimated FST)."""
    from dermsynth.data.images import load_rgb
    from dermsynth.generate.controls import tone_shift
    from dermsynth.select.tone import tone_score

    targets = _seed_tones(request.seeds)
    group = set(request.seed_group)
    plan = request.plan
    sources = plan[(plan["split"] == TRAIN) & (plan["label"] == request.condition)]
    pairs = _tone_shift_pairs(len(sources), len(targets), request.rng(POOL_TONE_SHIFT))
    folder = request.folder(POOL_TONE_SHIFT)
    rows: list[dict[str, object]] = []
    for position, target in pairs:
        if len(rows) >= request.size:
            break
        source = sources.iloc[position]
        lab, fst, seed_id = targets[target]
        shifted = tone_shift(np.asarray(load_rgb(source["path"])), lab)
        tone = tone_score(shifted, fst)
        if tone.fst_estimated not in group:
            continue
        rows.append(
            _png_row(
                folder,
                f"{source['image_id']}_tone_{seed_id}",
                shifted,
                label=request.condition,
                fst=fst,
                parent_id=source["image_id"],
                rank=len(rows) + 1,
                method="tone-shift",
                target_seed=seed_id,
                ita=round(tone.ita, 2),
                fst_estimated=tone.fst_estimated,
            )
        )
    return pd.DataFrame(rows)


def extra_real_pool(request: PoolRequest) -> pd.DataFrame:
    """Reserve images of the condition in the seed group, never tested, in a seeded order."""
    if request.reserve is None:
        return pd.DataFrame(columns=[*MANIFEST_COLUMNS, "rank"])
    reserve = request.reserve
    used = set(request.plan["image_id"])
    rows = reserve[
        (reserve["label"] == request.condition)
        & reserve["fst"].isin(request.seed_group)
        & ~reserve["image_id"].isin(used)
    ].sort_values("image_id")
    order = request.rng(POOL_EXTRA_REAL).permutation(len(rows))
    ranked = rows.iloc[order].assign(origin=REAL, parent_id="", rank=np.arange(1, len(rows) + 1))
    return ranked.reset_index(drop=True)


MAKERS = {
    POOL_SYNTHETIC: synthetic_pool,
    POOL_SYNTHETIC_RANDOM: synthetic_random_pool,
    POOL_CLASSICAL: classical_pool,
    POOL_TONE_SHIFT: tone_shift_pool,
    POOL_EXTRA_REAL: extra_real_pool,
}
# Pools written as images: made once, then read back (the others are read fresh each time).
MADE_POOLS = frozenset({POOL_CLASSICAL, POOL_TONE_SHIFT})


def pool(request: PoolRequest, kind: str) -> pd.DataFrame:
    """The pool ``kind`` of a direction and condition: made (and written) once if it is made of
    new images, else read from the study's files."""
    if kind not in MAKERS:
        raise DermsynthError(f"no maker for the {kind!r} pool; pools: {', '.join(MAKERS)}")
    if kind not in MADE_POOLS:
        return MAKERS[kind](request)
    folder = request.folder(kind)
    manifest = folder / "manifest.csv"
    if not (folder / layout.DONE_FILE).exists():
        rows = MAKERS[kind](request)
        if not rows.empty:
            write_manifest(rows, manifest, root=request.out)
        atomic_write_json(folder / layout.DONE_FILE, {"images": len(rows), "asked": request.size})
    if not manifest.exists():  # none could be made (e.g. no shifted image reached the group)
        return pd.DataFrame(columns=[*MANIFEST_COLUMNS, "rank"])
    return load_manifest(manifest)
