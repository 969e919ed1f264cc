"""Quality of a synthetic image set, per condition x FST group, against real images of the cell.

A synthetic image belongs to the cell of its condition (``label``) and of the group holding its
requested skin type (``fst``). It is compared with the real images of the same cell that are in
no test set (a plan's ``split == 'test'`` rows are the test set). Every number comes with its N;
a number that needs more images than a cell has is NaN, with the reason in ``notes``, never 0.

Per cell (columns of :attr:`SyntheticQuality.table`):

* ``kid``, ``kid_std``, ``fid``: torchmetrics' KernelInceptionDistance and
  FrechetInceptionDistance on features of a pluggable extractor (:mod:`.features`), computed
  once per image and passed to torchmetrics through an identity module. KID's subsets have
  ``min(1000, n_real, n_synthetic)`` images (``kid_subset_size``), drawn from a fixed seed.
  FID is biased upwards at small N: compare FIDs only at equal N.
* ``precision``, ``recall``, ``density``, ``coverage``: Naeem et al. (2020), the ``prdc``
  package, on the same features, ``k = min(5, n - 2)`` (``prdc_k``) with n the smaller side:
  prdc counts each image as its own first neighbour, so it needs ``k + 2`` images per side.
* ``cas`` (Classification Accuracy Score): per FST group, a classifier trained on the
  synthetic images only (all the set's conditions in that group), tested on real images of
  those conditions; per condition the recall with its 95% Wilson interval. ``cas_real`` is the
  same classifier trained on as many real images per condition (as far as the cell has them):
  each real cell is split once, at random from the seed, into a reference-training half and a
  test half, and both classifiers are scored on the test half. ``cas_ratio = cas / cas_real``.
  The classifier is scikit-learn's LogisticRegression on standardized features: cheap,
  deterministic and free of tuning, so the score measures the images, not a training recipe.
* ``copy_rate``: share of synthetic images whose nearest-neighbour feature distance to their
  own seed, to the real images, to the generator's training images (where given) or to the test
  images is within ``copy_threshold`` (by default the 5th percentile of the real images'
  distances to their nearest other real image). Per-image distances are in
  :attr:`SyntheticQuality.distances`, their quantiles in :attr:`SyntheticQuality.quantiles`.
* ``diversity_ratio``: mean pairwise feature distance among the siblings of one seed (averaged
  over seeds with two or more), divided by the mean pairwise distance among the cell's real
  images.
* ``ita_wasserstein``, ``tone_match``: the ITA of each image's healthy skin
  (:func:`dermsynth.select.tone.tone_score`); the Wasserstein distance between the synthetic and
  real ITA distributions, and the share of synthetic images whose estimated FST lies in the
  requested group.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
import zlib
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from dermsynth.data.fst import UNKNOWN_FST, FSTGroup, group_label
from dermsynth.data.images import BadImageError, load_rgb, resize_shorter_side
from dermsynth.errors import DermsynthError
from dermsynth.evaluate.features import DEFAULT_FEATURES, FeatureExtractor, make_feature_extractor
from dermsynth.evaluate.metrics import DEFAULT_GROUPS, parse_groups, wilson_interval
from dermsynth.schema import as_bool

COPY_QUANTILE = 0.05
KID_SUBSETS = 100
KID_MAX_SUBSET_SIZE = 1000
PRDC_MAX_K = 5
TONE_SIDE = 256  # ITA is a median over pixels: a small copy gives the same angle, much faster
BATCH_SIZE = 32
SMALL_PRODUCT = 1_000_000  # KID subset size x feature width below which one thread is faster
DISTANCE_KINDS: tuple[str, ...] = ("d_seed", "d_real", "d_generator", "d_test")
DISTANCE_QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)
ALL = "(all)"
TABLE_FILE = "synthetic_quality.csv"
DISTANCES_FILE = "synthetic_distances.csv"
SUMMARY_FILE = "synthetic_quality.json"
MANIFEST_NEEDS: tuple[str, ...] = ("image_id", "path", "label", "fst", "origin", "parent_id")

TABLE_COLUMNS: tuple[str, ...] = (
    "condition",
    "fst_group",
    "n_synthetic",
    "n_real",
    "kid",
    "kid_std",
    "kid_subset_size",
    "fid",
    "precision",
    "recall",
    "density",
    "coverage",
    "prdc_k",
    "cas",
    "cas_low",
    "cas_high",
    "cas_n",
    "cas_real",
    "cas_real_low",
    "cas_real_high",
    "cas_ratio",
    "copy_rate",
    "n_copies",
    "copy_threshold",
    "nn_seed_median",
    "nn_real_median",
    "nn_test_median",
    "diversity",
    "diversity_real",
    "diversity_ratio",
    "ita_synthetic_median",
    "ita_real_median",
    "ita_wasserstein",
    "tone_match",
    "notes",
)
DISTANCE_COLUMNS: tuple[str, ...] = (
    "image_id",
    "condition",
    "fst_group",
    "parent_id",
    "path",
    "d_seed",
    "d_real",
    "nearest_real_id",
    "d_generator",
    "nearest_generator_id",
    "d_test",
    "nearest_test_id",
    "d_min",
    "nearest_set",
    "copied",
    "ita",
    "fst_estimated",
    "tone_match",
)
CAS_COLUMNS: tuple[str, ...] = (
    "condition",
    "cas",
    "cas_low",
    "cas_high",
    "cas_n",
    "cas_real",
    "cas_real_low",
    "cas_real_high",
    "n_reference",
    "note",
)
FID_NOTE = (
    "FID is biased upwards at small N (it falls as N grows, for the same generator): compare "
    "FIDs only at equal N; KID is unbiased and comes with its standard deviation over subsets"
)
_SHOWN = 3


@dataclass
class SyntheticQuality:
    """What ``dermsynth evaluate synthetic`` reports for one synthetic set."""

    table: pd.DataFrame  # one row per condition x FST group: TABLE_COLUMNS
    distances: pd.DataFrame  # one row per synthetic image: DISTANCE_COLUMNS
    quantiles: pd.DataFrame  # distance quantiles per cell and kind, and over the whole set
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary: what was measured, how, the cells and the distance quantiles."""
        return {
            **_jsonable(self.info),
            "notes": list(self.notes),
            "cells": _records(self.table),
            "distance_quantiles": _records(self.quantiles),
        }


