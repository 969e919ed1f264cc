"""The sharded feature store: reads equal the per-file cache of earlier versions bit for bit,
an old cache folder is adopted, a truncated shard is rewritten, a killed writer resumes, several
writers share a store, and training reads features a batch at a time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dermsynth.config import ClassifierConfig
from dermsynth.train import datasets
from dermsynth.train.backbones import weights_identity
from dermsynth.train.features import TEST_VIEW, FeatureBatches, train_views
from dermsynth.train.model import Classifier
from dermsynth.train.predict import Scorer
from dermsynth.train.store import ShardStore, StoredRows

VIEWS = 3


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Twelve small photos-to-be of two classes (a manifest's rows)."""
    root = tmp_path_factory.mktemp("store_images")
    rng = np.random.default_rng(3)
    rows = []
    for i in range(12):
        pixels = rng.integers(0, 255, (40, 44, 3), dtype=np.uint8)
        pixels[10:30, 12:32] = (200, 80 + 10 * i, 60)
        Image.fromarray(pixels).save(root / f"img{i}.png")
        rows.append(
            {
                "image_id": f"img{i}",
                "path": str(root / f"img{i}.png"),
                "label": "a" if i % 2 else "b",
                "fst": 1,
                "origin": "real",
            }
        )
    return pd.DataFrame(rows)


def scorer_for(cache: Path) -> Scorer:
    config = ClassifierConfig(
        backbone="resnet18", weights="none", image_size=32, views=VIEWS, progress=False
    )
    model = Classifier(config, ["a", "b"])
    spec = datasets.TransformSpec.build(config, model.info)
    return Scorer(model, config, spec, weights_identity("none"), cache, torch.device("cpu"))


def per_file_features(scorer: Scorer, rows: pd.DataFrame) -> dict[tuple[str, str], np.ndarray]:
    """What earlier versions cached, one .npy per view: the trunk on the test view and on the
    seeded augmented views, each group in one batch, stored as float16."""
    from dermsynth.train.datasets import prepare_images

    decoded = prepare_images(rows, scorer.image_cache, skip_bad=False)
    model = scorer.model.eval()
    out: dict[tuple[str, str], np.ndarray] = {}
    views = train_views(VIEWS)
    for view in views:
        is_test = view == TEST_VIEW
        dataset = datasets.ImageDataset(
            decoded.entries,
            list(range(len(rows))),
            datasets.test_transform(scorer.spec, to_float=False)
            if is_test
            else datasets.train_transform(scorer.spec, to_float=False),
            hashes=None if is_test else decoded.hashes,
            views=None if is_test else [int(view.split("-")[1])] * len(rows),
        )
        (inputs, _), *_ = DataLoader(dataset, batch_size=64)
        with torch.no_grad():
            trunk = model.features(inputs).float().numpy().astype(np.float16)
        for h, row in zip(decoded.hashes, trunk, strict=True):
            out[(h, view)] = row
    return out


def test_store_reads_equal_the_per_file_features_of_earlier_versions(
    images: pd.DataFrame, tmp_path: Path
) -> None:
    scorer = scorer_for(tmp_path / "cache")
    reference = per_file_features(scorer, images)
    # The store computes the test views in one batch and the augmented views in another, as
    # the per-file cache did; a one-row batch of the same view gives the same numbers.
    store = scorer.store
    for view in train_views(VIEWS):
        prepared, stored = scorer.features(images, [view], skip_bad=False)
        got = np.asarray(stored)
        want = np.stack([reference[(h, view)] for h in prepared.hashes])[:, None]
        assert got.dtype == np.float16 and got.shape == (12, 1, 512)
        assert np.array_equal(got.view(np.uint16), want.view(np.uint16))  # bit for bit
    # 36 views, one shard: the file count grows with shards, not with images.
    assert len(store.shards.snapshot()) == 36
    assert sorted(p.name for p in store.folder.rglob("*") if p.is_file()) == sorted(
        [".dermsynth.lock", "00000.npy", "00000.keys.json", "key.json"]
    )


def test_an_old_per_file_cache_folder_is_adopted_bit_for_bit(
    images: pd.DataFrame, tmp_path: Path
) -> None:
    scorer = scorer_for(tmp_path / "cache")
    reference = per_file_features(scorer, images)
    store = scorer.store
    for (h, view), row in reference.items():  # the layout earlier versions wrote
        path = store.legacy_path(h, view)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, row)
    damaged = store.legacy_path(next(iter(reference))[0], "train-9")
    damaged.parent.mkdir(parents=True, exist_ok=True)
    damaged.write_bytes(b"\x93NUMPY cut")
    hashes = sorted({h for h, _ in reference})
    views = train_views(VIEWS)

    assert store.missing(hashes, views) == []  # every entry moved into the store...
    assert not any(store.folder.glob("test")) and not any(store.folder.glob("train-*"))
    got = np.asarray(store.load(hashes, views))
    want = np.stack([[reference[(h, v)] for v in views] for h in hashes])
    assert np.array_equal(got.view(np.uint16), want.view(np.uint16))
    assert len(store.shards.snapshot()) == 36  # ...but the damaged one, computed again
    assert store.missing(hashes, ["train-9"]) == [(i, "train-9") for i in range(12)]


