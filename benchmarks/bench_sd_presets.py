"""Images/s and peak GPU memory of the synderm-inpaint preset: ours vs the follow-up package's loop.

Both make the same images the same way: Stable Diffusion inpainting of the central square at
strength 0.97, then the border at 0.95, DPM-Solver multistep, guidance 3.0, fp16 on the GPU,
the same prompts, seed crops and masks. Ours is ``dermsynth generate --preset synderm-inpaint``'s
backend (a seeded random stream per image, batches of ``--batch-size``, scaled-dot-product
attention). The reference is the follow-up package's configuration: batches of 16 and one
random stream shared by the whole run.

    python benchmarks/bench_sd_presets.py --model DIR_OR_HUB_ID --images 64   # a CUDA GPU
    python benchmarks/bench_sd_presets.py --tiny                              # CPU, tiny pipeline

Without a CUDA GPU (and without ``--tiny``) it prints one line and exits. The table is printed
as Markdown (and appended to ``--results`` if given).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dermsynth.config import PRESETS, generator_config
from dermsynth.generate.backends.base import Job, make_backend
from dermsynth.generate.backends.diffusers_backend import border_mask, lesion_mask
from dermsynth.generate.run import derive_seed
from dermsynth.generate.seeds import generated_mask

PRESET = "synderm-inpaint"
CONDITIONS = ("psoriasis", "lichen planus", "basal cell carcinoma", "folliculitis")
REFERENCE_BATCH = 16


def make_jobs(count: int, resolution: int, mask: Image.Image) -> list[Job]:
    """The same seed crops, masks, prompts and random seeds for both loops."""
    template = PRESETS[PRESET]["template"]
    jobs = []
    for i in range(count):
        rng = np.random.default_rng(i)
        crop = Image.fromarray((rng.random((resolution, resolution, 3)) * 255).astype("uint8"))
        seed_id = f"bench{i // 10}"
        prompt = template.format(condition=CONDITIONS[i % len(CONDITIONS)])
        jobs.append(Job(seed_id, i % 10, prompt, crop, mask, derive_seed(0, seed_id, i % 10)))
    return jobs


def _timed(run: Any, device: str) -> tuple[float, float | None]:
    """Seconds of ``run()`` and the peak GPU memory it reached (GiB; None on a CPU)."""
    import torch

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    run()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    return seconds, torch.cuda.max_memory_allocated() / 2**30 if cuda else None


def measure_ours(params: Any, jobs: list[Job], warmup: int) -> dict[str, Any]:
    """Our backend: load, warm up, then time the whole set."""
    backend = make_backend(params)
    backend.load()
    if warmup:
        backend.generate(jobs[:warmup])
    seconds, peak = _timed(lambda: backend.generate(jobs), backend.device_name())
    dtype = str(backend.torch_dtype()).removeprefix("torch.")
    return _row("ours", params.batch_size, dtype, len(jobs), seconds, peak)


def _reference_pipeline(model: str, device: str) -> Any:
    import diffusers
    import torch

    from dermsynth.generate.backends.tiny import tiny_pipeline

    if model == "tiny":
        pipe = tiny_pipeline("inpaint")
    else:
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        pipe = diffusers.StableDiffusionInpaintPipeline.from_pretrained(
            model, dtype=dtype, safety_checker=None, requires_safety_checker=False
        )
    pipe.scheduler = diffusers.DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def measure_reference(
    model: str, jobs: list[Job], steps: int, resolution: int, device: str, warmup: int
) -> dict[str, Any]:
    """The follow-up package's loop: batches of 16, one random stream, inpaint then outpaint."""
    import torch

    pipe = _reference_pipeline(model, device)
    recipe = PRESETS[PRESET]
    generator = torch.Generator(device).manual_seed(42)
    shared = {
        "guidance_scale": recipe["guidance"],
        "num_inference_steps": steps,
        "height": resolution,
        "width": resolution,
        "generator": generator,
    }

    def run(subset: list[Job]) -> None:
        for start in range(0, len(subset), REFERENCE_BATCH):
            batch = subset[start : start + REFERENCE_BATCH]
            prompts = [j.prompt for j in batch]
            first = pipe(
                prompt=prompts,
                image=[j.image for j in batch],
                mask_image=[lesion_mask(j.mask) for j in batch if j.mask is not None],
                strength=recipe["strength"],
                **shared,
            ).images
            pipe(
                prompt=prompts,
                image=first,
                mask_image=[border_mask(j.mask) for j in batch if j.mask is not None],
                strength=recipe["outpaint_strength"],
                **shared,
            )

    if warmup:
        run(jobs[:warmup])
    seconds, peak = _timed(lambda: run(jobs), device)
    dtype = str(pipe.unet.dtype).removeprefix("torch.")
    return _row("reference", REFERENCE_BATCH, dtype, len(jobs), seconds, peak)


