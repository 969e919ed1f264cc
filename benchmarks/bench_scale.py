"""Benchmark: a large synthetic set through shard writing -> feature store -> one fast-path run.

For each ``--sizes`` N, a fresh process (so each peak RSS is its own):

1. **shards**: a fast stand-in for the generator's outputs (``--image-size`` px PNGs: skin-toned
   noise with a dark lesion whose shape follows the class, 4 classes x 6 skin types) written
   as WebDataset shards of 5,000 images with one JSON record each (``write_shard``);
2. **features**: the shards read back through WebDataset, each image's frozen features (the
   demo's colour-texture backbone, test view) computed into the sharded feature store
   (``FeatureStore.compute_encoded``), keyed by content hash;
3. **train**: one fast-path training run on them: the store's rows read through memory maps a
   batch at a time (``StoredRows``), the class-balanced sampler and the recipe head
   (``loop.fit``), ``--epochs`` epochs.

It prints, and writes as JSON with ``--json``: images/s of each stage, the files each stage
created, CPU time per stage (images per CPU-second: steadier than wall time when other jobs
share the cores), and the process's peak RSS after each stage (``getrusage``; it includes the
memory-mapped feature pages the epoch touched). Run it niced on a shared machine:

    nice -n 10 .venv/bin/python benchmarks/bench_scale.py --sizes 10000 100000 --out /tmp/scale
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = ("psoriasis", "squamous cell carcinoma", "neutrophilic dermatoses", "folliculitis")
SHARD = 5000  # images per tar: small images, so ~15 MB shards (two files each, with the sidecar)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Clock:
    """Wall time and this process's CPU time (all its threads) since it was made. On a shared
    machine CPU time per image moves far less with other jobs' load than wall time does."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def rates(self, images: int) -> dict[str, float]:
        """Seconds and images per second, of wall and of CPU time."""
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        return {
            "seconds": wall,
            "images_per_s": images / wall,
            "cpu_seconds": cpu,
            "images_per_cpu_s": images / cpu,
        }


def files_under(folder: Path) -> int:
    """Files under ``folder``."""
    return sum(len(f) for _, _, f in os.walk(folder))


NOISE = 64  # noise fields reused across images: the stand-in must cost little per image


