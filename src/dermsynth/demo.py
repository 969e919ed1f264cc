"""``dermsynth demo``: the whole protocol on simulated data, end to end, on a laptop CPU.

It sits above the study and the report: it simulates a dataset, runs the packaged study
config (``demo.yaml``) on it and writes the report.
"""

from __future__ import annotations

import time
from pathlib import Path

from dermsynth.config import StudyConfig, load_config
from dermsynth.errors import DermsynthError
from dermsynth.report import build_report
from dermsynth.study.runner import Echo, run_study, stderr_echo

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")
DEMO_SCALE = 0.5  # x the paper's Table 1 counts: about 1,400 images
DEMO_IMAGE_SIZE = 256


def demo_config(data_csv: Path) -> StudyConfig:
    """The packaged demo config, reading the simulated table at ``data_csv``."""
    config = load_config(DEMO_CONFIG)
    return config.model_copy(
        update={"dataset": config.dataset.model_copy(update={"csv": data_csv})}
    )


def run_demo(out: str | Path, *, echo: Echo = stderr_echo, progress: bool = True) -> Path:
    """Simulate data, run the study, write the report; returns the report's path (resumable)."""
    from dermsynth.data.simulate import simulate_dataset

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DermsynthError(f"--out {out} is a file; give a folder for the demo")
    foreign = (
        sorted(p.name for p in out.iterdir() if p.name not in ("data", "study"))
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
    study = run_study(demo_config(csv.resolve()), out / "study", echo=echo, progress=progress)
    report = build_report(study)
    echo(f"demo finished in {time.perf_counter() - started:.0f} s")
    return report
