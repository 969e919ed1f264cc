"""Benchmark (a): images/s of the training input pipeline, ours vs Groh et al.'s loader.

Groh et al.'s loader (fitzpatrick17k ``train.py``), re-implemented faithfully: every item of
every epoch reads the full-size JPEG with ``skimage.io.imread`` (gray to RGB if needed), then
ToPILImage - RandomResizedCrop(256, 0.8-1.0) - RandomRotation(15) - ColorJitter() -
RandomHorizontalFlip - CenterCrop(224) - ToTensor - Normalize(ImageNet), sampled by a
WeightedRandomSampler. Ours: what ``dermsynth train`` runs when it
trains through the images (full fine-tuning, any non-frozen backbone): the same sampler and
augmentation distribution on the resized-image cache (each JPEG decoded once, by
``prepare_images``); each item's crop, resize, rotation, flip and centre crop are one bilinear
warp of the uint8 image (``dermsynth.train.augment``), and uint8 batches are scaled and
normalized once per batch (counted here). Both run through a DataLoader with the same batch size
and workers, held across epochs (one untimed warm-up epoch, then ``--epochs`` timed). Each worker setting is measured ``--repeats`` times, Groh and
ours side by side in each repeat, each row with the load average before it; the summary gives
the min and median speedup. Also reported: our first (cold) epoch, cache building included.

    .venv/bin/python benchmarks/bench_input_pipeline.py --out /tmp/bench_input
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import skimage.color
import skimage.io
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from dermsynth.data.images import ImageCache
from dermsynth.data.manifest import load_manifest
from dermsynth.data.simulate import simulate_dataset
from dermsynth.train.augment import AugmentedImages
from dermsynth.train.backbones import IMAGENET_MEAN, IMAGENET_STD
from dermsynth.train.datasets import (
    TransformSpec,
    class_balanced_sampler,
    normalize_batch,
    prepare_images,
)


class GrohDataset(Dataset):
    """Full-size JPEG decoded by skimage on every access, as in Groh et al.'s SkinDataset."""

    def __init__(self, paths: list[str], targets: list[int]) -> None:
        self.paths, self.targets = paths, targets
        self.transform = T.Compose(
            [
                T.ToPILImage(),
                T.RandomResizedCrop(size=256, scale=(0.8, 1.0)),
                T.RandomRotation(degrees=15),
                T.ColorJitter(),
                T.RandomHorizontalFlip(),
                T.CenterCrop(size=224),
                T.ToTensor(),
                T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = skimage.io.imread(self.paths[index])
        if image.ndim < 3:
            image = skimage.color.gray2rgb(image)
        return self.transform(image[..., :3]), self.targets[index]


def epoch_rate(loader: DataLoader, finish: bool = False) -> float:
    """Images per second of one pass over ``loader``; ``finish``: our uint8 batches are scaled
    and normalized (what the model does on arrival), so both sides end with the same tensors."""
    start, n = time.perf_counter(), 0
    for batch, _ in loader:
        if finish:
            batch = normalize_batch(batch, IMAGENET_MEAN, IMAGENET_STD)
        n += len(batch)
    return n / (time.perf_counter() - start)


def side_by_side(
    groh_set: Dataset,
    ours_set: Dataset,
    targets: list[int],
    n_classes: int,
    workers: int,
    args: argparse.Namespace,
) -> tuple[float, float]:
    """Mean images/s over ``args.epochs`` epochs of each loader after one untimed warm-up
    epoch, Groh's first."""
    rates = []
    for dataset, ours in ((groh_set, False), (ours_set, True)):
        generator = torch.Generator().manual_seed(0)
        # One loader for all epochs, as a training loop holds it: workers start once.
        loader = DataLoader(
            dataset,
            batch_size=args.batch_size,
            sampler=class_balanced_sampler(targets, n_classes, generator),
            num_workers=workers,
            persistent_workers=workers > 0,
        )
        epoch_rate(loader, ours)  # warm-up: worker start, page cache; a training run pays it once
        rates.append(float(np.mean([epoch_rate(loader, ours) for _ in range(args.epochs)])))
        del loader
    return rates[0], rates[1]


def summary(runs: list[dict[str, float]], workers: int) -> dict[str, float]:
    """Min and median of one worker setting's repeats."""
    rows = [r for r in runs if r["workers"] == workers]
    speedups = [r["speedup"] for r in rows]
    return {
        "workers": workers,
        "repeats": len(rows),
        "speedup_min": min(speedups),
        "speedup_median": round(statistics.median(speedups), 2),
        "groh_img_s_median": round(statistics.median(r["groh_img_s"] for r in rows), 1),
        "ours_img_s_median": round(statistics.median(r["ours_img_s"] for r in rows), 1),
        "load_range": f"{min(r['load'] for r in rows):.2f}-{max(r['load'] for r in rows):.2f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_input"))
    parser.add_argument(
        "--scale", type=float, default=0.4, help="simulate_dataset scale (0.4: ~1,100 images)"
    )
    parser.add_argument(
        "--image-size", type=int, default=1024, help="longest side of the simulated JPEGs"
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    started = time.perf_counter()
    csv = simulate_dataset(
        args.out / "data", scale=args.scale, image_size=args.image_size, workers=2, progress=False
    )
    simulate_s = time.perf_counter() - started
    rows = load_manifest(csv)
    classes = sorted(set(rows["label"]))
    targets = [classes.index(c) for c in rows["label"]]
    paths = rows["path"].tolist()
    sizes = [Path(p).stat().st_size for p in paths]
    spec = TransformSpec(224, 256, IMAGENET_MEAN, IMAGENET_STD, 15.0, (0.8, 1.0))
    cache = ImageCache(args.out / "cache" / "images", spec.resize)
    for entry in (args.out / "cache").rglob("*.npy"):  # every run measures a cold cache
        entry.unlink()

    results: dict[str, object] = {
        "images": len(paths),
        "classes": len(classes),
        "mean_jpeg_kb": round(float(np.mean(sizes)) / 1024, 1),
        "longest_side": args.image_size,
        "batch_size": args.batch_size,
        "epochs_per_rate": args.epochs,
        "simulate_s": round(simulate_s, 1),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads",
    }
    cold_start = time.perf_counter()
    prepared = prepare_images(rows, cache, skip_bad=False, workers=2)
    prepare_s = time.perf_counter() - cold_start
    groh_set = GrohDataset(paths, targets)
    ours_set = AugmentedImages(prepared.entries, targets, spec)
    runs: list[dict[str, float]] = []
    for repeat in range(1, args.repeats + 1):
        for workers in args.workers:
            load = os.getloadavg()[0]
            groh, ours = side_by_side(groh_set, ours_set, targets, len(classes), workers, args)
            n = len(paths)
            cold = n / (prepare_s + n / ours)  # a fresh run's first epoch also builds the cache
            run = {
                "repeat": repeat,
                "workers": workers,
                "load": round(load, 2),
                "groh_img_s": round(groh, 1),
                "ours_img_s": round(ours, 1),
                "speedup": round(ours / groh, 2),
                "ours_cold_epoch_img_s": round(cold, 1),
            }
            runs.append(run)
            print(json.dumps(run), flush=True)
    results["runs"] = runs
    results["summary"] = [summary(runs, w) for w in args.workers]
    results["prepare_s"] = round(prepare_s, 1)
    results["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
