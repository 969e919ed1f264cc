"""Benchmark (and look at) the demo generator on the demo's workload.

The demo makes 384 img2img candidates: 6 (direction x augmented condition) cells x 8 seeds x 8
candidates. This script renders such seeds with the simulator (seeds of the demo's own kind:
FST I-II and V-VI of three conditions), runs the pipeline as ``--backend demo`` does (batches,
one generator per image) and prints wall-clock and CPU time per image and for all 384. On a
busy machine the CPU time over the thread count estimates the wall time of an idle one.

Sampling settings default to the demo's (``DemoGenerator`` in :mod:`dermsynth.config`).
``--sheet`` writes a contact sheet of every condition x FST group (I-II, III-IV, V-VI): per row
two seeds, each followed by ``--sheet-variations`` variations; ``--text2img-sheet`` one of
pure samples, conditions (rows) x skin types I-VI (columns).

    PYTHONPATH=src python benchmarks/bench_demo_generator.py \
        --sheet /tmp/variations.png --text2img-sheet /tmp/samples.png
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from dermsynth.config import DemoGenerator
from dermsynth.data.manifest import PAPER_CONDITIONS
from dermsynth.data.simulate import render_image
from dermsynth.generate.backends.diffusers_backend import make_scheduler
from dermsynth.generate.demo import DemoPipeline, load_demo_pipeline

AUGMENTED = ("psoriasis", "squamous cell carcinoma", "neutrophilic dermatoses")
GROUPS = ((1, 2), (5, 6))
SHEET_GROUPS = ((1, 2), (3, 4), (5, 6))
CELL = 96  # pixels per image on a contact sheet
DEMO = DemoGenerator()


def demo_seeds(
    per_cell: int,
    conditions: tuple[str, ...] = AUGMENTED,
    groups: tuple[tuple[int, int], ...] = GROUPS,
) -> list[tuple[str, int, Image.Image]]:
    """(condition, FST, centre square) seeds: ``per_cell`` for each condition x FST group."""
    seeds = []
    for condition in conditions:
        for group in groups:
            for i in range(per_cell):
                fst = group[i % len(group)]
                image = render_image(condition, fst, 90_000 + 100 * fst + i, image_size=256)
                side = min(image.size)
                left, top = (image.width - side) // 2, (image.height - side) // 2
                seeds.append((condition, fst, image.crop((left, top, left + side, top + side))))
    return seeds


def run(
    pipe: DemoPipeline,
    jobs: list[tuple[str, int, Image.Image | None, int]],
    args: argparse.Namespace,
) -> tuple[list[Image.Image], float, float]:
    """Images of (condition, FST, seed image or None, random seed) jobs; wall and CPU seconds."""
    out: list[Image.Image] = []
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(jobs), args.batch_size):
        batch = jobs[start : start + args.batch_size]
        seeds = [image for _, _, image, _ in batch]
        out += pipe(
            [c for c, _, _, _ in batch],
            [f for _, f, _, _ in batch],
            images=None if seeds[0] is None else seeds,
            strength=args.strength,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            generator=[torch.Generator().manual_seed(s) for _, _, _, s in batch],
        ).images
    return out, time.perf_counter() - wall, time.process_time() - cpu


def sheet(rows: Sequence[Sequence[Image.Image | None]], labels: list[str], path: Path) -> None:
    """A grid of images, one labelled row per list (None leaves a gap)."""
    width = max(len(r) for r in rows) * CELL
    canvas = Image.new("RGB", (width + 150, len(rows) * CELL), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (row, label) in enumerate(zip(rows, labels, strict=True)):
        draw.text((4, r * CELL + CELL // 2 - 6), label, fill="black")
        for c, image in enumerate(row):
            if image is not None:
                tile = image.resize((CELL, CELL), Image.Resampling.LANCZOS)
                canvas.paste(tile, (150 + c * CELL, r * CELL))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def variation_sheet(pipe: DemoPipeline, args: argparse.Namespace) -> None:
    """Every condition x FST group: two seeds (one per type of the group) and their variations."""
    seeds = demo_seeds(2, PAPER_CONDITIONS, SHEET_GROUPS)
    k = args.sheet_variations
    jobs = [(c, f, im, 500 + 10 * i + j) for i, (c, f, im) in enumerate(seeds) for j in range(k)]
    images, _, _ = run(pipe, jobs, args)
    rows: list[list[Image.Image | None]] = []
    labels = []
    for i in range(0, len(seeds), 2):
        (condition, fst, first), (_, _, second) = seeds[i], seeds[i + 1]
        rows.append(
            [first, *images[i * k : (i + 1) * k], None, second, *images[(i + 1) * k : (i + 2) * k]]
        )
        labels.append(f"{condition[:19]} {fst}-{fst + 1}")
    sheet(rows, labels, args.sheet)
    print(f"wrote {args.sheet} (per row: seed, {k} variations; seed, {k} variations)")


def timing(pipe: DemoPipeline, args: argparse.Namespace) -> None:
    """Time the demo's workload: img2img candidates of the augmented conditions' seeds."""
    seeds = demo_seeds(args.seeds_per_cell)
    jobs = [
        (c, f, im, 1000 * i + k)
        for i, (c, f, im) in enumerate(seeds)
        for k in range(args.candidates)
    ]
    images, wall, cpu = run(pipe, jobs, args)
    n = len(images)
    evals = int(args.steps * args.strength) * (2 if args.guidance > 1 else 1)
    print(
        f"{n} img2img candidates at {pipe.resolution} px (steps {args.steps}, strength "
        f"{args.strength}, guidance {args.guidance}, {args.scheduler}, batch {args.batch_size}; "
        f"{evals} UNet passes per image): wall {wall:.1f} s ({n / wall:.1f} images/s), "
        f"CPU {cpu:.1f} s ({n * args.threads / cpu:.1f} images/s over {args.threads} "
        f"threads of an idle machine, i.e. about {cpu / args.threads:.0f} s); load average "
        f"{os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    """Parse options, time the workload, write the sheets asked for."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="model folder (default: the shipped one)")
    parser.add_argument("--steps", type=int, default=DEMO.steps)
    parser.add_argument("--strength", type=float, default=DEMO.effective_strength)
    parser.add_argument("--guidance", type=float, default=DEMO.guidance)
    parser.add_argument("--scheduler", default=DEMO.scheduler)
    parser.add_argument("--batch-size", type=int, default=DEMO.batch_size)
    parser.add_argument("--seeds-per-cell", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sheet", type=Path, help="contact sheet of seeds and variations")
    parser.add_argument("--sheet-variations", type=int, default=4)
    parser.add_argument("--no-timing", action="store_true", help="only the sheets")
    parser.add_argument("--text2img-sheet", type=Path, help="contact sheet of pure samples")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    pipe = load_demo_pipeline(args.model or None)
    scheduler = make_scheduler(args.scheduler, pipe.scheduler)
    if scheduler is not None:
        pipe.scheduler = scheduler
    if not args.no_timing:
        timing(pipe, args)
    if args.sheet:
        variation_sheet(pipe, args)
    if args.text2img_sheet:
        cells = [(c, f) for c in PAPER_CONDITIONS for f in range(1, 7) for _ in range(2)]
        samples, _, _ = run(pipe, [(c, f, None, 7 + i) for i, (c, f) in enumerate(cells)], args)
        rows = [samples[12 * r : 12 * (r + 1)] for r in range(len(PAPER_CONDITIONS))]
        sheet(rows, [c[:22] for c in PAPER_CONDITIONS], args.text2img_sheet)
        print(f"wrote {args.text2img_sheet} (columns: FST I, I, II, II, ... VI, VI)")


if __name__ == "__main__":
    main()