# --------------------------------------------------------------------------- inputs


def measured_synthetic(candidates: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The synthetic rows to measure, and what they are: the final selection where there is one.

    A ``final`` column wins; else ``selected`` (with reviews applied, as the selection stage
    does); else every synthetic candidate.
    """
    synthetic = candidates[candidates["origin"] == "synthetic"]
    if synthetic.empty:
        raise DermsynthError(
            "the candidate manifest has no rows with origin=synthetic; give the manifest that "
            "`dermsynth generate` or `dermsynth select` wrote"
        )
    total = len(synthetic)
    if "final" in synthetic.columns:
        keep, what = as_bool(synthetic["final"]), "the final selection (column final)"
    elif "selected" in synthetic.columns:
        from dermsynth.select.selection import final_selection

        reviewed = ", reviews applied" if "reviewed" in synthetic.columns else ""
        keep, what = final_selection(synthetic), f"the selection (column selected{reviewed})"
    else:
        return synthetic, f"all {total} synthetic candidate(s) (no selected or final column)"
    chosen = synthetic[keep.to_numpy()]
    if chosen.empty:
        raise DermsynthError(f"no synthetic image is in {what}: nothing to measure")
    return chosen, f"{what}: {len(chosen)} of {total} synthetic image(s)"


def _require(frame: pd.DataFrame, what: str, needed: Sequence[str] = MANIFEST_NEEDS) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DermsynthError(
            f"the {what} lacks column(s) {', '.join(missing)}; load it with "
            "dermsynth.data.manifest.load_manifest"
        )


def _base_dir(frame: pd.DataFrame) -> Path | None:
    csv = frame.attrs.get("csv")
    return Path(csv).resolve().parent if csv else None


def _resolved(frame: pd.DataFrame, base: Path | None, columns: Sequence[str]) -> pd.DataFrame:
    """Relative image paths as given, else beside the manifest they came from."""
    from dermsynth.train.datasets import resolve_paths

    out = frame.copy()
    for column in columns:
        if column in out.columns:
            text = out[column].fillna("").astype(str).str.strip()
            out[column] = resolve_paths(text, base).astype(object)
        else:
            out[column] = ""
    return out


def _group_labels(fst: pd.Series, groups: Sequence[FSTGroup]) -> pd.Series:
    lookup = {t: group_label(g) for g in groups for t in g}
    return pd.Series([lookup.get(int(v)) for v in fst], index=fst.index, dtype=object)


@dataclass
class _Sets:
    """The images of one evaluation, paths resolved, each row with its FST group."""

    synthetic: pd.DataFrame  # measured rows: + fst_group, seed_path, mask_path
    real: pd.DataFrame  # real images in no test set: + fst_group (None outside the groups)
    test: pd.DataFrame
    generator: pd.DataFrame
    groups: list[FSTGroup]
    measured: str
    notes: list[str] = field(default_factory=list)

    def paths(self) -> list[str]:
        """Every image to read, each once."""
        frames = (self.synthetic, self.real, self.test, self.generator)
        seeds = list(self.synthetic["seed_path"])
        return list(dict.fromkeys([*(p for f in frames for p in f["path"]), *seeds]))

    def tone_masks(self) -> dict[str, set[str]]:
        """Images whose skin tone is measured -> their lesion masks ('' = the central disc)."""
        masks: dict[str, set[str]] = {p: {""} for p in self.real["path"]}
        for path, mask in zip(self.synthetic["path"], self.synthetic["mask_path"], strict=True):
            masks.setdefault(path, set()).add(mask)
        return masks


def _seed_paths(synthetic: pd.DataFrame, candidates: pd.DataFrame, real: pd.DataFrame) -> list[str]:
    """Each synthetic image's seed: its seed_crop file, else its parent's row in R or in M."""
    lookup: dict[str, str] = {}
    for table in (real, candidates[candidates["origin"] != "synthetic"]):
        for image_id, path in zip(table["image_id"], table["path"], strict=True):
            if path:
                lookup.setdefault(str(image_id), str(path))
    out = []
    for parent, crop in zip(synthetic["parent_id"], synthetic["seed_crop"], strict=True):
        out.append(crop if crop and Path(crop).is_file() else lookup.get(str(parent), ""))
    return out


def _real_sets(real: pd.DataFrame, test: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = real[real["origin"] != "synthetic"]
    if "split" in rows.columns:
        is_test = rows["split"].fillna("").astype(str).str.strip() == "test"
    else:
        is_test = pd.Series(False, index=rows.index)
    pool = rows[~is_test.to_numpy()].copy()
    if pool.empty:
        raise DermsynthError(
            "the real manifest has no real images outside its test split; give real images of "
            "the conditions and skin types the synthetic set shows"
        )
    tests = [rows[is_test.to_numpy()]] + ([test] if test is not None else [])
    test_rows = pd.concat(tests, ignore_index=True).drop_duplicates("path")
    return pool, test_rows


def _prepare(
    candidates: pd.DataFrame,
    real: pd.DataFrame,
    test: pd.DataFrame | None,
    generator_data: pd.DataFrame | None,
    groups: list[FSTGroup],
) -> _Sets:
    _require(candidates, "candidate manifest")
    _require(real, "real manifest")
    for frame, what in ((test, "test table"), (generator_data, "generator-data table")):
        if frame is not None:
            _require(frame, what, ("image_id", "path"))
    cands = _resolved(candidates, _base_dir(candidates), ("path", "seed_crop", "seed_mask"))
    chosen, measured = measured_synthetic(cands)
    reals = _resolved(real, _base_dir(real), ("path",))
    test_frame = _resolved(test, _base_dir(test), ("path",)) if test is not None else None
    pool, tests = _real_sets(reals, test_frame)
    generator = (
        _resolved(generator_data, _base_dir(generator_data), ("path",))
        if generator_data is not None
        else pd.DataFrame({"image_id": [], "path": []}, dtype=object)
    )
    notes = [f"measured: {measured}"]
    synthetic = _in_groups(
        chosen.assign(fst_group=_group_labels(chosen["fst"], groups)), groups, notes
    )
    synthetic["seed_path"] = _seed_paths(synthetic, cands, reals)
    synthetic["mask_path"] = synthetic["seed_mask"]
    pool["fst_group"] = _group_labels(pool["fst"], groups)
    return _Sets(synthetic, pool, tests, generator, groups, measured, notes)


def _in_groups(synthetic: pd.DataFrame, groups: list[FSTGroup], notes: list[str]) -> pd.DataFrame:
    outside = synthetic["fst_group"].isna()
    if outside.all():
        asked = sorted({int(v) for v in synthetic["fst"]})
        raise DermsynthError(
            f"no synthetic image asks for a skin type in the groups "
            f"{', '.join(group_label(g) for g in groups)} (the set's requested types: "
            f"{', '.join(map(str, asked))}); choose --groups that hold them"
        )
    if outside.any():
        notes.append(
            f"{int(outside.sum())} synthetic image(s) ask for a skin type outside the groups "
            "(or unknown): left out"
        )
    return synthetic[~outside.to_numpy()].copy()


# --------------------------------------------------------------------------- images


def _read_mask(path: str) -> np.ndarray | None:
    if not path or not Path(path).is_file():
        return None
    try:
        with Image.open(path) as handle:
            return np.asarray(handle.convert("L"))
    except OSError:
        return None  # an unreadable mask: the central disc stands in, as in selection


def _file_key(path: str) -> tuple[str, int, int]:
    """A path with its size and mtime: a rewritten file is measured anew."""
    try:
        stat = os.stat(path)
    except OSError:
        return (path, -1, -1)
    return (path, stat.st_size, stat.st_mtime_ns)


class ImageMeasurements:
    """Features, sizes and skin tones of images under one extractor; each file is read once.

    :func:`evaluate_synthetic` builds one per call; a caller measuring several synthetic sets
    against the same real images (a study) can build one with :func:`image_measurements` and
    pass it as ``features``, so the real images are read and featurized once.
    """

    def __init__(self, extractor: FeatureExtractor, batch_size: int = BATCH_SIZE) -> None:
        self.extractor = extractor
        self.batch_size = max(1, int(batch_size))
        self.dim = 0
        self._features: dict[tuple[str, int, int], np.ndarray] = {}
        self._sizes: dict[tuple[str, int, int], tuple[int, int]] = {}
        self._failed: dict[tuple[str, int, int], str] = {}
        self._tones: dict[tuple[tuple[str, int, int], str], tuple[float, int]] = {}

    @property
    def name(self) -> str:
        """The extractor's name."""
        return self.extractor.name

    def measure(self, paths: Iterable[str], tone_masks: Mapping[str, Collection[str]]) -> None:
        """Featurize every new path and take the skin tone of those in ``tone_masks`` (path ->
        lesion masks, '' for the central disc); unreadable files are recorded, never used."""
        batch: list[tuple[tuple[str, int, int], Image.Image]] = []
        for path in dict.fromkeys(paths):
            key = _file_key(path)
            masks = [m for m in tone_masks.get(path, ()) if (key, m) not in self._tones]
            if key in self._failed or (key in self._features and not masks):
                continue
            image = self._read(key)
            if image is None:
                continue
            for mask in masks:
                self._tones[(key, mask)] = _tone(image, mask)
            if key not in self._features:
                batch.append((key, image))
            if len(batch) >= self.batch_size:
                self._flush(batch)
        self._flush(batch)

    def _read(self, key: tuple[str, int, int]) -> Image.Image | None:
        if not key[0]:
            self._failed[key] = "no image path"
            return None
        try:
            image = load_rgb(key[0])
        except BadImageError as exc:
            self._failed[key] = exc.reason
            return None
        self._sizes[key] = image.size
        return image

    def _flush(self, batch: list[tuple[tuple[str, int, int], Image.Image]]) -> None:
        if not batch:
            return
        feats = np.asarray(self.extractor([image for _, image in batch]), dtype=np.float64)
        self.dim = feats.shape[1]
        for (key, _), vector in zip(batch, feats, strict=True):
            self._features[key] = vector
        batch.clear()

    def ok(self, path: str) -> bool:
        """True when the image was read and featurized."""
        return _file_key(path) in self._features

    def matrix(self, paths: Iterable[str]) -> np.ndarray:
        """Features of ``paths`` (all readable), one row each."""
        rows = [self._features[_file_key(p)] for p in paths]
        return np.stack(rows) if rows else np.zeros((0, self.dim))

    def size(self, path: str) -> tuple[int, int]:
        """(width, height) of a readable image as stored."""
        return self._sizes[_file_key(path)]

    def tone(self, path: str, mask: str = "") -> tuple[float, int]:
        """(ITA, estimated FST) of the image's healthy skin; (NaN, -1) where not measured."""
        return self._tones.get((_file_key(path), mask), (math.nan, UNKNOWN_FST))

    def failures(self, paths: Iterable[str]) -> dict[str, str]:
        """Path -> why it could not be used, for the unreadable ones among ``paths``."""
        out = {}
        for path in dict.fromkeys(paths):
            reason = self._failed.get(_file_key(path))
            if reason is not None:
                out[path] = reason
        return out


def image_measurements(
    features: str = DEFAULT_FEATURES, *, device: str = "cpu", batch_size: int = BATCH_SIZE
) -> ImageMeasurements:
    """An empty :class:`ImageMeasurements` for the extractor ``features`` names."""
    return ImageMeasurements(make_feature_extractor(features, device=device), batch_size)


def _tone(image: Image.Image, mask_path: str) -> tuple[float, int]:
    from dermsynth.select.tone import tone_score

    small = np.asarray(resize_shorter_side(image, TONE_SIDE))
    result = tone_score(small, UNKNOWN_FST, lesion_mask=_read_mask(mask_path))
    return result.ita, result.fst_estimated


def _drop_unreadable(sets: _Sets, bank: ImageMeasurements) -> int:
    """Rows whose image could not be read leave every set; the notes count them."""
    failed = bank.failures(sets.paths())
    lost: list[str] = []
    for name in ("synthetic", "real", "test", "generator"):
        frame = getattr(sets, name)
        ok = frame["path"].map(bank.ok).astype(bool)
        if not ok.all():
            lost.append(f"{int((~ok).sum())} {name}")
        setattr(sets, name, frame[ok.to_numpy()].copy())
    seeds = sets.synthetic["seed_path"]
    missing_seed = int((~seeds.map(bank.ok).astype(bool)).sum())
    if lost:
        examples = [f"{p or '(empty)'}: {r}" for p, r in list(failed.items())[:_SHOWN]]
        sets.notes.append(
            f"unreadable images skipped: {', '.join(lost)} (e.g. {'; '.join(examples)})"
        )
    if missing_seed:
        sets.notes.append(
            f"{missing_seed} synthetic image(s) without a readable seed image: d_seed empty"
        )
    if sets.synthetic.empty:
        raise DermsynthError("none of the synthetic images could be read; check their paths")
    return len(failed)


def _size_note(sets: _Sets, bank: ImageMeasurements) -> str | None:
    paths = [*sets.synthetic["path"], *sets.real["path"]]
    sizes = [size for size, _ in Counter(bank.size(p) for p in paths).most_common()]
    if len(sizes) < 2:
        return None
    shown = ", ".join(f"{w}x{h}" for w, h in sizes[:_SHOWN])
    more = f" and {len(sizes) - _SHOWN} more" if len(sizes) > _SHOWN else ""
    target = bank.extractor.input_size
    to = f"{target} px square" if target else "its input size"
    return (
        f"the images come in {len(sizes)} sizes ({shown}{more}): each was resized to the "
        f"extractor's input ({to}) before its features were taken"
    )


# --------------------------------------------------------------------------- metrics


class _Precomputed(nn.Module):
    """Stands in for torchmetrics' feature network: the 'images' it is given are features."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features  # read by torchmetrics instead of a dummy forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _in_own_span(real: np.ndarray, synthetic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets in an orthonormal basis of the space their images span.

    FID depends only on distances, means and covariances, which a rotation keeps, and every
    mean and covariance lies in that span: the FID is the same, but with fewer images than
    feature dimensions its eigenvalue problem shrinks from the feature width to the image count.
    """
    both = np.vstack([real, synthetic])
    if len(both) >= both.shape[1]:
        return real, synthetic
    _, _, basis = np.linalg.svd(both, full_matrices=False)
    return real @ basis.T, synthetic @ basis.T


def kid_fid(
    real: np.ndarray, synthetic: np.ndarray, *, random_seed: int = 0
) -> tuple[dict[str, float], list[str]]:
    """KID (mean, std over subsets) and FID of two feature sets, through torchmetrics."""
    out = {"kid": math.nan, "kid_std": math.nan, "kid_subset_size": math.nan, "fid": math.nan}
    n = min(len(real), len(synthetic))
    if n < 2:
        return out, ["KID and FID not computable (need 2 or more images on each side)"]
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(KID_MAX_SUBSET_SIZE, n)
    # Where a subset holds every image of both sides, all subsets are the same: draw one.
    subsets = 1 if size == len(real) == len(synthetic) else KID_SUBSETS
    r, s = torch.from_numpy(real).double(), torch.from_numpy(synthetic).double()
    # Small matrices: handing them to a thread pool costs more than the arithmetic (on a busy
    # CPU, 50 times more), so they are multiplied on one thread.
    threads = 1 if size * real.shape[1] < SMALL_PRODUCT else torch.get_num_threads()
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]), _torch_threads(threads):
        warnings.simplefilter("ignore")  # torchmetrics warns that KID keeps all features
        torch.manual_seed(random_seed)
        kid = KernelInceptionDistance(
            feature=_Precomputed(real.shape[1]), subsets=subsets, subset_size=size
        )
        kid.update(r, real=True)
        kid.update(s, real=False)
        mean, std = kid.compute()
        r_span, s_span = (torch.from_numpy(a) for a in _in_own_span(real, synthetic))
        fid = FrechetInceptionDistance(feature=_Precomputed(r_span.shape[1]))
        fid.update(r_span.double(), real=True)
        fid.update(s_span.double(), real=False)
        value = float(fid.compute())
    out.update(kid=float(mean), kid_std=float(std), kid_subset_size=size, fid=value)
    return out, []


