"""Images/s and peak GPU memory of Stable Diffusion inpainting: our defaults vs a reference.

Ours: DPM-Solver multistep, 25 steps, half precision on a GPU (fp32 on a CPU), PyTorch SDPA
attention, batches of ``--batch-size``. Reference (the authors' follow-up package): the
pipeline's own scheduler, 50 steps, batches of 16, fp16. Both get the same prompts, seed crops,
masks and per-image random seeds. Target: ours >= 2x the reference's images/s.

    python benchmarks/bench_generation.py                      # tiny pipeline, CPU, seconds
    python benchmarks/bench_generation.py --model DIR --resolution 512 --images 64   # a GPU

``--model`` is ``tiny`` (built offline) or a diffusers inpainting folder / hub id. The result
table is printed as Markdown (and appended to ``--results`` if given).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dermsynth.config import GeneratorSettings, MaskConfig, generator_config
from dermsynth.generate.backends.base import Job, make_backend
from dermsynth.generate.run import derive_seed
from dermsynth.generate.seeds import generated_mask

PROMPT = "An image of psoriasis on the {part} of a dark-skinned person."
PARTS = ("forearm", "back", "scalp", "knee", "elbow", "chest", "hand", "leg")


def make_jobs(count: int, resolution: int) -> list[Job]:
    """The same synthetic seed crops, masks, prompts and random seeds for every config."""
    mask = generated_mask(resolution, MaskConfig())
    jobs = []
    for i in range(count):
        rng = np.random.default_rng(i)
        crop = Image.fromarray((rng.random((resolution, resolution, 3)) * 255).astype("uint8"))
        seed_id = f"bench{i // 8}"
        jobs.append(
            Job(
                seed_id=seed_id,
                index=i % 8,
                prompt=PROMPT.format(part=PARTS[i % len(PARTS)]),
                image=crop,
                mask=mask,
                random_seed=derive_seed(0, seed_id, i % 8),
            )
        )
    return jobs


def measure(params: GeneratorSettings, jobs: list[Job], warmup: int) -> dict[str, float | str]:
    """Load, warm up on a few images, then time the whole set."""
    import torch

    backend = make_backend(params)
    backend.load()
    device = backend.device_name()
    cuda = device.startswith("cuda")
    if warmup:
        backend.generate(jobs[: min(warmup, params.batch_size)])
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    backend.generate(jobs)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    result = {
        "device": device,
        "dtype": str(backend.torch_dtype()).removeprefix("torch."),
        "scheduler": type(backend.pipe.scheduler).__name__,
        "steps": params.steps,
        "batch": params.batch_size,
        "images": len(jobs),
        "seconds": round(seconds, 3),
        "images_per_s": round(len(jobs) / seconds, 4),
        "peak_gib": round(peak, 2),
    }
    del backend
    if cuda:
        torch.cuda.empty_cache()
    return result


def main() -> None:
    """Run both configurations and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="tiny", help="tiny, or a diffusers inpainting folder / hub id"
    )
    parser.add_argument("--resolution", type=int, default=None, help="default: 512 (64 for tiny)")
    parser.add_argument(
        "--images", type=int, default=None, help="per configuration (default 8 tiny, 64)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="our batch size")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--results", type=Path, default=None, help="append the Markdown table here")
    args = parser.parse_args()

    tiny = args.model == "tiny"
    resolution = args.resolution or (64 if tiny else 512)
    args.images = args.images or (8 if tiny else 64)
    base = generator_config(
        backend="tiny" if tiny else "diffusers",
        model="" if tiny else args.model,
        mode="inpaint",
        resolution=resolution,
        device=args.device,
    )
    ours = base.updated(scheduler="dpm", steps=25, batch_size=args.batch_size, precision="auto")
    import torch

    on_gpu = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    reference = base.updated(
        scheduler="default", steps=50, batch_size=16, precision="fp16" if on_gpu else "fp32"
    )
    jobs = make_jobs(args.images, resolution)
    rows = {
        "ours": measure(ours, jobs, args.warmup),
        "reference": measure(reference, jobs, args.warmup),
    }
    speedup = rows["ours"]["images_per_s"] / rows["reference"]["images_per_s"]

    gpu = torch.cuda.get_device_name() if on_gpu else platform.processor() or "CPU"
    lines = [
        f"### SD inpainting, {args.model} at {resolution} px, {args.images} images, {gpu}",
        "",
        "| config | scheduler | steps | batch | dtype | images/s | peak GPU GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['scheduler']} | {r['steps']} | {r['batch']} | {r['dtype']} | "
            f"{r['images_per_s']} | {r['peak_gib']} |"
        )
    lines += ["", f"speed-up: {speedup:.2f}x (target >= 2x)", ""]
    table = "\n".join(lines)
    print(table)
    print(json.dumps(rows))
    if args.results:
        with args.results.open("a", encoding="utf-8") as handle:
            handle.write(table + "\n")


if __name__ == "__main__":
    main()