def test_a_truncated_shard_is_detected_and_rewritten(images: pd.DataFrame, tmp_path: Path) -> None:
    scorer = scorer_for(tmp_path / "cache")
    views = train_views(VIEWS)
    prepared, before = scorer.features(images, views, skip_bad=False)
    before = np.asarray(before)
    (shard,) = scorer.store.folder.glob("shards/w*/*.npy")
    with open(shard, "r+b") as handle:  # a crash (or a copy) cut the file short
        handle.truncate(shard.stat().st_size - 100)
    assert len(scorer.store.missing(prepared.hashes, views)) == 36

    _, after = scorer.features(images, views, skip_bad=False)
    assert np.array_equal(np.asarray(after), before)
    (again,) = scorer.store.folder.glob("shards/w*/*.npy")
    assert again == shard and scorer.store.shards.snapshot().paths == [shard]


KILLED_WRITER = """
import os, signal, sys
import numpy as np
from dermsynth.train.store import ShardStore

store = ShardStore(sys.argv[1], 3, shard_rows=4)
with store.writer() as writer:
    for i in range(10):
        writer.add(f"k{i}", np.full(3, i, dtype=np.float16))
    os.kill(os.getpid(), signal.SIGKILL)  # two shards written, two rows in the buffer
"""


def test_a_killed_shard_writer_resumes(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, folder], env=env, check=False)
    assert killed.returncode == -9
    store = ShardStore(folder, 3, shard_rows=4)
    assert list(store.snapshot().index) == [f"k{i}" for i in range(8)]
    (folder / "shards" / "w00" / ".00002.npy.abc123.tmp").write_bytes(b"half a shard")

    with store.writer() as writer:  # the slot's lock died with its holder: taken over
        assert writer.slot.name == "w00"
        for i in range(8, 11):
            writer.add(f"k{i}", np.full(3, i, dtype=np.float16))
    snapshot = store.snapshot()
    assert list(snapshot.index) == [f"k{i}" for i in range(11)]
    rows = StoredRows(snapshot.reader(), snapshot.locate([f"k{i}" for i in range(11)]))
    assert np.array_equal(np.asarray(rows)[:, 0], np.arange(11, dtype=np.float16))
    assert sorted(p.name for p in (folder / "shards" / "w00").iterdir()) == [
        ".dermsynth.lock",
        *[f"0000{n}.{ext}" for n in range(3) for ext in ("keys.json", "npy")],
    ]


def test_several_writers_share_a_store(tmp_path: Path) -> None:
    store = ShardStore(tmp_path / "store", 2, shard_rows=8)
    with store.writer() as first, store.writer() as second:  # e.g. two Ray workers
        assert (first.slot.name, second.slot.name) == ("w00", "w01")
        for i in range(5):
            first.add(f"k{i}", np.array([i, 0], dtype=np.float16))
        for i in range(3, 9):  # k3, k4 computed twice: the first slot's copy is read
            second.add(f"k{i}", np.array([i, 1], dtype=np.float16))
    snapshot = store.snapshot()
    assert len(snapshot) == 9
    got = np.asarray(StoredRows(snapshot.reader(), snapshot.locate([f"k{i}" for i in range(9)])))
    assert got[:, 1].tolist() == [0] * 5 + [1] * 4
    assert snapshot.locate(["nope"]).tolist() == [-1]
    # A shard whose keys never got written (its writer died in between) is not read, and the
    # next writer of that slot removes it.
    orphan = store.root / "w01" / "00007.npy"
    np.save(orphan, np.zeros((2, 2), np.float16))
    with store.writer() as third:
        assert third.slot.name == "w00"
    assert not orphan.exists() and len(store.snapshot()) == 9


def test_training_batches_read_the_store_a_batch_at_a_time(tmp_path: Path) -> None:
    store = ShardStore(tmp_path / "store", 4, shard_rows=16)
    rng = np.random.default_rng(0)
    values = rng.normal(size=(40, 2, 4)).astype(np.float16)
    with store.writer() as writer:
        for i in range(40):
            for v in range(2):
                writer.add(f"{v}/{i}", values[i, v])
    snapshot = store.snapshot()
    rows = snapshot.locate([f"{v}/{i}" for i in range(40) for v in range(2)]).reshape(40, 2)
    stored = StoredRows.concat(
        [StoredRows(snapshot.reader(), rows[:25]), StoredRows(store.snapshot().reader(), rows[25:])]
    )
    assert stored.shape == (40, 2, 4) and len(snapshot.paths) == 5
    targets = [i % 3 for i in range(40)]
    from dermsynth.train.datasets import class_balanced_sampler

    def epoch(features: np.ndarray | StoredRows) -> list[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(7)
        sampler = class_balanced_sampler(targets, 3, generator)
        return list(FeatureBatches(features, targets, 8, sampler, generator)())

    for (xa, ya), (xb, yb) in zip(epoch(stored), epoch(values), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert stored.rows.nbytes == 40 * 2 * 8  # row numbers in memory, features on disk


def test_features_of_encoded_images_equal_those_of_the_same_files(
    images: pd.DataFrame, tmp_path: Path
) -> None:
    """Images read from shards (bytes) get the entries the same files would get."""
    files = scorer_for(tmp_path / "files")
    views = train_views(2)
    prepared, from_files = files.features(images, views, skip_bad=False)
    shards = scorer_for(tmp_path / "shards")
    encoded = [Path(p).read_bytes() for p in images["path"]]
    hashes = shards.store.compute_encoded(shards.model, encoded, views, batch_size=64)
    assert hashes == prepared.hashes
    got = np.asarray(shards.store.load(hashes, views))
    assert np.array_equal(got.view(np.uint16), np.asarray(from_files).view(np.uint16))
    assert shards.store.compute_encoded(shards.model, encoded[:3], views) == hashes[:3]
    assert len(shards.store.shards.snapshot()) == 24  # nothing computed twice