def prdc_metrics(real: np.ndarray, synthetic: np.ndarray) -> tuple[dict[str, float], list[str]]:
    """Precision, recall, density and coverage (prdc package), k = min(5, n - 2)."""
    out = dict.fromkeys(("precision", "recall", "density", "coverage", "prdc_k"), math.nan)
    n = min(len(real), len(synthetic))
    k = min(PRDC_MAX_K, n - 2)
    if k < 1:
        return out, [
            "precision/recall/density/coverage not computable (need 3 or more images on each side)"
        ]
    import prdc

    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints its sample sizes
        values = prdc.compute_prdc(real, synthetic, k)
    out.update({key: float(v) for key, v in values.items()}, prdc_k=k)
    return out, []


def _mean_pairwise(features: np.ndarray) -> float:
    from scipy.spatial.distance import pdist

    return float(pdist(features).mean()) if len(features) >= 2 else math.nan


def diversity(
    synthetic: np.ndarray, parents: Sequence[str], real: np.ndarray
) -> tuple[dict[str, float], list[str]]:
    """Mean pairwise distance among siblings of one seed (averaged over seeds), over the real."""
    seed_of = np.asarray([str(p) for p in parents])
    per_seed = [
        _mean_pairwise(synthetic[seed_of == p])
        for p in dict.fromkeys(seed_of)
        if int(np.sum(seed_of == p)) >= 2
    ]
    sibling = float(np.mean(per_seed)) if per_seed else math.nan
    real_spread = _mean_pairwise(real)
    ratio = sibling / real_spread if real_spread > 0 else math.nan
    notes = []
    if not per_seed:
        notes.append("diversity not computable (no seed has 2 or more synthetic images here)")
    elif not real_spread > 0:
        notes.append("diversity_ratio not computable (need 2 or more distinct real images)")
    return {"diversity": sibling, "diversity_real": real_spread, "diversity_ratio": ratio}, notes


