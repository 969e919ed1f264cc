"""The fast path: a frozen trunk runs once per image view; heads train on its cached output.

Every image has a test view (the test transform). A training image has ``K`` views: view 0 is
its test view (the un-augmented centre crop, already computed wherever the image is a test or
validation image of another direction, so shared with it) and views ``1..K-1`` are the train
transform under a seed fixed by the image's content hash and the view index. Each view's trunk
output is one float16 row of a sharded store (:mod:`dermsynth.train.store`)::

    <cache>/features/<backbone>-<key>/shards/w<slot>/<shard>.npy (+ .keys.json)

keyed ``<view>/<image hash>``, where ``key`` hashes the backbone name, the weights' identity
(file hash, or 'imagenet' / 'none' with the torch and torchvision versions), the transform spec
and the trunk's split point, and ``<image hash>`` is the SHA-1 of the image file's bytes. A
changed image, transform or weights file therefore reads from a new entry: the cache is never
stale. Runs that share these share the features (by default the cache sits beside the run
folders, so every run of a study uses it). Training reads them through memory maps, a batch at
a time (:class:`~dermsynth.train.store.StoredRows`), so a large synthetic set is never held in
memory. During training each sampled image picks one of its K views at random, each epoch.

Caches of earlier versions kept one ``.npy`` file per view (``<view>/<hash[:2]>/<hash>.npy``
in the same folder); the first use of such a folder moves its entries into shards, bit for bit,
and removes the files, so a folder is never read half one way and half the other.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import itertools
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch.utils.data import DataLoader, WeightedRandomSampler

from dermsynth.errors import DermsynthError
from dermsynth.io import FolderLock, atomic_write_json, is_partial
from dermsynth.train.datasets import ImageDataset, TransformSpec, test_transform, train_transform
from dermsynth.train.model import Classifier
from dermsynth.train.store import SHARDS, ShardStore, StoredRows

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

    @property
    def shards(self) -> ShardStore:
        """The sharded rows behind this cache."""
        return ShardStore(self.folder, self.dim)

    @staticmethod
    def entry(image_hash: str, view: str) -> str:
        """The store key of one view of one image."""
        return f"{view}/{image_hash}"

    def legacy_path(self, image_hash: str, view: str) -> Path:
        """Where earlier versions kept one view of one image, one file each."""
        return self.folder / view / image_hash[:2] / f"{image_hash}.npy"

    def missing(self, hashes: Sequence[str], views: Sequence[str]) -> list[tuple[int, str]]:
        """(item index, view) pairs not yet cached."""
        self.adopt_legacy()
        located = self.shards.snapshot().locate([self.entry(h, v) for h in hashes for v in views])
        pairs = [(i, v) for i in range(len(hashes)) for v in views]
        return [pair for pair, row in zip(pairs, located, strict=True) if row < 0]

    def _legacy_views(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(
            p
            for p in self.folder.iterdir()
            if p.is_dir() and p.name != SHARDS and not is_partial(p) and not p.name.startswith(".")
        )

    def adopt_legacy(self) -> int:
        """Move the one-file-per-view entries of an earlier version into shards, bit for bit,
        and remove them; returns how many were moved (0 while another process does it)."""
        views = self._legacy_views()
        if not views:
            return 0
        try:
            lock = FolderLock(self.folder, "a feature-cache upgrade").acquire()
        except DermsynthError:
            return 0  # another process moves them; until then they are computed again
        try:
            return self._adopt(self._legacy_views())
        finally:
            lock.release()

    def _adopt(self, views: list[Path]) -> int:
        entries = [(f"{v.name}/{f.stem}", f) for v in views for f in sorted(v.glob("*/*.npy"))]
        known = self.shards.snapshot().locate([key for key, _ in entries])
        moved = 0
        with self.shards.writer() as writer:
            for (key, path), row in zip(entries, known, strict=True):
                if row >= 0:
                    continue
                with contextlib.suppress(OSError, ValueError):
                    array = np.load(path, allow_pickle=False)
                    if array.shape == (self.dim,) and array.dtype == np.float16:
                        writer.add(key, array)  # a damaged entry is left out: computed again
                        moved += 1
        for view in views:  # only once every entry is in a whole shard
            shutil.rmtree(view, ignore_errors=True)
        return moved

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
        with self.shards.writer() as writer:
            for keys, rows in self._outputs(
                model,
                entries,
                hashes,
                todo,
                batch_size,
                workers,
                device,
                amp,
                channels_last,
                progress,
            ):
                for key, row in zip(keys, rows, strict=True):
                    writer.add(key, row)
        return len(todo)

    def _outputs(
        self,
        model: Classifier,
        entries: Sequence[Path],
        hashes: Sequence[str],
        todo: Sequence[tuple[int, str]],
        batch_size: int,
        workers: int,
        device: torch.device,
        amp: bool,
        channels_last: bool,
        progress: bool,
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """(store keys, float16 trunk outputs) of ``todo``, a batch at a time; the test views
        first, then the augmented ones, in ``todo``'s order."""
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
                pairs = [group[pos] for pos in positions.tolist()]
                yield [self.entry(hashes[i], view) for i, view in pairs], out

    @torch.no_grad()
    def compute_encoded(
        self,
        model: Classifier,
        images: Iterable[bytes],
        views: Sequence[str],
        *,
        batch_size: int = 256,
        device: torch.device | None = None,
    ) -> list[str]:
        """Trunk features of encoded images (e.g. read from WebDataset shards), a batch at a
        time: each keyed by the SHA-1 of its bytes, as an image file with those bytes is, and
        computed the same way (decoded, resized as the image cache does, the view's transform).
        Views already stored are skipped; returns every image's content hash, in order."""
        device = device or torch.device("cpu")
        model.eval()
        if not (self.folder / "key.json").exists():
            atomic_write_json(self.folder / "key.json", self.parts)
        snapshot = self.shards.snapshot()
        transforms = {
            v: test_transform(self.spec, to_float=False)
            if v == TEST_VIEW
            else train_transform(self.spec, to_float=False)
            for v in views
        }
        hashes: list[str] = []
        stream = iter(images)
        with self.shards.writer() as writer:
            while chunk := list(itertools.islice(stream, batch_size)):
                digests = [hashlib.sha1(data).hexdigest() for data in chunk]
                hashes.extend(digests)
                pairs = [(d, h, v) for d, h in zip(chunk, digests, strict=True) for v in views]
                known = snapshot.locate([self.entry(h, v) for _, h, v in pairs])
                todo = [pair for pair, row in zip(pairs, known, strict=True) if row < 0]
                if todo:
                    inputs = torch.stack(
                        [self._view_input(d, h, v, transforms) for d, h, v in todo]
                    )
                    out = model.features(inputs.to(device)).float().cpu().numpy()
                    for (_, h, v), row in zip(todo, out.astype(np.float16), strict=True):
                        writer.add(self.entry(h, v), row)
        return hashes

    def _view_input(
        self, data: bytes, image_hash: str, view: str, transforms: dict[str, Any]
    ) -> torch.Tensor:
        """One view of an encoded image, as the per-file path makes it from the image cache."""
        from PIL import Image

        from dermsynth.data.images import decode_image, resize_shorter_side
        from dermsynth.train.datasets import view_seed

        pixels = np.array(resize_shorter_side(decode_image(data), self.spec.resize), np.uint8)
        image = Image.fromarray(pixels, mode="RGB")
        if view == TEST_VIEW:
            return transforms[view](image)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(view_seed(image_hash, int(view.split("-")[1])))
            return transforms[view](image)

    def load(self, hashes: Sequence[str], views: Sequence[str]) -> StoredRows:
        """Cached features as an (items, views, dim) float16 array read from the shards on
        demand (index it like an array; ``np.asarray`` reads it all)."""
        snapshot = self.shards.snapshot()
        rows = snapshot.locate([self.entry(h, v) for h in hashes for v in views])
        if (rows < 0).any():
            raise RuntimeError(
                f"{int((rows < 0).sum())} feature entries of {self.folder} vanished after they "
                "were computed (a damaged shard?); run again to rebuild them"
            )
        return StoredRows(snapshot.reader(), rows.reshape(len(hashes), len(views)))


class FeatureBatches:
    """One epoch of (features, targets) batches; with a sampler, a random view per draw."""

    def __init__(
        self,
        features: np.ndarray | StoredRows,
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