def _row(
    name: str, batch: int, dtype: str, images: int, seconds: float, peak: float | None
) -> dict[str, Any]:
    return {
        "config": name,
        "batch": batch,
        "dtype": dtype,
        "images": images,
        "seconds": round(seconds, 3),
        "images_per_s": round(images / seconds, 4),
        "peak_gib": None if peak is None else round(peak, 2),
    }


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny offline pipeline, any device")
    parser.add_argument(
        "--model",
        default=PRESETS[PRESET]["model"],
        help="a diffusers inpainting folder or hub id (default: the preset's)",
    )
    parser.add_argument("--resolution", type=int, default=None, help="default 512 (64 tiny)")
    parser.add_argument("--images", type=int, default=None, help="default 64 (4 tiny)")
    parser.add_argument("--steps", type=int, default=None, help="default the preset's 50 (4 tiny)")
    parser.add_argument("--batch-size", type=int, default=16, help="our batch size")
    parser.add_argument("--warmup", type=int, default=2, help="images made before timing")
    parser.add_argument("--results", type=Path, default=None, help="append the Markdown here")
    return parser.parse_args()


def main() -> int:
    """Run both loops and print the comparison."""
    import torch

    args = _arguments()
    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        print("skipped: no CUDA GPU here (fp16 timings need one); --tiny checks the script on CPU")
        return 0
    model = "tiny" if args.tiny else args.model
    resolution = args.resolution or (64 if args.tiny else 512)
    images = args.images or (4 if args.tiny else 64)
    steps = args.steps or (4 if args.tiny else PRESETS[PRESET]["steps"])
    device = "cuda" if cuda else "cpu"
    params = generator_config(
        backend="tiny" if args.tiny else "diffusers",
        **({} if args.tiny else {"model": model}),
        preset=PRESET,
        steps=steps,
        resolution=resolution,
        batch_size=args.batch_size,
        device=device,
    )
    jobs = make_jobs(images, resolution, generated_mask(resolution, params.mask))
    warmup = min(args.warmup, images)
    rows = [
        measure_ours(params, jobs, warmup),
        measure_reference(model, jobs, steps, resolution, device, warmup),
    ]
    where = torch.cuda.get_device_name() if cuda else platform.processor() or "CPU"
    lines = [
        f"### {PRESET}, {model} at {resolution} px, {images} images, {steps} steps x 2 passes, "
        f"{where}",
        "",
        "| config | batch | dtype | images/s | peak GPU GiB |",
        "|---|---:|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['batch']} | {r['dtype']} | {r['images_per_s']} | "
            f"{'-' if r['peak_gib'] is None else r['peak_gib']} |"
        )
    ratio = rows[0]["images_per_s"] / rows[1]["images_per_s"]
    lines += ["", f"ours / reference images/s: {ratio:.2f}x", ""]
    table = "\n".join(lines)
    print(table)
    print(json.dumps(rows))
    if args.results:
        with args.results.open("a", encoding="utf-8") as handle:
            handle.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