def _nearest(
    query: np.ndarray, reference: np.ndarray, ids: Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    if len(reference) == 0 or len(query) == 0:
        return np.full(len(query), math.nan), [""] * len(query)
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(reference)
    dist, idx = index.kneighbors(query)
    names = [str(i) for i in ids]
    return dist[:, 0], [names[i] for i in idx[:, 0]]


def real_copy_threshold(real: np.ndarray, quantile: float = COPY_QUANTILE) -> float:
    """The ``quantile`` of the real images' distances to their nearest other real image."""
    if len(real) < 2:
        return math.nan
    from sklearn.neighbors import NearestNeighbors

    dist, _ = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(real).kneighbors()
    return float(np.quantile(dist[:, 0], quantile))


def _copy_threshold(real: np.ndarray, given: float | None, quantile: float) -> tuple[float, str]:
    if given is not None:
        return float(given), f"copy threshold {given:g} (given with --copy-threshold)"
    value = real_copy_threshold(real, quantile)
    if math.isnan(value):
        return value, "copy threshold not computable (fewer than 2 real images): no copy rate"
    return value, (
        f"copy threshold {value:.4g}: the {quantile:.0%} quantile of the {len(real)} real images' "
        "distances to their nearest other real image (real images outside the test set)"
    )


def _tolerance(real: np.ndarray) -> float:
    # A pixel-identical image can land a rounding error away from its original (another batch):
    # distances this close to the threshold count as within it.
    scale = float(np.linalg.norm(real, axis=1).mean()) if len(real) else 1.0
    return 1e-6 * max(scale, 1.0)


def _memorization(bank: ImageMeasurements, sets: _Sets, threshold: float) -> pd.DataFrame:
    synth = sets.synthetic.reset_index(drop=True)
    feats = bank.matrix(synth["path"])
    frame = pd.DataFrame(
        {
            "image_id": synth["image_id"].astype(str),
            "condition": synth["label"].astype(str),
            "fst_group": synth["fst_group"].astype(str),
            "parent_id": synth["parent_id"].astype(str),
            "path": synth["path"].astype(str),
        }
    )
    frame["d_seed"] = [
        float(np.linalg.norm(f - bank.matrix([s])[0])) if bank.ok(s) else math.nan
        for f, s in zip(feats, synth["seed_path"], strict=True)
    ]
    for key in ("real", "generator", "test"):
        table = getattr(sets, key)
        dist, ids = _nearest(feats, bank.matrix(table["path"]), table["image_id"])
        frame[f"d_{key}"], frame[f"nearest_{key}_id"] = dist, ids
    kinds = frame[list(DISTANCE_KINDS)]
    frame["d_min"] = kinds.min(axis=1, skipna=True)
    nearest = kinds.fillna(np.inf).idxmin(axis=1).astype(str).str.removeprefix("d_")
    frame["nearest_set"] = nearest.where(frame["d_min"].notna(), "")
    limit = threshold + _tolerance(bank.matrix(sets.real["path"]))
    copied = [
        pd.NA if math.isnan(threshold) or math.isnan(d) else bool(d <= limit)
        for d in frame["d_min"]
    ]
    frame["copied"] = pd.array(copied, dtype="boolean")
    tones = [bank.tone(p, m) for p, m in zip(synth["path"], synth["mask_path"], strict=True)]
    frame["ita"] = [t[0] for t in tones]
    frame["fst_estimated"] = [int(t[1]) for t in tones]
    wanted = {group_label(g): set(g) for g in sets.groups}
    frame["tone_match"] = [
        est in wanted[g] for est, g in zip(frame["fst_estimated"], frame["fst_group"], strict=True)
    ]
    return frame[list(DISTANCE_COLUMNS)]


def distance_quantiles(distances: pd.DataFrame) -> pd.DataFrame:
    """Quantiles of each nearest-neighbour distance, per cell and over the whole set."""
    records = []
    cells = [(ALL, ALL, distances)] + [
        (c, g, part) for (c, g), part in distances.groupby(["condition", "fst_group"], sort=True)
    ]
    for condition, group, part in cells:
        for kind in DISTANCE_KINDS:
            values = part[kind].dropna().to_numpy(dtype=float)
            if not len(values):
                continue
            qs = np.quantile(values, DISTANCE_QUANTILES)
            record = {
                "condition": condition,
                "fst_group": group,
                "distance": kind,
                "n": len(values),
            }
            record.update(
                {
                    f"q{round(q * 100):02d}": float(v)
                    for q, v in zip(DISTANCE_QUANTILES, qs, strict=True)
                }
            )
            records.append(record)
    columns = ["condition", "fst_group", "distance", "n"] + [
        f"q{round(q * 100):02d}" for q in DISTANCE_QUANTILES
    ]
    return pd.DataFrame.from_records(records, columns=columns)


# --------------------------------------------------------------------------- CAS


def _fit_predict(
    train: np.ndarray, labels: np.ndarray, test: np.ndarray, random_seed: int
) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=2000, random_state=random_seed)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings on tiny sets change nothing here
        model.fit(train, labels.astype(str))
        return np.asarray(model.predict(test), dtype=object)


