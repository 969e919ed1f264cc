"""Benchmark (b): a 6-run grid (3 arms x 2 directions, frozen VGG16) on the fast path vs the
per-epoch slow path: wall time, peak memory, test accuracy.

Grid: the paper's seven conditions on simulated data; direction 1 trains on FST I-II and tests
on III-IV and V-VI, direction 2 trains on V-VI and tests on I-II and III-IV; arms: real,
real + seeds (``--seeds`` per augmented condition; the paper's 8 need a larger scale than a
CPU run affords), real + seeds + 4 "synthetic" images per seed (for
timing, extra simulated images of the seed's condition and skin type stand in for generated
ones). Each path runs the whole grid in its own process (peak RSS = that process's) from a
cold cache: image decoding and, on the fast path, every trunk feature are included.

    .venv/bin/python benchmarks/bench_fast_path.py --out /tmp/bench_fast
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

DIRECTIONS = (("1,2", ["3,4", "5,6"]), ("5,6", ["1,2", "3,4"]))
ARMS = ("real", "seed", "synthetic")


def build_grid(out: Path, scale: float, sim_size: int, seeds: int) -> list[Path]:
    """Simulate the data and write the six plan manifests; returns their paths."""
    from dermsynth.data.manifest import (
        PAPER_AUGMENTED,
        PAPER_CONDITIONS,
        load_manifest,
        write_manifest,
    )
    from dermsynth.data.simulate import simulate_dataset
    from dermsynth.data.splits import Direction, plan_splits

    real = load_manifest(
        simulate_dataset(out / "data", scale=scale, image_size=sim_size, workers=2, progress=False)
    )
    extra = load_manifest(
        simulate_dataset(
            out / "extra",
            scale=max(scale, 0.2),
            random_seed=1,
            image_size=sim_size,
            workers=2,
            progress=False,
        )
    )
    manifests = []
    for train, tests in DIRECTIONS:
        direction = Direction.build(train, tests)
        plan = plan_splits(
            real, PAPER_CONDITIONS, direction, PAPER_AUGMENTED, seeds_per_condition=seeds
        )
        synthetic = []
        for _, seed in plan[plan["split"] == "seed"].iterrows():
            pool = extra[
                (extra["label"] == seed["label"]) & (extra["fst"].isin(direction.seed_group))
            ]
            take = pool.sample(n=min(4, len(pool)), random_state=len(synthetic)).copy()
            take = take.assign(
                image_id=[f"syn_{seed['image_id']}_{i}" for i in range(len(take))],
                origin="synthetic",
                parent_id=seed["image_id"],
                split="train",
                test_group="",
            )
            synthetic.append(take)
        synth = pd.concat(synthetic)[plan.columns.intersection(synthetic[0].columns)]
        arms = {
            "real": plan[plan["split"] != "seed"],
            "seed": plan,
            "synthetic": pd.concat([plan, synth]),
        }
        for arm in ARMS:
            path = out / "grid" / f"{direction.name}_{arm}.csv"
            write_manifest(arms[arm], path)
            manifests.append(path)
    return manifests


def run_grid(
    manifests: list[Path], out: Path, path: str, views: int, image_size: int, epochs: int
) -> dict:
    """Train the grid on one path, cold cache; returns wall time, accuracies, peak RSS."""
    from dermsynth.config import ClassifierConfig
    from dermsynth.train.run import train_run

    shutil.rmtree(out, ignore_errors=True)
    config = ClassifierConfig(
        weights="none",
        epochs=epochs,
        image_size=image_size,
        path=path,
        views=views,
        progress=False,
        seed=0,
    )
    start = time.perf_counter()
    runs = []
    for manifest in manifests:
        result = train_run(manifest, out / manifest.stem, config, cache_dir=out / "cache")
        preds = result.predictions
        runs.append(
            {
                "run": manifest.stem,
                "train_rows": int(pd.read_csv(manifest)["split"].isin(["train", "seed"]).sum()),
                "test_rows": len(preds),
                "accuracy": float((preds["prediction"] == preds["label"]).mean()),
                "seconds": round(result.seconds, 1),
            }
        )
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "path": path,
        "views": views,
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak_mb),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_fast"))
    parser.add_argument("--scale", type=float, default=0.15)
    parser.add_argument("--seeds", type=int, default=4, help="seed images per augmented condition")
    parser.add_argument(
        "--sim-size", type=int, default=192, help="longest side of the simulated JPEGs"
    )
    parser.add_argument("--image-size", type=int, default=64, help="backbone input (crop) size")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument(
        "--views", type=int, nargs="+", default=[1, 2, 3], help="fast-path K values"
    )
    parser.add_argument("--child", nargs=2, metavar=("PATH", "VIEWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    grid = sorted((args.out / "grid").glob("*.csv"))
    if args.child:
        path, views = args.child[0], int(args.child[1])
        result = run_grid(
            grid, args.out / f"{path}-k{views}", path, views, args.image_size, args.epochs
        )
        print("RESULT " + json.dumps(result), flush=True)
        return
    if not grid:
        build_grid(args.out, args.scale, args.sim_size, args.seeds)
        grid = sorted((args.out / "grid").glob("*.csv"))
    sizes = {m.stem: pd.read_csv(m, dtype=str)["split"].value_counts().to_dict() for m in grid}
    print(json.dumps(sizes), flush=True)
    results = {
        "grid": sizes,
        "seeds": args.seeds,
        "epochs": args.epochs,
        "image_size": args.image_size,
        "scale": args.scale,
        "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
        "paths": [],
    }
    for path, views in [("features", k) for k in args.views] + [("images", 1)]:
        cmd = [
            sys.executable,
            __file__,
            "--out",
            str(args.out),
            "--image-size",
            str(args.image_size),
            "--epochs",
            str(args.epochs),
            "--child",
            path,
            str(views),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT "))
        result = json.loads(line[len("RESULT ") :])
        results["paths"].append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "runs"}), flush=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    slow = next(r for r in results["paths"] if r["path"] == "images")
    for fast in (r for r in results["paths"] if r["path"] == "features"):
        accs = [
            abs(a["accuracy"] - b["accuracy"])
            for a, b in zip(fast["runs"], slow["runs"], strict=True)
        ]
        mean = (
            sum(r["accuracy"] for r in fast["runs"]) / 6
            - sum(r["accuracy"] for r in slow["runs"]) / 6
        )
        fast["speedup"] = round(slow["wall_s"] / fast["wall_s"], 1)
        fast["mean_accuracy_diff_points"] = round(100 * mean, 2)
        fast["max_run_accuracy_diff_points"] = round(100 * max(accs), 2)
        print(
            json.dumps(
                {
                    k: fast[k]
                    for k in (
                        "views",
                        "speedup",
                        "mean_accuracy_diff_points",
                        "max_run_accuracy_diff_points",
                    )
                }
            ),
            flush=True,
        )
    results["date"] = time.strftime("%Y-%m-%d %H:%M")
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
