"""Benchmark (a): images/s of the training input pipeline, ours vs Groh et al.'s loader.

Groh et al.'s loader (fitzpatrick17k ``train.py``), re-implemented faithfully: every item of
every epoch reads the full-size JPEG with ``skimage.io.imread`` (gray to RGB if needed), then
ToPILImage - RandomResizedCrop(256, 0.8-1.0) - RandomRotation(15) - ColorJitter() -
RandomHorizontalFlip - CenterCrop(224) - ToTensor - Normalize(ImageNet), sampled by a
WeightedRandomSampler. Ours: the same transforms and sampler on the resized-image cache (each
JPEG decoded once, by ``prepare_images``), whose items are uint8 tensors scaled and normalized
per batch (counted here). Both run through a DataLoader with the same batch
size and workers. Reported: steady-state images/s (later epochs) and our first (cold) epoch,
cache building included.

    .venv/bin/python benchmarks/bench_input_pipeline.py --out /tmp/bench_input
"""

from __future__ import annotations

import argparse
import json
import platform
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
from dermsynth.train.backbones import IMAGENET_MEAN, IMAGENET_STD
from dermsynth.train.datasets import (
    ImageDataset,
    TransformSpec,
    class_balanced_sampler,
    normalize_batch,
    prepare_images,
    train_transform,
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
        "simulate_s": round(simulate_s, 1),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "runs": [],
    }
    cold_start = time.perf_counter()
    prepared = prepare_images(rows, cache, skip_bad=False, workers=2)
    prepare_s = time.perf_counter() - cold_start
    for workers in args.workers:
        generator = torch.Generator().manual_seed(0)

        def loader(
            dataset: Dataset, g: torch.Generator = generator, w: int = workers
        ) -> DataLoader:
            # One loader for all epochs, as a training loop holds it: workers start once.
            sampler = class_balanced_sampler(targets, len(classes), g)
            return DataLoader(
                dataset,
                batch_size=args.batch_size,
                sampler=sampler,
                num_workers=w,
                persistent_workers=w > 0,
            )

        groh_loader = loader(GrohDataset(paths, targets))
        groh = [epoch_rate(groh_loader) for _ in range(args.epochs)]
        ours_loader = loader(
            ImageDataset(prepared.entries, targets, train_transform(spec, to_float=False))
        )
        ours = [epoch_rate(ours_loader, finish=True) for _ in range(args.epochs)]
        del groh_loader, ours_loader
        # Cold: the first epoch of a fresh run also builds the cache (decode + resize once).
        n = len(paths)
        cold = n / (prepare_s + n / ours[0])
        run = {
            "workers": workers,
            "groh_img_s": round(float(np.mean(groh)), 1),
            "ours_img_s": round(float(np.mean(ours)), 1),
            "ours_cold_epoch_img_s": round(cold, 1),
            "speedup": round(float(np.mean(ours) / np.mean(groh)), 2),
            "speedup_cold_epoch": round(float(cold / np.mean(groh)), 2),
        }
        results["runs"].append(run)  # type: ignore[union-attr]
        print(json.dumps(run), flush=True)
    results["prepare_s"] = round(prepare_s, 1)
    results["date"] = time.strftime("%Y-%m-%d %H:%M")
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
