"""The fast path: a frozen trunk runs once per image view; heads train on its cached output.

Every image has a test view (the test transform). A training image has ``K`` views: view 0 is
its test view (the un-augmented centre crop, already computed wherever the image is a test or
validation image of another direction, so shared with it) and views ``1..K-1`` are the train
transform under a seed fixed by the image's content hash and the view index. Each view's trunk output is one float16 ``.npy`` file::

    <cache>/features/<backbone>-<key>/<view>/<hash[:2]>/<image hash>.npy

where ``key`` hashes the backbone name, the weights' identity (file hash, or 'imagenet' / 'none'
with the torch and torchvision versions), the transform spec and the trunk's split point, and
``<image hash>`` is the SHA-1 of the image file's bytes. A changed image, transform or weights
file therefore reads from a new entry: the cache is never stale. Runs that share these share
the features (by default the cache sits beside the run folders, so every run of a study uses
it). During training each sampled image picks one of its K views at random, each epoch.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch.utils.data import DataLoader, WeightedRandomSampler

from dermsynth.io import atomic_save, atomic_write_json
from dermsynth.train.datasets import ImageDataset, TransformSpec, test_transform, train_transform
from dermsynth.train.model import Classifier

TRUNK_VERSION = 1  # bump when a backbone's split point moves: old features no longer fit
TEST_VIEW = "test"


def train_view(k: int) -> str:
    """Name of the k-th view of a training image (view 0 is the test view)."""
    return TEST_VIEW if k == 0 else f"train-{k}"


def train_views(k: int, view_set: int = 0) -> list[str]:
    """The ``k`` views of a training image; set ``s > 0`` (copy s of a repeated image) has
    ``k`` augmented views of its own, none shared with another set."""
    if view_set == 0:
        return [train_view(i) for i in range(k)]
    return [train_view(view_set * k + i) for i in range(k)]


def _timm_version() -> str | None:
    try:
        return importlib.metadata.version("timm")
    except importlib.metadata.PackageNotFoundError:
        return None


class FeatureStore:
    """Trunk outputs of image views, on disk, keyed by everything that changes them."""

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        model: Classifier,
        weights_id: str,
        spec: TransformSpec,
    ) -> None:
        self.parts = {
            "backbone": model.info.name,
            "source": model.info.source,
            "weights": weights_id,
            "torch": torch.__version__.split("+")[0],
            "torchvision": torchvision.__version__.split("+")[0],
            "timm": _timm_version() if model.info.source == "timm" else None,
            "transform": spec.to_dict(),
            "trunk_version": TRUNK_VERSION,
            "dtype": "float16",
        }
        text = json.dumps(self.parts, sort_keys=True)
        self.key = hashlib.sha256(text.encode()).hexdigest()[:20]
        self.folder = Path(cache_dir) / "features" / f"{model.info.name}-{self.key}"
        self.spec = spec
        self.dim = model.info.feature_dim

    def path(self, image_hash: str, view: str) -> Path:
        """File of one view of one image."""
        return self.folder / view / image_hash[:2] / f"{image_hash}.npy"

    def missing(self, hashes: Sequence[str], views: Sequence[str]) -> list[tuple[int, str]]:
        """(item index, view) pairs not yet cached."""
        return [(i, v) for i, h in enumerate(hashes) for v in views if not self.path(h, v).exists()]

    def _save(self, path: Path, array: np.ndarray) -> None:
        # No fsync per entry (thousands of them): an entry lost in a crash is recomputed, and a
        # damaged one fails its shape check in load().
        atomic_save(path, lambda handle: np.save(handle, array, allow_pickle=False), fsync=False)

    @torch.no_grad()
    def compute(
        self,
        model: Classifier,
        entries: Sequence[Path],
        hashes: Sequence[str],
        todo: Sequence[tuple[int, str]],
        *,
        batch_size: int,
        workers: int,
        device: torch.device,
        amp: bool = False,
        channels_last: bool = False,
        progress: bool = False,
    ) -> int:
        """Run the trunk on the (item, view) pairs of ``todo``; ``entries`` are resized-cache
        files of the items. Returns the number of views computed."""
        if not todo:
            return 0
        if not (self.folder / "key.json").exists():
            atomic_write_json(self.folder / "key.json", self.parts)
        model.eval()
        done = 0
        for is_test in (True, False):
            group = [(i, v) for i, v in todo if (v == TEST_VIEW) == is_test]
            if not group:
                continue
            views = None if is_test else [int(v.split("-")[1]) for _, v in group]
            dataset = ImageDataset(
                [entries[i] for i, _ in group],
                list(range(len(group))),
                test_transform(self.spec, to_float=False)
                if is_test
                else train_transform(self.spec, to_float=False),
                hashes=None if is_test else [hashes[i] for i, _ in group],
                views=views,
            )
            # Own generator: computing features (cold cache) or not (warm) must leave the
            # run's RNG where it was, or a run would depend on the cache's state.
            loader = DataLoader(
                dataset,
                batch_size=batch_size,
                num_workers=workers,
                pin_memory=device.type == "cuda",
                generator=torch.Generator(),
            )
            from tqdm.auto import tqdm

            for inputs, positions in tqdm(loader, desc="features", disable=not progress):
                inputs = inputs.to(device)
                if channels_last:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, enabled=amp):
                    out = model.features(inputs).float().cpu().numpy().astype(np.float16)
                for row, pos in zip(out, positions.tolist(), strict=True):
                    i, view = group[pos]
                    self._save(self.path(hashes[i], view), row)
                done += len(out)
        return done

    def load(self, hashes: Sequence[str], views: Sequence[str]) -> np.ndarray:
        """Cached features as an (items, views, dim) float16 array."""
        out = np.empty((len(hashes), len(views), self.dim), dtype=np.float16)
        for i, h in enumerate(hashes):
            for j, v in enumerate(views):
                path = self.path(h, v)
                array = np.load(path, allow_pickle=False)
                if array.shape != (self.dim,):
                    path.unlink(missing_ok=True)
                    raise RuntimeError(
                        f"damaged feature entry {path} removed; run again to rebuild it"
                    )
                out[i, j] = array
        return out


class FeatureBatches:
    """One epoch of (features, targets) batches; with a sampler, a random view per draw."""

    def __init__(
        self,
        features: np.ndarray,
        targets: Sequence[int],
        batch_size: int,
        sampler: WeightedRandomSampler | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.features = features
        self.targets = np.asarray(targets, dtype=np.int64)
        self.batch_size = batch_size
        self.sampler = sampler
        self.generator = generator

    def __call__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, k = self.features.shape[:2]
        order = (
            np.fromiter(iter(self.sampler), dtype=np.int64)
            if self.sampler is not None
            else np.arange(n)
        )
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.sampler is not None and k > 1:
                views = torch.randint(k, (len(idx),), generator=self.generator).numpy()
            else:
                views = np.zeros(len(idx), dtype=np.int64)
            x = torch.from_numpy(self.features[idx, views].astype(np.float32))
            yield x, torch.from_numpy(self.targets[idx])