def stand_in_image(i: int, size: int) -> tuple[bytes, int, int]:
    """A small PNG that looks enough like a generated lesion to give the trunk work."""
    from PIL import Image, ImageDraw

    noise = _noise(size)[i % NOISE]
    label, fst = i % len(CLASSES), 1 + (i // len(CLASSES)) % 6
    tone = np.array([230, 190, 160]) * (1.05 - 0.13 * fst)
    image = Image.fromarray(np.clip(tone + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    r = size // 6 + (i * 7) % (size // 6)
    x, y = r + (i * 13) % (size - 2 * r), r + (i * 29) % (size - 2 * r)
    shape = draw.ellipse if label % 2 == 0 else draw.rectangle
    shape([x - r, y - r, x + r, y + r], fill=(90 + 30 * label, 40, 50))
    # The image's number in its first pixels: every image differs, so none shares features.
    image.putpixel((0, 0), (i >> 16 & 255, i >> 8 & 255, i & 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue(), label, fst


_NOISE: dict[int, np.ndarray] = {}


def _noise(size: int) -> np.ndarray:
    if size not in _NOISE:
        _NOISE[size] = np.random.default_rng(0).normal(0, 12, (NOISE, size, size, 3))
    return _NOISE[size]


def write_shards(folder: Path, n: int, size: int) -> dict[str, Any]:
    """Stage 1: the stand-in generator into WebDataset shards."""
    from dermsynth.generate.shards import Sample, shard_path, write_shard

    def samples(start: int, stop: int) -> Iterator[Sample]:
        for i in range(start, stop):
            png, label, fst = stand_in_image(i, size)
            record = {
                "image_id": f"seed{i // 8}_c{i % 8:02d}",
                "label": CLASSES[label],
                "fst": fst,
                "parent_id": f"seed{i // 8}",
                "origin": "synthetic",
                "random_seed": i,
                "backend": "stand-in",
            }
            yield Sample(f"seed{i // 8}_c{i % 8:02d}", png, "png", record)

    import webdataset  # noqa: F401 - imported before the clock starts (it imports torch)

    clock = Clock()
    for index, start in enumerate(range(0, n, SHARD)):
        write_shard(shard_path(folder, index), samples(start, min(start + SHARD, n)))
    return {**clock.rates(n), "files": files_under(folder)}


def compute_features(shards: Path, cache: Path, config: Any) -> tuple[dict[str, Any], Any, Any]:
    """Stage 2: shards -> frozen features in the sharded store; labels kept as small ints."""

    from dermsynth.generate.shards import read_samples, shards_in
    from dermsynth.train.backbones import weights_identity
    from dermsynth.train.datasets import TransformSpec
    from dermsynth.train.features import TEST_VIEW, FeatureStore
    from dermsynth.train.model import Classifier

    model = Classifier(config, list(CLASSES))
    spec = TransformSpec.build(config, model.info)
    store = FeatureStore(cache, model, weights_identity(config.weights), spec)
    labels: list[int] = []
    index = {c: i for i, c in enumerate(CLASSES)}

    def images() -> Iterator[bytes]:
        for _, image, record in read_samples(shards_in(shards)):
            labels.append(index[record["label"]])
            yield image

    clock = Clock()
    hashes = store.compute_encoded(model, images(), [TEST_VIEW], batch_size=256)
    result = {
        **clock.rates(len(hashes)),
        "files": files_under(store.folder),
        "distinct_images": len(set(hashes)),
        "rows_stored": len(store.shards.snapshot()),
    }
    return result, (store, hashes, np.asarray(labels, dtype=np.int64)), model


def train_once(data: Any, model: Any, config: Any) -> dict[str, Any]:
    """Stage 3: one fast-path training run, features streamed from the store."""
    import torch

    from dermsynth.train.datasets import class_balanced_sampler
    from dermsynth.train.features import TEST_VIEW, FeatureBatches
    from dermsynth.train.loop import LoopState, fit, make_optimizer

    store, hashes, labels = data
    clock = Clock()
    features = store.load(hashes, [TEST_VIEW])  # row numbers only; features stay on disk
    generator = torch.Generator().manual_seed(0)
    sampler = class_balanced_sampler(labels, len(CLASSES), generator)
    batches = FeatureBatches(features, labels, config.batch_size, sampler, generator)
    optimizer, scheduler = make_optimizer(model, config)
    device = torch.device("cpu")
    state = fit(
        model, model.tail, batches, None, config, device, LoopState(), optimizer, scheduler,
        lambda s: None,
    )  # fmt: skip
    return {
        **clock.rates(len(hashes) * state.epoch),
        "epochs": state.epoch,
        "train_acc": state.log[-1]["train_acc"],
    }


def one_size(n: int, out: Path, size: int, epochs: int) -> dict[str, Any]:
    """The three stages at one size, in this process."""
    from dermsynth.config import ClassifierConfig

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    config = ClassifierConfig(
        backbone="colour-texture",
        weights="none",
        image_size=size,
        epochs=epochs,
        batch_size=256,
        views=1,
        progress=False,
        device="cpu",
    )
    result: dict[str, Any] = {"images": n, "rss_start_mb": peak_rss_mb()}
    result["shards"] = write_shards(out / "shards", n, size)
    result["shards"]["peak_rss_mb"] = peak_rss_mb()
    result["features"], data, model = compute_features(out / "shards", out / "cache", config)
    result["features"]["peak_rss_mb"] = peak_rss_mb()
    result["train"] = train_once(data, model, config)
    result["train"]["peak_rss_mb"] = peak_rss_mb()
    result["files_total"] = files_under(out)
    result["files_per_1000_images"] = 1000 * result["files_total"] / n
    result["load_average"] = os.getloadavg()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_scale"))
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:  # the child process of one size
        result = one_size(args.one, args.out / str(args.one), args.image_size, args.epochs)
        print(json.dumps(result))
        return
    results = []
    for n in args.sizes:
        load_before = os.getloadavg()
        child = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--out", str(args.out),
             "--image-size", str(args.image_size), "--epochs", str(args.epochs)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        result = json.loads(child.stdout.strip().splitlines()[-1])
        result["load_average_before"] = load_before
        results.append(result)
        print(
            f"{n:>7,} images: shards {result['shards']['images_per_s']:7.0f} img/s "
            f"({result['shards']['images_per_cpu_s']:.0f} per CPU-s, {result['shards']['files']} "
            f"files), features {result['features']['images_per_s']:6.0f} img/s "
            f"({result['features']['images_per_cpu_s']:.0f} per CPU-s, "
            f"{result['features']['files']} files), train {result['train']['images_per_s']:7.0f} "
            f"img/s ({result['train']['images_per_cpu_s']:.0f} per CPU-s), peak RSS {result['train']['peak_rss_mb']:.0f} MiB, "
            f"{result['files_per_1000_images']:.2f} files per 1,000 images, "
            f"load {result['load_average'][0]:.1f}",
            flush=True,
        )
        shutil.rmtree(args.out / str(n), ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
