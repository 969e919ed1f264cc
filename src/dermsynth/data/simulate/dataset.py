"""The dataset: Table 1 counts, the plan of rows and images, parallel rendering, the CSV."""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
from collections.abc import Collection, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from dermsynth.data.fst import FST_TYPES, UNKNOWN_FST
from dermsynth.data.manifest import PAPER_CONDITIONS
from dermsynth.data.simulate.render import frame_size, render_sample
from dermsynth.errors import DermsynthError
from dermsynth.io import atomic_write_bytes, atomic_write_csv

SIMULATED_NOTE = "simulated data: not real patients"

CSV_NAME = "fitzpatrick17k_simulated.csv"
IMAGES_DIRNAME = "images"
CSV_COLUMNS: tuple[str, ...] = (
    "md5hash",
    "fitzpatrick_scale",
    "fitzpatrick_centaur",
    "label",
    "nine_partition_label",
    "three_partition_label",
    "qc",
    "url",
    "url_alphanum",
)

# The paper's Table 1: images per condition for FST I..VI.
TABLE1: dict[str, tuple[int, ...]] = {
    "basal cell carcinoma": (85, 156, 112, 76, 24, 7),
    "folliculitis": (30, 97, 99, 51, 31, 9),
    "nematode infection": (15, 56, 79, 60, 32, 12),
    "neutrophilic dermatoses": (70, 115, 68, 51, 31, 15),
    "prurigo nodularis": (7, 28, 39, 56, 29, 9),
    "psoriasis": (113, 232, 101, 91, 64, 21),
    "squamous cell carcinoma": (100, 180, 122, 71, 40, 23),
}
# Rows with fitzpatrick_scale == -1 for the same conditions in the real Fitzpatrick 17k table.
UNKNOWN_FST_COUNTS: dict[str, int] = {
    "basal cell carcinoma": 8,
    "folliculitis": 25,
    "nematode infection": 6,
    "neutrophilic dermatoses": 11,
    "prurigo nodularis": 2,
    "psoriasis": 31,
    "squamous cell carcinoma": 45,
}
# nine_partition_label and three_partition_label of these conditions in the real table.
PARTITIONS: dict[str, tuple[str, str]] = {
    "basal cell carcinoma": ("malignant epidermal", "malignant"),
    "folliculitis": ("inflammatory", "non-neoplastic"),
    "nematode infection": ("inflammatory", "non-neoplastic"),
    "neutrophilic dermatoses": ("inflammatory", "non-neoplastic"),
    "prurigo nodularis": ("benign epidermal", "benign"),
    "psoriasis": ("inflammatory", "non-neoplastic"),
    "squamous cell carcinoma": ("malignant epidermal", "malignant"),
}
assert tuple(TABLE1) == PAPER_CONDITIONS


@dataclass(frozen=True)
class _Task:
    path: str
    condition: str
    fst: int  # the type the skin is rendered on (the hidden one for unknown-FST rows)
    seed: int
    image_size: int
    quality: int


def _seed_of(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def cell_counts(scale: float) -> dict[tuple[str, int], int]:
    """Images per (condition, FST) at ``scale``, FST -1 included (see the module docstring)."""
    counts: dict[tuple[str, int], int] = {}
    for condition, row in TABLE1.items():
        for fst, n in zip(FST_TYPES, row, strict=True):
            if n > 0:
                counts[(condition, fst)] = max(1, _round_half_up(scale * n))
        unknown = _round_half_up(scale * UNKNOWN_FST_COUNTS[condition])
        if unknown:
            counts[(condition, UNKNOWN_FST)] = unknown
    return counts


def _centaur(rng: np.random.Generator, fst: int) -> int:
    """A second annotator's type: mostly the same, sometimes one or two off, or unknown."""
    u = rng.random()
    if u < 0.04:
        return UNKNOWN_FST
    if u < 0.64:
        return fst
    off = 1 if u < 0.94 else 2
    candidates = [f for f in (fst - off, fst + off) if 1 <= f <= 6] or [fst]
    return int(candidates[int(rng.integers(len(candidates)))])


def plan_dataset(
    out_dir: Path,
    scale: float,
    random_seed: int,
    image_size: int,
    cells: Collection[tuple[str, int]] | None = None,
    id_prefix: str = "",
) -> tuple[list[dict[str, object]], list[_Task]]:
    """The CSV rows and the image tasks of a dataset (only ``cells`` if given), in a fixed order."""
    rows: list[dict[str, object]] = []
    tasks: list[_Task] = []
    images = out_dir / IMAGES_DIRNAME
    wanted = None if cells is None else set(cells)
    # A prefix also enters the key, so a reserve table draws other images than the main one.
    stem = f"dermsynth-sim:{id_prefix}:" if id_prefix else "dermsynth-sim:"
    for (condition, fst), n in cell_counts(scale).items():
        if wanted is not None and (condition, fst) not in wanted:
            continue
        nine, three = PARTITIONS[condition]
        weights = np.array(TABLE1[condition], dtype=float)
        for index in range(n):
            key = f"{stem}{random_seed}:{condition}:{fst}:{index}"
            md5 = id_prefix + hashlib.md5(key.encode()).hexdigest()
            meta = np.random.default_rng(_seed_of(key + ":meta"))
            shown = (
                fst
                if fst != UNKNOWN_FST
                else int(meta.choice(FST_TYPES, p=weights / weights.sum()))
            )
            centaur = _centaur(meta, shown)
            url = f"https://simulated.invalid/{md5}.jpg"
            rows.append(
                {
                    "md5hash": md5,
                    "fitzpatrick_scale": fst,
                    "fitzpatrick_centaur": centaur,
                    "label": condition,
                    "nine_partition_label": nine,
                    "three_partition_label": three,
                    "qc": "",
                    "url": url,
                    "url_alphanum": re.sub(r"[^0-9A-Za-z]", "", url) + ".jpg",
                }
            )
            tasks.append(
                _Task(
                    str(images / f"{md5}.jpg"),
                    condition,
                    shown,
                    _seed_of(key + ":image"),
                    image_size,
                    int(meta.integers(82, 96)),
                )
            )
    return rows, tasks


def _planned_size(task: _Task) -> tuple[int, int]:
    return frame_size(np.random.default_rng(task.seed), task.image_size)


def _is_valid(task: _Task) -> bool:
    """An existing image that decodes fully at its planned size is kept on resume."""
    path = Path(task.path)
    if not path.is_file():
        return False
    try:
        with Image.open(path) as img:
            if img.format != "JPEG" or img.size != _planned_size(task):
                return False
            img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False
    return True


def _run_task(task: _Task) -> bool:
    """Render and write one image unless a valid one is there; True when written."""
    if _is_valid(task):
        return False
    image = render_sample(task.condition, task.fst, task.seed, image_size=task.image_size).image
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=task.quality, optimize=False)
    atomic_write_bytes(task.path, buf.getvalue())
    return True


