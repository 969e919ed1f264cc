"""Share a selected synthetic set: a Hugging Face ImageFolder or WebDataset shards, with a
dataset card and Croissant metadata that mark the set as synthetic.

:func:`export_selection` reads a selected manifest (``dermsynth select``'s CSV, with its
``selection.json`` beside it), takes the images a study trains on
(:func:`dermsynth.select.selection.training_selection`: k per seed, a reviewer's decisions
first) and writes ``OUT/``:

``imagefolder``   ``train/<image>.png`` and ``train/metadata.csv`` (``file_name`` and the
                  record's fields), read by ``datasets.load_dataset("imagefolder", data_dir=OUT)``
``webdataset``    ``shard-000000.tar`` ... (``<key>.png`` + ``<key>.json`` per image, with a
                  sidecar each, :mod:`dermsynth.generate.shards`), read by ``webdataset``

and, in both, ``README.md`` (the dataset card: generator, weights, parameters, seed images,
selection rule and scores, quality metrics where computed, the source data's licence terms
and a plain statement that the images are synthetic) and ``croissant.json`` (Croissant 1.0
JSON-LD with the RAI terms ``dataCollectionType: Synthetic`` and ``hasSyntheticData``).

A record is the image's manifest row without local file paths: seed id (``parent_id``),
condition (``label``), requested skin type (``fst``), prompt, generator and its parameters,
random seed, selection scores and decisions, and ``synthetic: true``.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dermsynth.data.manifest import load_manifest
from dermsynth.errors import DermsynthError
from dermsynth.io import atomic_folder, atomic_write_csv, atomic_write_json, atomic_write_text
from dermsynth.schema import MANIFEST_COLUMNS, SELECTION_COLUMNS, as_bool

FORMATS = ("imagefolder", "webdataset")
CARD_FILE = "README.md"
CROISSANT_FILE = "croissant.json"
METADATA_FILE = "metadata.csv"
SPLIT = "train"
DEFAULT_SHARD_SIZE = 1000
# Local file paths: meaningless to whoever loads the set, and they name the user's folders.
LOCAL_COLUMNS = ("path", "seed_crop", "seed_mask")
# Columns that differ per image; the rest, where one value holds for the whole set, are the
# generator's parameters.
PER_IMAGE = frozenset(
    {*MANIFEST_COLUMNS, *SELECTION_COLUMNS, "candidate", "prompt", "random_seed", "seconds"}
    | {"created", "device", "split", "test_group", "train_group", "synthetic"}
)
# Ids stay text even where every id happens to be a number ("007" is not 7).
ID_COLUMNS = frozenset({"image_id", "parent_id", "leak_nearest", "label", "prompt", "reason"})
SCORE_COLUMNS = ("score", "score_tone", "score_pathology", "score_similarity", "score_quality")
QUALITY_FILE = "synthetic_quality.csv"
QUALITY_SHOWN = (
    "condition",
    "fst_group",
    "n_synthetic",
    "n_real",
    "kid",
    "fid",
    "precision",
    "recall",
    "density",
    "coverage",
    "cas_ratio",
    "copy_rate",
    "tone_match",
)


@dataclass
class Selection:
    """The images of a selection to share, with the settings that chose them."""

    manifest: Path
    rows: pd.DataFrame  # the kept rows, paths resolved
    info: dict[str, Any]  # selection.json (empty when absent)
    candidates: int  # rows of the selected manifest
    run: dict[str, Any] = field(default_factory=dict)  # the generation run.json, if found
    simulated: bool = False  # the seed images were simulated (a study's study.json says so)


@dataclass
class ExportResult:
    """What an export wrote."""

    out: Path
    format: str
    images: int
    files: int
    notes: list[str]


def read_selection(selection: str | os.PathLike[str]) -> Selection:
    """A selected manifest (or its folder) and the rows a study trains on; refuses a manifest
    that no selection has been made on, naming ``dermsynth select``."""
    from dermsynth.select.selection import SELECTION_FILE, training_selection

    path = Path(selection)
    info_path = (path if path.is_dir() else path.parent) / SELECTION_FILE
    info = _read_json(info_path)
    if path.is_dir():
        if "manifest" not in info:
            raise DermsynthError(
                f"{path}: no {SELECTION_FILE} here; give the CSV written by `dermsynth select`, "
                "or run `dermsynth select` first"
            )
        path = path / str(info["manifest"])
    frame = load_manifest(path)
    if "selected" not in frame.columns or "rank" not in frame.columns:
        raise DermsynthError(
            f"{path} holds no selection (no 'selected' and 'rank' columns); run `dermsynth select` "
            "on the candidates first and export the manifest it writes"
        )
    base = path.resolve().parent
    frame["path"] = frame["path"].map(lambda p: p if not p or os.path.isabs(p) else str(base / p))
    k = info.get("k")
    kept = (
        training_selection(frame, int(k)) if isinstance(k, int) else frame[as_bool(frame["final"])]
    )
    if kept.empty:
        raise DermsynthError(
            f"{path}: no image is selected (of {len(frame)} candidates); run `dermsynth select` "
            "(or accept images with `dermsynth review`) first"
        )
    candidates = info.get("candidates")
    run = _read_json(Path(candidates).parent / "run.json") if candidates else {}
    return Selection(path, kept.reset_index(drop=True), info, len(frame), run, _simulated(path))


def _simulated(manifest: Path) -> bool:
    """True when the selection belongs to a study on simulated data (its study.json says so)."""
    for folder in list(manifest.resolve().parents)[:4]:
        study = _read_json(folder / "study.json")
        if study:
            return bool(study.get("config", {}).get("simulated"))
    return False


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _plain(value: Any) -> Any:
    """A JSON-ready scalar: numpy numbers become Python ones, missing values None."""
    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _typed(column: pd.Series) -> pd.Series:
    """Numbers where every value of a text column is a number (generator parameters are read
    back from CSV as text)."""
    if column.dtype != object and not pd.api.types.is_string_dtype(column):
        return column
    text = column.fillna("").astype(str).str.strip()
    try:
        numbers = pd.to_numeric(text.replace("", None))
    except (TypeError, ValueError):
        return column
    return numbers if text.ne("").any() else column


def records(rows: pd.DataFrame) -> pd.DataFrame:
    """The shared fields of every image: its manifest row without local paths, typed, with
    ``synthetic`` true."""
    table = rows.drop(columns=[c for c in LOCAL_COLUMNS if c in rows.columns])
    typed = {c: _typed(table[c]) for c in table.columns if c not in ID_COLUMNS}
    return table.assign(**typed, synthetic=True)


def _file_names(rows: pd.DataFrame) -> list[str]:
    from dermsynth.generate.shards import sample_key

    names = [
        f"{sample_key(i)}{Path(p).suffix.lower() or '.png'}"
        for i, p in zip(rows["image_id"], rows["path"], strict=True)
    ]
    if len(set(names)) != len(names):
        raise DermsynthError(
            "two selected images map to the same file name; their ids differ only in punctuation"
        )
    return names


def _check_images(rows: pd.DataFrame) -> None:
    lost = [
        (i, p) for i, p in zip(rows["image_id"], rows["path"], strict=True) if not Path(p).is_file()
    ]
    if lost:
        more = f" (and {len(lost) - 1} more)" if len(lost) > 1 else ""
        raise DermsynthError(
            f"selected image {lost[0][0]!r} is missing: {lost[0][1]}{more}; export from the "
            "folder the images were generated in, or fix the manifest's paths"
        )


def _write_imagefolder(folder: Path, selection: Selection, table: pd.DataFrame) -> list[str]:
    split = folder / SPLIT
    split.mkdir(parents=True)
    names = _file_names(selection.rows)
    for source, name in zip(selection.rows["path"], names, strict=True):
        shutil.copyfile(source, split / name)
    atomic_write_csv(
        split / METADATA_FILE, table.assign(file_name=names)[["file_name", *table.columns]]
    )
    return [f"{SPLIT}/{n}" for n in names]


def _samples(selection: Selection, table: pd.DataFrame) -> Iterator[Any]:
    from dermsynth.generate.shards import Sample, sample_key

    for (_, row), path in zip(table.iterrows(), selection.rows["path"], strict=True):
        record = {str(k): _plain(v) for k, v in row.items()}
        suffix = Path(path).suffix.lower().lstrip(".") or "png"
        yield Sample(sample_key(row["image_id"]), Path(path).read_bytes(), suffix, record)


def _write_webdataset(
    folder: Path, selection: Selection, table: pd.DataFrame, shard_size: int
) -> list[str]:
    from dermsynth.generate.shards import shard_path, write_shard

    samples = list(_samples(selection, table))
    written = []
    for index, start in enumerate(range(0, len(samples), shard_size)):
        tar = shard_path(folder, index)
        write_shard(tar, samples[start : start + shard_size])
        written.append(tar.name)
    return written


def export_selection(
    selection: str | os.PathLike[str],
    out: str | os.PathLike[str],
    fmt: str = "imagefolder",
    *,
    licence: str | None = None,
    quality: str | os.PathLike[str] | None = None,
    name: str | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> ExportResult:
    """Write a selected synthetic set as an ImageFolder or WebDataset with its dataset card and
    Croissant metadata (see the module doc). ``OUT`` is replaced whole, or not at all."""
    if fmt not in FORMATS:
        raise DermsynthError(f"--format must be {' or '.join(FORMATS)}, got {fmt!r}")
    if shard_size < 1:
        raise DermsynthError(f"--shard-size must be >= 1, got {shard_size}")
    target = Path(out)
    _check_target(target)
    chosen = read_selection(selection)
    _check_images(chosen.rows)
    table = records(chosen.rows)
    notes: list[str] = []
    quality_table = _quality(quality, chosen.manifest, notes)
    if licence is None:
        notes.append(
            "no --licence given: the card says the source data's licence terms apply but does not "
            "name them; name them before sharing the set"
        )
    title = name or _default_name(chosen)
    with atomic_folder(target) as folder:
        if fmt == "imagefolder":
            files = _write_imagefolder(folder, chosen, table)
        else:
            files = _write_webdataset(folder, chosen, table, shard_size)
        from dermsynth.export_card import croissant, dataset_card

        atomic_write_text(
            folder / CARD_FILE,
            dataset_card(title, fmt, chosen, table, licence, quality_table, files),
        )
        atomic_write_json(folder / CROISSANT_FILE, croissant(title, fmt, chosen, table, licence))
    count = sum(len(f) for _, _, f in os.walk(target))
    return ExportResult(target, fmt, len(table), count, notes)


def _check_target(target: Path) -> None:
    if target.exists() and not target.is_dir():
        raise DermsynthError(f"--out {target} is a file; give a folder for the exported set")
    if target.is_dir() and any(target.iterdir()) and not (target / CROISSANT_FILE).exists():
        raise DermsynthError(
            f"--out {target} holds other files; give a new or empty folder (an earlier export "
            "there is replaced)"
        )


def _default_name(selection: Selection) -> str:
    labels = sorted(set(selection.rows["label"]))
    return f"synthetic {', '.join(labels)}"


def _quality(
    quality: str | os.PathLike[str] | None, manifest: Path, notes: list[str]
) -> pd.DataFrame | None:
    """The synthetic-set quality table (``dermsynth evaluate synthetic --out``), if any."""
    path = Path(quality) if quality is not None else manifest.parent / QUALITY_FILE
    if path.is_dir():
        path = path / QUALITY_FILE
    if not path.is_file():
        if quality is not None:
            raise DermsynthError(
                f"--quality {quality}: no {QUALITY_FILE} there; write it with `dermsynth evaluate "
                "synthetic ... --out DIR`"
            )
        notes.append(
            "no quality metrics: run `dermsynth evaluate synthetic` and give its folder "
            "with --quality to put them in the card"
        )
        return None
    table = pd.read_csv(path)
    return table[[c for c in QUALITY_SHOWN if c in table.columns]]


def today() -> str:
    """The export's date (the card and Croissant's datePublished)."""
    return datetime.date.today().isoformat()