def _halves(n: int, random_seed: int, key: str) -> tuple[np.ndarray, np.ndarray]:
    """A cell's real images split once, from the seed and the cell's name: (reference, test)."""
    rng = np.random.default_rng([random_seed, zlib.crc32(key.encode())])
    order = rng.permutation(n)
    return order[: n // 2], order[n // 2 :]


def _recalls(
    truth: np.ndarray, pred_s: np.ndarray, pred_r: np.ndarray, condition: str
) -> dict[str, float]:
    of = truth == condition
    n = int(of.sum())
    hit_s, hit_r = int((pred_s[of] == condition).sum()), int((pred_r[of] == condition).sum())
    low, high = wilson_interval(hit_s, n)
    real_low, real_high = wilson_interval(hit_r, n)
    return {
        "cas": hit_s / n,
        "cas_low": low,
        "cas_high": high,
        "cas_n": n,
        "cas_real": hit_r / n,
        "cas_real_low": real_low,
        "cas_real_high": real_high,
    }


def classification_accuracy_score(
    synthetic: np.ndarray,
    synthetic_labels: Sequence[str],
    real: np.ndarray,
    real_labels: Sequence[str],
    *,
    random_seed: int = 0,
    key: str = "",
) -> pd.DataFrame:
    """CAS of one FST group, one row per condition of the synthetic set (``CAS_COLUMNS``).

    ``cas``: recall, on a held-out half of the real images, of a classifier trained on the
    synthetic images; ``cas_real``: the same with a classifier trained on as many real images
    of each condition (``n_reference``) from the other half. ``key`` names the group, so each
    cell's split depends on the seed and the cell only. ``note`` says why a row is empty.
    """
    s_labels = np.asarray(synthetic_labels, dtype=object)
    r_labels = np.asarray(real_labels, dtype=object)
    conditions = sorted(set(s_labels))
    frame = pd.DataFrame({"condition": conditions}).reindex(columns=list(CAS_COLUMNS))
    frame["note"] = ""
    halves = {
        c: _halves(int((r_labels == c).sum()), random_seed, f"{key}|{c}")
        for c in conditions
        if (r_labels == c).sum() >= 2
    }
    eligible = [c for c in conditions if c in halves]
    if len(eligible) < 2:
        frame["note"] = (
            "CAS not computable (needs synthetic images, and 2 or more real images, of 2 or "
            "more conditions in the group)"
        )
        return frame
    ref_idx: list[int] = []
    test_idx: list[int] = []
    for c in eligible:
        rows = np.flatnonzero(r_labels == c)
        reference, held = halves[c]
        ref_idx.extend(rows[reference][: int((s_labels == c).sum())])
        test_idx.extend(rows[held])
    train = np.isin(s_labels, eligible)
    pred_s = _fit_predict(synthetic[train], s_labels[train], real[test_idx], random_seed)
    pred_r = _fit_predict(real[ref_idx], r_labels[ref_idx], real[test_idx], random_seed)
    n_ref = pd.Series(r_labels[ref_idx]).value_counts()
    for i, c in enumerate(conditions):
        if c not in halves:
            frame.loc[i, "note"] = "CAS not computable (needs 2 or more real images to split)"
            continue
        for column, value in _recalls(r_labels[test_idx], pred_s, pred_r, c).items():
            frame.loc[i, column] = value
        frame.loc[i, "n_reference"] = int(n_ref.get(c, 0))
        if int(n_ref.get(c, 0)) < int((s_labels == c).sum()):
            frame.loc[i, "note"] = (
                f"cas_real trained on {int(n_ref.get(c, 0))} real image(s) of this condition "
                f"against {int((s_labels == c).sum())} synthetic: the real cell is small"
            )
    return frame


def _cas(
    bank: ImageMeasurements, sets: _Sets, random_seed: int
) -> dict[tuple[str, str], dict[str, Any]]:
    """CAS rows keyed by (condition, group), one classifier pair per group."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for group in sets.groups:
        label = group_label(group)
        synth = sets.synthetic[sets.synthetic["fst_group"] == label]
        if synth.empty:
            continue
        real = sets.real[
            (sets.real["fst_group"] == label) & sets.real["label"].isin(set(synth["label"]))
        ]
        frame = classification_accuracy_score(
            bank.matrix(synth["path"]),
            list(synth["label"]),
            bank.matrix(real["path"]),
            list(real["label"]),
            random_seed=random_seed,
            key=label,
        )
        for record in frame.to_dict("records"):
            out[(str(record["condition"]), label)] = {str(k): v for k, v in record.items()}
    return out


# --------------------------------------------------------------------------- the table


def _copy_stats(part: pd.DataFrame, threshold: float) -> dict[str, float]:
    copied = part["copied"].dropna()
    return {
        "copy_rate": float(copied.mean()) if len(copied) else math.nan,
        "n_copies": int(copied.sum()) if len(copied) else math.nan,
        "copy_threshold": threshold,
        "nn_seed_median": float(part["d_seed"].median()),
        "nn_real_median": float(part["d_real"].median()),
        "nn_test_median": float(part["d_test"].median()),
    }


def _tone_stats(part: pd.DataFrame, real_ita: np.ndarray) -> tuple[dict[str, float], list[str]]:
    from scipy.stats import wasserstein_distance

    synth_ita = part["ita"].to_numpy(dtype=float)
    synth_ita = synth_ita[np.isfinite(synth_ita)]
    real_ita = real_ita[np.isfinite(real_ita)]
    both = len(synth_ita) > 0 and len(real_ita) > 0
    out = {
        "ita_synthetic_median": float(np.median(synth_ita)) if len(synth_ita) else math.nan,
        "ita_real_median": float(np.median(real_ita)) if len(real_ita) else math.nan,
        "ita_wasserstein": float(wasserstein_distance(synth_ita, real_ita)) if both else math.nan,
        "tone_match": float(part["tone_match"].mean()),
    }
    notes = [] if both else ["ita_wasserstein not computable (no skin tone measured on one side)"]
    return out, notes


def _cas_values(record: dict[str, Any] | None) -> tuple[dict[str, float], list[str]]:
    if record is None:
        return dict.fromkeys(CAS_COLUMNS[1:-1], math.nan), []
    values = {c: float(record[c]) for c in CAS_COLUMNS[1:-1]}
    real = values["cas_real"]
    values["cas_ratio"] = values["cas"] / real if real > 0 else math.nan
    return values, [str(record["note"])] if record["note"] else []


def _cell_row(
    bank: ImageMeasurements,
    sets: _Sets,
    cell: tuple[str, str],
    distances: pd.DataFrame,
    cas: dict[tuple[str, str], dict[str, Any]],
    threshold: float,
    random_seed: int,
) -> dict[str, Any]:
    condition, group = cell
    in_cell = (sets.synthetic["label"] == condition) & (sets.synthetic["fst_group"] == group)
    synth = sets.synthetic[in_cell]
    real = sets.real[(sets.real["label"] == condition) & (sets.real["fst_group"] == group)]
    s_feats, r_feats = bank.matrix(synth["path"]), bank.matrix(real["path"])
    part = distances[(distances["condition"] == condition) & (distances["fst_group"] == group)]
    row: dict[str, Any] = {
        "condition": condition,
        "fst_group": group,
        "n_synthetic": len(synth),
        "n_real": len(real),
    }
    notes = (
        ["no real images of this cell outside the test set: nothing to compare with"]
        if real.empty
        else []
    )
    real_ita = np.array([bank.tone(p)[0] for p in real["path"]], dtype=float)
    for values, more in (
        kid_fid(r_feats, s_feats, random_seed=random_seed),
        prdc_metrics(r_feats, s_feats),
        _cas_values(cas.get(cell)),
        (_copy_stats(part, threshold), []),
        diversity(s_feats, list(synth["parent_id"]), r_feats),
        _tone_stats(part, real_ita),
    ):
        row.update(values)
        notes.extend(more)
    row["notes"] = "; ".join(notes)
    return row


def _cells(sets: _Sets) -> list[tuple[str, str]]:
    order = {group_label(g): i for i, g in enumerate(sets.groups)}
    pairs = set(zip(sets.synthetic["label"].astype(str), sets.synthetic["fst_group"], strict=True))
    return sorted(pairs, key=lambda cell: (cell[0], order[cell[1]]))


# --------------------------------------------------------------------------- entry point


def evaluate_synthetic(
    candidates: pd.DataFrame,
    real: pd.DataFrame,
    *,
    features: str | ImageMeasurements = DEFAULT_FEATURES,
    groups: str | Sequence[str | Sequence[int]] = DEFAULT_GROUPS,
    test: pd.DataFrame | None = None,
    generator_data: pd.DataFrame | None = None,
    copy_threshold: float | None = None,
    copy_quantile: float = COPY_QUANTILE,
    random_seed: int = 0,
    device: str = "cpu",
    batch_size: int = BATCH_SIZE,
) -> SyntheticQuality:
    """Measure a synthetic set (candidate or selected manifest) against real images, per
    condition x FST group: KID/FID, PRDC, CAS, copies, diversity and tone (module docstring).

    ``features``: an extractor name (:mod:`dermsynth.evaluate.features`), or an
    :class:`ImageMeasurements` to reuse across calls. ``test``: more test images besides the
    real manifest's ``split == 'test'`` rows; ``generator_data``: images the generator was
    trained or conditioned on. Both only enter the copy distances.
    """
    chosen = parse_groups(groups)
    if not 0 < copy_quantile < 1:
        raise DermsynthError(f"--copy-quantile must lie between 0 and 1, got {copy_quantile}")
    if copy_threshold is not None and not copy_threshold >= 0:
        raise DermsynthError(f"--copy-threshold must be 0 or more, got {copy_threshold}")
    bank = (
        features
        if isinstance(features, ImageMeasurements)
        else image_measurements(features, device=device, batch_size=batch_size)
    )
    sets = _prepare(candidates, real, test, generator_data, chosen)
    bank.measure(sets.paths(), sets.tone_masks())
    n_unreadable = _drop_unreadable(sets, bank)
    threshold, threshold_note = _copy_threshold(
        bank.matrix(sets.real["path"]), copy_threshold, copy_quantile
    )
    distances = _memorization(bank, sets, threshold)
    cas = _cas(bank, sets, random_seed)
    rows = [
        _cell_row(bank, sets, cell, distances, cas, threshold, random_seed) for cell in _cells(sets)
    ]
    table = pd.DataFrame.from_records(rows, columns=list(TABLE_COLUMNS))
    for column in ("kid_subset_size", "prdc_k", "cas_n", "n_copies"):
        table[column] = table[column].astype("Int64")
    notes = _notes(sets, bank, table, threshold_note, random_seed)
    info = {
        "measured": sets.measured,
        "features": bank.name,
        "groups": [group_label(g) for g in chosen],
        "random_seed": random_seed,
        "copy_threshold": threshold,
        "copy_quantile": None if copy_threshold is not None else copy_quantile,
        "n_synthetic": len(sets.synthetic),
        "n_real": len(sets.real),
        "n_test": len(sets.test),
        "n_generator": len(sets.generator),
        "n_unreadable": n_unreadable,
    }
    return SyntheticQuality(table, distances, distance_quantiles(distances), notes, info)


def _notes(
    sets: _Sets, bank: ImageMeasurements, table: pd.DataFrame, threshold_note: str, random_seed: int
) -> list[str]:
    notes = [*sets.notes, f"features: {bank.extractor.name}"]
    size = _size_note(sets, bank)
    if size:
        notes.append(size)
    empty = table[table["n_real"] == 0]
    if len(empty):
        cells = ", ".join(f"{r.condition} / {r.fst_group}" for r in empty.itertuples())
        notes.append(
            f"no real images outside the test set for {len(empty)} cell(s) ({cells}): "
            "their metrics are empty"
        )
    if sets.test.empty:
        notes.append(
            "no test images (no split 'test' rows in the real manifest, no --test): d_test empty"
        )
    notes += [
        threshold_note,
        FID_NOTE,
        f"KID: torchmetrics, {KID_SUBSETS} subsets of min({KID_MAX_SUBSET_SIZE}, n_real, "
        f"n_synthetic) images drawn with random seed {random_seed} (one subset, and kid_std 0, "
        "where a subset holds every image of both sides); at small N KID can fall below 0",
        "precision/recall/density/coverage: prdc (Naeem et al. 2020), k = min(5, n - 2) with n "
        "the smaller side",
        "CAS: per FST group, logistic regression (scikit-learn, standardized features, random "
        f"seed {random_seed}) trained on the synthetic images; cas_real: the same trained on as "
        "many real images from a seeded half of each real cell; both tested on the other half; "
        "cas_ratio = cas / cas_real",
    ]
    return notes


# --------------------------------------------------------------------------- writing


def _jsonable(value: Any) -> Any:
    """NaN -> None and numpy scalars -> Python, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    # pandas' JSON writer turns NaN / NA into null and numpy scalars into plain numbers.
    return json.loads(frame.to_json(orient="records"))


def write_synthetic_quality(
    result: SyntheticQuality, out_dir: str | os.PathLike[str]
) -> list[Path]:
    """Write the table, the per-image distances and a JSON summary into ``out_dir``."""
    from dermsynth.io import atomic_write_csv, atomic_write_text

    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise DermsynthError(f"--out {folder} is a file; give a folder")
    paths = [folder / TABLE_FILE, folder / DISTANCES_FILE, folder / SUMMARY_FILE]
    atomic_write_csv(paths[0], result.table)
    atomic_write_csv(paths[1], result.distances)
    # Written in the table's column order (atomic_write_json would sort the keys).
    atomic_write_text(paths[2], json.dumps(result.summary(), indent=2) + "\n")
    return paths