_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _check_cells(cells: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
    """The (condition, FST) cells asked for; an unknown condition or type stops with a message."""
    wanted: set[tuple[str, int]] = set()
    for cell in cells:
        try:
            condition, fst = cell
        except (TypeError, ValueError):
            raise DermsynthError(f"cells must be (condition, FST) pairs, got {cell!r}") from None
        if condition not in TABLE1:
            raise DermsynthError(
                f"unknown condition {condition!r} in cells; known: {', '.join(TABLE1)}"
            )
        if fst not in (*FST_TYPES, UNKNOWN_FST):
            raise DermsynthError(f"FST in cells must be 1-6 or {UNKNOWN_FST}, got {fst!r}")
        wanted.add((condition, int(fst)))
    if not wanted:
        raise DermsynthError("cells is empty; give at least one (condition, FST) pair")
    return wanted


def _n_workers(workers: int) -> int:
    if workers > 0:
        return workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def simulate_dataset(
    out_dir: str | os.PathLike[str],
    *,
    scale: float = 0.25,
    random_seed: int = 0,
    image_size: int = 512,
    workers: int = 0,
    progress: bool = True,
    cells: Iterable[tuple[str, int]] | None = None,
    id_prefix: str = "",
) -> Path:
    """Write a simulated dataset (JPEGs and a Fitzpatrick 17k-schema CSV); return the CSV path.

    ``scale`` multiplies the paper's Table 1 counts (0.25: about 700 images); ``image_size`` is
    the longest image side in pixels (sides vary 85-100% of it); ``workers`` processes render
    (0: one per core). Deterministic in ``random_seed``; images already there are kept.

    ``cells`` keeps only those (condition, FST) cells (their Table 1 counts at ``scale``);
    ``id_prefix`` starts every ``md5hash`` (and enters each image's random key): a reserve table
    of extra images, say of the target groups, whose ids never equal a table's unprefixed ids
    and whose images differ from its images, whatever the ``random_seed``.
    """
    if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
        raise DermsynthError(f"scale must be a positive number, got {scale!r}")
    if int(image_size) != image_size or image_size < 64:
        raise DermsynthError(f"image size must be at least 64 pixels, got {image_size!r}")
    if workers < 0:
        raise DermsynthError(f"workers must be 0 (one per core) or more, got {workers!r}")
    wanted = None if cells is None else _check_cells(cells)
    if id_prefix and not _PREFIX.fullmatch(id_prefix):
        raise DermsynthError(
            f"id prefix must be letters, digits, '-' or '_' (it names files), got {id_prefix!r}"
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DermsynthError(f"{out} exists and is not a folder")
    (out / IMAGES_DIRNAME).mkdir(parents=True, exist_ok=True)
    rows, tasks = plan_dataset(
        out, float(scale), int(random_seed), int(image_size), wanted, id_prefix
    )

    from tqdm.auto import tqdm

    n = min(_n_workers(workers), len(tasks))
    with tqdm(total=len(tasks), desc="simulate", unit="img", disable=not progress) as bar:
        if n <= 1:
            for task in tasks:
                _run_task(task)
                bar.update()
        else:
            chunk = max(1, min(16, len(tasks) // (n * 8)))
            with ProcessPoolExecutor(max_workers=n) as pool:
                for _ in pool.map(_run_task, tasks, chunksize=chunk):
                    bar.update()
    csv_path = out / CSV_NAME
    atomic_write_csv(csv_path, pd.DataFrame(rows, columns=list(CSV_COLUMNS)))
    return csv_path
