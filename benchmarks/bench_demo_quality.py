"""Measure a demo generator's synthetic images against held-out simulated images (issue: item 2).

Two workloads, both scored with ``dermsynth evaluate synthetic`` on the augmented conditions'
target groups (FST I-II and V-VI of psoriasis, squamous cell carcinoma and neutrophilic
dermatoses):

* ``demo``: what ``dermsynth demo`` makes: its own simulated data (``scale=0.5, random_seed=0``),
  ``dermsynth data plan`` for both directions with 8 seeds per condition, 8 img2img candidates per
  seed (384 images, 64 per cell). Its numbers mix the generator with the 8 seeds it varies.
* ``many``: one variation each of 64 distinct seeds per cell, drawn from a simulation of its own
  (``random_seed=4040``): the generator, not the seed sample, sets these numbers.

Controls, scored the same way (``--controls``): each workload's seeds themselves (the centre
square of the original image, which ``generate`` crops and varies), shrunk to the model's
resolution and at full size (256 px), given as if they were the synthetic images (what a
generator that returned its seed unchanged would score; their copy rate is 1 by construction).

The real reference never meets the demo's test images: its own draw
(``simulate_dataset(scale=1.0, random_seed=2026, cells=the 12 target cells, id_prefix="heldout-")``);
the demo's test images enter only as ``--test`` (copy distances). Everything is cached in
``--work``; ``--dermsynth`` runs the generation with another install's CLI (to measure an older
model with the code it shipped with; evaluation always uses this one). ``--steps``,
``--strength``, ``--guidance`` and ``--scheduler`` (one of ``generate --scheduler``) default to
the demo's.
``--replicate k`` (k > 0) scores the many-seeds workload on fresh draws of its seeds and of the
held-out reference (random seeds 4040 + k, 2026 + k): a sampler setting or model chosen on the
default draws is confirmed on draws it was not chosen on.

    PYTHONPATH=src python benchmarks/bench_demo_quality.py --work /tmp/dq --out /tmp/dq/shipped \
        --workload demo --workload many --controls
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from PIL import Image

from dermsynth.config import SCHEDULERS, load_config
from dermsynth.data.fst import group_label
from dermsynth.data.manifest import load_manifest
from dermsynth.data.simulate import simulate_dataset
from dermsynth.demo import DEMO_CONFIG, DEMO_IMAGE_SIZE, DEMO_SCALE
from dermsynth.evaluate.synthetic import TABLE_COLUMNS, TABLE_FILE
from dermsynth.generate.seeds import square_around
from dermsynth.study.grid import directions_of

DEMO = load_config(DEMO_CONFIG)  # conditions, directions, seeds and sampler: the demo's own
AUGMENTED = tuple(DEMO.augmented)
TARGET_GROUPS = tuple(sorted(tuple(d.seed_group) for d in directions_of(DEMO)))
SHOWN = frozenset(
    {"condition", "fst_group", "n_synthetic", "n_real", "kid", "kid_std", "cas", "cas_low"}
    | {"cas_high", "cas_real", "copy_rate", "diversity_ratio", "ita_wasserstein"}
)


def _types(group: list[int]) -> str:
    return ",".join(map(str, group))


def plan_name(train: list[int]) -> str:
    """The cached plan of the direction trained on ``train`` (plan12.csv, plan56.csv)."""
    return f"plan{train[0]}{train[-1]}.csv"


def cli(*args: str | Path, exe: str | None = None) -> None:
    """Run a dermsynth command (this install's, or ``exe``); stop with its message on failure."""
    command = [exe] if exe else [sys.executable, "-c", "from dermsynth.cli import main; main()"]
    # Another install runs its own package: a PYTHONPATH pointing at this one's source would
    # make it import this one instead.
    env = {k: v for k, v in os.environ.items() if not (exe and k == "PYTHONPATH")}
    done = subprocess.run([*command, *map(str, args)], capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"{' '.join(map(str, args[:2]))} failed: {done.stderr.strip()[-800:]}")


def simulated(folder: Path, **kwargs: object) -> Path:
    csv = folder / "fitzpatrick17k_simulated.csv"
    return csv if csv.exists() else simulate_dataset(folder, progress=False, **kwargs)


def target_cells() -> list[tuple[str, int]]:
    return [(c, f) for c in AUGMENTED for g in TARGET_GROUPS for f in g]


def prepare(work: Path, replicate: int = 0) -> dict[str, Path]:
    """The demo's data and plans, the many-seeds table, the held-out reference and test set.

    ``replicate`` > 0 draws the many-seeds workload and the held-out reference afresh (random
    seeds 4040 + k and 2026 + k): a setting chosen on replicate 0 is confirmed on draws it
    was not chosen on.
    """
    tag = f"-r{replicate}" if replicate else ""
    data = simulated(work / "data", scale=DEMO_SCALE, random_seed=0, image_size=DEMO_IMAGE_SIZE)
    for direction in DEMO.directions:
        plan = work / plan_name(direction.train)
        if not plan.exists():
            augment = [a for c in AUGMENTED for a in ("--augment", c)]
            tests = [a for t in direction.test for a in ("--test-fst", _types(t))]
            cli("data", "plan", "--csv", data, "--conditions", ",".join(DEMO.conditions),
                "--train-fst", _types(direction.train), *tests, *augment,
                "--seeds-per-condition", str(DEMO.seeds_per_group), "--out", plan)  # fmt: skip
    test = work / "test.csv"
    if not test.exists():
        plans = [load_manifest(p) for p in plan_paths(work)]
        rows = pd.concat([p[p["split"] == "test"] for p in plans]).drop_duplicates("image_id")
        rows.to_csv(test, index=False)
    heldout = simulated(work / f"heldout{tag}", scale=1.0, random_seed=2026 + replicate,
                        image_size=256, cells=target_cells(), id_prefix="heldout-")  # fmt: skip
    many = work / f"manyseeds{tag}.csv"
    if not many.exists():
        draw = load_manifest(simulated(work / f"seeds3{tag}", scale=2.0,
                                       random_seed=4040 + replicate, image_size=256,
                                       cells=target_cells(), id_prefix="s3-"))  # fmt: skip
        picks = [
            draw[(draw["label"] == c) & draw["fst"].astype(int).isin(g)]
            .sort_values("image_id")
            .sample(n=64, random_state=0)
            for c in AUGMENTED
            for g in TARGET_GROUPS
        ]
        pd.concat(picks)[["image_id", "path", "label", "fst"]].to_csv(many, index=False)
    return {"test": test, "heldout": heldout, "many": many}


def plan_paths(work: Path) -> list[Path]:
    return [work / plan_name(d.train) for d in DEMO.directions]


def generate(workload: str, seeds: list[Path], out: Path, args: argparse.Namespace) -> Path:
    """The workload's candidates (one manifest) from its seed tables (plans, or the many-seeds
    table)."""
    settings = ["--backend", "demo", "--mode", "img2img", "--steps", str(args.steps),
                "--strength", str(args.strength), "--guidance", str(args.guidance),
                "--scheduler", args.scheduler, "--no-progress",
                *(["--model", args.model] if args.model else [])]  # fmt: skip
    if workload == "demo":
        per_seed = str(DEMO.candidates_per_seed)
        jobs = [(p, out / p.stem.replace("plan", "gen"), per_seed) for p in seeds]
    else:
        jobs = [(seeds[0], out / "gen", "1")]
    for table, folder, n in jobs:
        cli("generate", "--seeds", table, "--n", n, "--out", folder, *settings, exe=args.dermsynth)
    candidates = out / "candidates.csv"
    pd.concat([load_manifest(folder / "manifest.csv") for _, folder, _ in jobs]).to_csv(
        candidates, index=False
    )
    return candidates


def seed_copies(candidates: Path, seeds: list[Path], out: Path, side: int | None) -> Path:
    """Control: each candidate replaced by its seed's centre square (the crop ``generate``
    varies, taken from the original image), shrunk to ``side`` px or at full size."""
    frame = pd.read_csv(candidates, dtype=str, keep_default_na=False)
    originals = pd.concat([load_manifest(s) for s in seeds]).drop_duplicates("image_id")
    source = dict(zip(originals["image_id"], originals["path"], strict=True))
    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for image_id, parent in zip(frame["image_id"], frame["parent_id"], strict=True):
        path = folder / f"{image_id}.png"
        with Image.open(source[parent]) as handle:
            image = handle.convert("RGB")
        image = image.crop(square_around(None, image.size, 1.0))
        if side:
            image = image.resize((side, side), Image.Resampling.LANCZOS)
        image.save(path)
        paths.append(str(path))
    frame["path"] = paths
    frame.to_csv(out / "candidates.csv", index=False)
    return out / "candidates.csv"


def evaluate(candidates: Path, inputs: dict[str, Path], out: Path) -> pd.DataFrame:
    """``dermsynth evaluate synthetic`` of the target groups against the held-out reference."""
    cli("evaluate", "synthetic", "--candidates", candidates, "--real", inputs["heldout"],
        "--test", inputs["test"], "--groups", ",".join(map(group_label, TARGET_GROUPS)),
        "--format", "csv",
        "--out", out / "eval")  # fmt: skip
    frame = pd.read_csv(out / "eval" / TABLE_FILE)
    return frame[[c for c in TABLE_COLUMNS if c in SHOWN]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="cache of data and plans")
    parser.add_argument("--out", type=Path, required=True, help="folder of this measurement")
    parser.add_argument("--model", default="", help="demo model folder (default: shipped)")
    parser.add_argument("--dermsynth", default=None, help="another install's dermsynth CLI")
    parser.add_argument("--workload", action="append", choices=("demo", "many"))
    parser.add_argument("--controls", action="store_true", help="also score the seed copies")
    parser.add_argument("--resolution", type=int, default=64, help="side of the shrunk copies")
    parser.add_argument("--steps", type=int, default=DEMO.generator.steps)
    parser.add_argument("--strength", type=float, default=DEMO.generator.effective_strength)
    parser.add_argument("--guidance", type=float, default=DEMO.generator.guidance)
    parser.add_argument("--scheduler", default=DEMO.generator.scheduler, choices=SCHEDULERS)
    parser.add_argument(
        "--replicate", type=int, default=0, help="k > 0: fresh many-seeds and reference draws"
    )
    args = parser.parse_args()
    if args.replicate < 0:
        parser.error("--replicate must be >= 0")
    inputs = prepare(args.work, args.replicate)
    pd.set_option("display.width", 200)
    seed_tables = {
        "demo": plan_paths(args.work),
        "many": [inputs["many"]],
    }
    for workload in args.workload or ["demo"]:
        out = args.out / workload
        candidates = generate(workload, seed_tables[workload], out, args)
        runs = {"generator": candidates}
        if args.controls:
            for side in (args.resolution, None):
                name = f"seed copies at {side} px" if side else "seed copies, full size"
                folder = out / name.replace(",", "").replace(" ", "_")
                runs[name] = seed_copies(candidates, seed_tables[workload], folder, side)
        for name, path in runs.items():
            table = evaluate(path, inputs, path.parent if name != "generator" else out)
            print(f"== {workload} workload, {name} (load {os.getloadavg()[0]:.1f})")
            print(table.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
