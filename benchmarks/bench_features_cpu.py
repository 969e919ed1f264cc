"""Benchmark: images/s of the frozen-feature pass on a CPU, tuned settings vs a plain fp32 loop.

The frozen-feature pass (every training view and test image through the trunk once) dominates a
study on a machine without a GPU. Both sides run the product's own trunk (``Classifier.trunk``
of the recipe's head on ``--backbones``; random weights: no weights can be downloaded here, and
the cost of a forward pass does not depend on them) on the same preprocessed 224 px batches:

- **plain**: ``model.eval()``, ``torch.no_grad()``, NCHW fp32, batch ``--plain-batch`` (the
  Groh et al. loader's 32), the process's default threads;
- **tuned**: ``torch.inference_mode()``, channels_last, each batch size of ``--batches``, and
  optionally ``torch.jit.trace`` + ``torch.jit.freeze`` (oneDNN fusions); bf16 autocast is
  measured only where the CPU has native bf16 (AVX512-BF16 or AMX), since elsewhere it is
  emulated and slower.

Every variant's features are compared with the plain loop's, image by image (cosine
similarity, min and mean). Runs are interleaved, ``--repeats`` times, each row with the load
average at its start; the summary gives min and median images/s.

    .venv/bin/python benchmarks/bench_features_cpu.py --json /tmp/bench_features_cpu.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dermsynth.config import ClassifierConfig
from dermsynth.train.model import Classifier

Runner = Callable[[torch.Tensor], torch.Tensor]


def native_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def trunk_of(backbone: str) -> torch.nn.Module:
    """The product's frozen trunk of ``backbone`` with random weights, in eval mode."""
    config = ClassifierConfig(backbone=backbone, weights="none")
    torch.manual_seed(0)
    return Classifier(config, ["a", "b"]).trunk.eval()


def batches_of(images: torch.Tensor, size: int) -> list[torch.Tensor]:
    """``images`` cut into batches of ``size`` (the last one shorter)."""
    return [images[i : i + size] for i in range(0, len(images), size)]


def plain(trunk: torch.nn.Module, batch: int) -> Runner:
    """The plain loop: no_grad, NCHW fp32, fixed batch."""

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([trunk(b).flatten(1) for b in batches_of(images, batch)])

    return run


def tuned(trunk: torch.nn.Module, batch: int, *, jit: bool, bf16: bool) -> Runner:
    """inference_mode + channels_last (+ traced and frozen, + bf16 autocast)."""
    model = copy.deepcopy(trunk).to(memory_format=torch.channels_last)
    if jit:
        example = torch.zeros(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            model = torch.jit.freeze(torch.jit.trace(model, example))

    def run(images: torch.Tensor) -> torch.Tensor:
        outs = []
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for b in batches_of(images, batch):
                outs.append(model(b.contiguous(memory_format=torch.channels_last)).float())
        return torch.cat([o.flatten(1) for o in outs])

    return run


def timed(run: Runner, images: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Images/s of one pass (after a warm-up pass: oneDNN builds its kernels per shape) and its
    features."""
    run(images)
    started = time.perf_counter()
    out = run(images)
    return len(images) / (time.perf_counter() - started), out


def agreement(ours: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """Per-image cosine similarity of two feature sets: (min, mean)."""
    cos = torch.nn.functional.cosine_similarity(ours.double(), reference.double(), dim=1)
    return float(cos.min()), float(cos.mean())


def variants(trunk: torch.nn.Module, args: argparse.Namespace) -> dict[str, Runner]:
    """Every setting measured: the plain loop first."""
    out = {f"plain fp32, batch {args.plain_batch}": plain(trunk, args.plain_batch)}
    for batch in args.batches:
        out[f"inference_mode + channels_last, batch {batch}"] = tuned(
            trunk, batch, jit=False, bf16=False
        )
        out[f"+ jit trace/freeze, batch {batch}"] = tuned(trunk, batch, jit=True, bf16=False)
        if native_bf16():
            out[f"+ bf16 autocast, batch {batch}"] = tuned(trunk, batch, jit=False, bf16=True)
    return out


def measure(backbone: str, images: torch.Tensor, args: argparse.Namespace) -> list[dict]:
    """Interleaved repeats of every variant on one backbone."""
    runners = variants(trunk_of(backbone), args)
    rows = []
    for repeat in range(args.repeats):
        reference = None
        for name, run in runners.items():
            load = os.getloadavg()[0]
            rate, features = timed(run, images)
            if reference is None:
                reference = features
            low, mean = agreement(features, reference)
            rows.append(
                {
                    "backbone": backbone,
                    "variant": name,
                    "repeat": repeat,
                    "load": round(load, 2),
                    "images_per_s": round(rate, 2),
                    "cos_min": low,
                    "cos_mean": mean,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Min and median images/s of each variant, its speed-up over the plain loop's median."""
    out = []
    for backbone in dict.fromkeys(r["backbone"] for r in rows):
        mine = [r for r in rows if r["backbone"] == backbone]
        names = list(dict.fromkeys(r["variant"] for r in mine))
        base = statistics.median(r["images_per_s"] for r in mine if r["variant"] == names[0])
        for name in names:
            rates = [r["images_per_s"] for r in mine if r["variant"] == name]
            out.append(
                {
                    "backbone": backbone,
                    "variant": name,
                    "min": min(rates),
                    "median": statistics.median(rates),
                    "speedup_median": round(statistics.median(rates) / base, 2),
                    "cos_min": min(r["cos_min"] for r in mine if r["variant"] == name),
                    "load": [r["load"] for r in mine if r["variant"] == name],
                }
            )
    return out


def main() -> None:
    """Measure and print JSON rows, then the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", nargs="+", default=["vgg16", "resnet18"])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--plain-batch", type=int, default=32)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    # Normalized-image statistics (mean 0, sd 1): what the trunk sees after the transform.
    images = torch.randn(args.images, 3, 224, 224, generator=generator)
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, capability "
        f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {native_bf16()}",
        flush=True,
    )
    rows = [row for backbone in args.backbones for row in measure(backbone, images, args)]
    result = {"rows": rows, "summary": summary(rows)}
    for row in result["summary"]:
        print(json.dumps(row), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
