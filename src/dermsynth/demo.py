"""``dermsynth demo``: the whole protocol on simulated data, end to end, on a laptop CPU.

It sits above the study and the report: it simulates a dataset, runs the packaged study
config (``demo.yaml``) on it and writes the report.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dermsynth.config import StudyConfig, load_config
from dermsynth.errors import DermsynthError
from dermsynth.report import build_report
from dermsynth.study.grid import directions_of
from dermsynth.study.runner import Echo, run_study, stderr_echo

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")
DEMO_SCALE = 0.5  # x the paper's Table 1 counts: about 1,400 images
DEMO_IMAGE_SIZE = 256
RESERVE_CSV = "reserve.csv"
RESERVE_SCALE_STEP = 0.05


def demo_config(data_csv: Path, reserve_csv: Path | None = None) -> StudyConfig:
    """The packaged demo config, reading the simulated table at ``data_csv`` (and the reserve
    of extra real images at ``reserve_csv``)."""
    config = load_config(DEMO_CONFIG)
    dataset = config.dataset.updated(csv=data_csv, reserve=reserve_csv)
    return config.model_copy(update={"dataset": dataset})


def reserve_scale(conditions: Sequence[str], group: Sequence[int], needed: int) -> float:
    """The smallest simulation scale (in steps of 0.05) giving every condition at least
    ``needed`` images in the skin-type group."""
    from dermsynth.data.simulate import cell_counts

    scale = RESERVE_SCALE_STEP
    while True:
        counts = cell_counts(scale)
        if all(sum(counts.get((c, t), 0) for t in group) >= needed for c in conditions):
            return scale
        scale = round(scale + RESERVE_SCALE_STEP, 2)


def simulate_reserve(folder: Path, config: StudyConfig, *, progress: bool = True) -> Path:
    """Extra simulated images of the augmented conditions in each direction's seed group, twice
    the full dose per cell: the extra-real arm takes one half, the synthetic-set metrics
    compare every arm's images with the other. Never in any test set (other ids, other images)."""
    from dermsynth.data.simulate import simulate_dataset
    from dermsynth.io import atomic_write_csv

    out = folder / RESERVE_CSV
    if out.exists():
        return out
    parts = []
    groups = dict.fromkeys(tuple(d.seed_group) for d in directions_of(config))
    for group in groups:
        scale = reserve_scale(config.augmented, group, 2 * config.full_dose)
        cells = [(c, t) for c in config.augmented for t in group]
        prefix = f"reserve{group[0]}{group[-1]}-"
        csv = simulate_dataset(
            folder,
            scale=scale,
            random_seed=0,
            image_size=DEMO_IMAGE_SIZE,
            progress=progress,
            cells=cells,
            id_prefix=prefix,
        )
        parts.append(pd.read_csv(csv, dtype=str, keep_default_na=False))
        csv.unlink()
    atomic_write_csv(out, pd.concat(parts, ignore_index=True))
    return out


def run_demo(out: str | Path, *, echo: Echo = stderr_echo, progress: bool = True) -> Path:
    """Simulate data, run the study, write the report; returns the report's path (resumable)."""
    from dermsynth.data.simulate import simulate_dataset

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DermsynthError(f"--out {out} is a file; give a folder for the demo")
    foreign = (
        sorted(p.name for p in out.iterdir() if p.name not in ("data", "reserve", "study"))
        if out.is_dir()
        else []
    )
    if foreign:
        raise DermsynthError(
            f"--out {out} holds other files ({', '.join(foreign[:3])}); give a new or empty folder "
            "(or the folder of an earlier demo, to resume it)"
        )
    started = time.perf_counter()
    echo(f"simulating a dataset shaped like the paper's Table 1 (x{DEMO_SCALE}) in {out / 'data'}")
    csv = simulate_dataset(
        out / "data", scale=DEMO_SCALE, random_seed=0, image_size=DEMO_IMAGE_SIZE, progress=progress
    )
    config = demo_config(csv.resolve())
    echo(f"simulating a reserve of extra images of the target skin types in {out / 'reserve'}")
    reserve = simulate_reserve(out / "reserve", config, progress=progress)
    config = demo_config(csv.resolve(), reserve.resolve())
    study = run_study(config, out / "study", echo=echo, progress=progress)
    report = build_report(study)
    echo(f"demo finished in {time.perf_counter() - started:.0f} s")
    return report
