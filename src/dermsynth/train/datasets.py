"""Images in, tensors out: path resolution, one validating decode pass, transforms, sampler.

Every full-size image is decoded once, by :func:`prepare_images`, into the resized
:class:`~dermsynth.data.images.ImageCache` (shorter side = ``resize``); epochs then read the
small uint8 copy. Resizing first does not change the recipe: the train transform's
RandomResizedCrop picks its crop in relative terms and the test transform's Resize(256) of a
copy whose shorter side is already 256 is the identity.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset, WeightedRandomSampler
from torchvision import transforms as T

from dermsynth.config import ClassifierConfig
from dermsynth.data.images import BadImageError, ImageCache, content_hash
from dermsynth.errors import DermsynthError
from dermsynth.train.backbones import BackboneInfo


@dataclass(frozen=True)
class TransformSpec:
    """Everything that shapes a transformed image (part of every feature-cache key)."""

    image_size: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rotation: float
    crop_scale: tuple[float, float]

    @classmethod
    def build(cls, config: ClassifierConfig, info: BackboneInfo) -> TransformSpec:
        """The config's sizes, or the backbone's defaults (224 crop of a 256 resize)."""
        size = config.image_size or info.input_size
        resize = config.resize or round(size * info.resize / info.input_size)
        return cls(
            size,
            resize,
            info.mean,
            info.std,
            float(config.rotation),
            config.crop_scale,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def _finish(spec: TransformSpec, to_float: bool) -> list[object]:
    if to_float:
        return [T.ToTensor(), T.Normalize(spec.mean, spec.std)]
    # uint8 out; scaling and normalization happen once per batch (normalize_batch), on the GPU
    # where there is one: the same numbers, a fraction of the per-image cost.
    return [T.PILToTensor()]


def train_transform(spec: TransformSpec, *, to_float: bool = True) -> T.Compose:
    """RandomResizedCrop(256, 0.8-1.0), RandomRotation(15), ColorJitter(), flip, CenterCrop(224),
    ImageNet normalization (sizes from ``spec``). ColorJitter() with no arguments changes
    nothing; it is kept because the recipe has it. ``to_float=False``: uint8 CHW tensors, to be
    finished by :func:`normalize_batch`."""
    return T.Compose(
        [
            T.RandomResizedCrop(spec.resize, scale=spec.crop_scale),
            T.RandomRotation(spec.rotation),
            T.ColorJitter(),
            T.RandomHorizontalFlip(),
            T.CenterCrop(spec.image_size),
            *_finish(spec, to_float),
        ]
    )


def test_transform(spec: TransformSpec, *, to_float: bool = True) -> T.Compose:
    """Resize(256), CenterCrop(224), ImageNet normalization (sizes from ``spec``)."""
    return T.Compose(
        [T.Resize(spec.resize), T.CenterCrop(spec.image_size), *_finish(spec, to_float)]
    )


def normalize_batch(
    batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """ToTensor + Normalize of a uint8 (N, C, H, W) batch: ``(x / 255 - mean) / std``."""
    m = torch.as_tensor(mean, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    return batch.float().div_(255.0).sub_(m).div_(s)


def resolve_paths(paths: pd.Series, manifest_dir: Path | None) -> pd.Series:
    """Relative paths are tried as given, then against the manifest's folder."""

    def one(p: str) -> str:
        if not p or os.path.isabs(p) or manifest_dir is None or Path(p).exists():
            return p
        candidate = manifest_dir / p
        return str(candidate) if candidate.exists() else p

    return paths.map(one)


@dataclass
class PreparedImages:
    """Rows whose images decoded, with each image's content hash and resized-cache entry."""

    rows: pd.DataFrame
    hashes: list[str]
    entries: list[Path]
    skipped: pd.DataFrame  # image_id, path, reason


def prepare_images(
    rows: pd.DataFrame, cache: ImageCache, *, skip_bad: bool, workers: int = 0, decode: bool = True
) -> PreparedImages:
    """Hash every image and (``decode``) put its resized copy in the cache, decoding once.

    A bad image raises :class:`BadImageError` naming it (and how many others are bad), or with
    ``skip_bad`` is left out and listed in ``skipped``.
    """

    def one(path: str) -> tuple[str, Path] | str:
        if not path:
            return "the manifest gives no image path"
        try:
            if decode:
                return cache.ensure(path)
            digest = content_hash(path)
            return digest, cache.entry_for(digest)
        except BadImageError as exc:
            return str(exc)

    paths = rows["path"].tolist()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(one, paths, chunksize=16))
    bad = [i for i, r in enumerate(results) if isinstance(r, str)]
    skipped = pd.DataFrame(
        {
            "image_id": [rows["image_id"].iloc[i] for i in bad],
            "path": [paths[i] for i in bad],
            "reason": [results[i] for i in bad],
        }
    )
    if bad and not skip_bad:
        first = rows["image_id"].iloc[bad[0]]
        more = f" ({len(bad) - 1} more bad image(s))" if len(bad) > 1 else ""
        raise BadImageError(
            f"image {first!r}: {results[bad[0]]}{more}; fix or remove it, or leave "
            "such images out (--skip-bad-images; in a study config, classifier: "
            "{skip_bad_images: true})"
        )
    good = [i for i, r in enumerate(results) if not isinstance(r, str)]
    ok = [r for r in results if not isinstance(r, str)]
    return PreparedImages(
        rows.iloc[good].reset_index(drop=True),
        [r[0] for r in ok],
        [r[1] for r in ok],
        skipped,
    )


def view_seed(image_hash: str, view: int) -> int:
    """The augmentation seed of view ``view`` of an image: fixed, so a view can be cached."""
    return int(hashlib.sha1(f"{image_hash}:{view}".encode()).hexdigest()[:15], 16)


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """Transformed images from the resized cache; ``views`` pins each item's augmentation.

    With ``views`` (one int per item) the transform runs under a seed derived from the image's
    hash and the view index, so the fast path's cached views are reproducible; without, it
    draws from torch's RNG like any DataLoader (seeded by the run's seed).
    """

    def __init__(
        self,
        entries: Sequence[Path],
        targets: Sequence[int],
        transform: T.Compose,
        *,
        hashes: Sequence[str] | None = None,
        views: Sequence[int] | None = None,
    ) -> None:
        self.entries = list(entries)
        self.targets = list(targets)
        self.transform = transform
        self.hashes = list(hashes) if hashes is not None else None
        self.views = list(views) if views is not None else None

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.fromarray(np.load(self.entries[index], allow_pickle=False), mode="RGB")
        if self.views is None or self.hashes is None:
            return self.transform(image), self.targets[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(view_seed(self.hashes[index], self.views[index]))
            return self.transform(image), self.targets[index]


def class_balanced_sampler(
    targets: Sequence[int],
    n_classes: int,
    generator: torch.Generator,
    row_weights: Sequence[float] | np.ndarray | None = None,
) -> WeightedRandomSampler:
    """WeightedRandomSampler, weight 1 / (count of the item's class), with replacement.

    ``row_weights`` count a row as that many rows (the reweight arm): a row's weight is its own
    over its class's total, and an epoch draws as many items as the rows' weights sum to.
    """
    labels = np.asarray(targets, dtype=np.int64)
    own = np.ones(len(labels)) if row_weights is None else np.asarray(row_weights, dtype=float)
    totals = np.bincount(labels, weights=own, minlength=n_classes)
    if (totals[labels] <= 0).any():
        raise DermsynthError("internal: a sampled class has no items")
    weights = own / totals[labels]
    return WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double).tolist(),
        num_samples=round(float(own.sum())),
        replacement=True,
        generator=generator,
    )
