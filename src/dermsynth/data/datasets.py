"""A dataset from its config: the table through its preset (or the generic loader), the label
map applied, and the check that its images are where the table says.

:func:`load_dataset` is what :meth:`dermsynth.config.DatasetConfig.load` runs, so a study,
``dermsynth data ...`` and a notebook read a dataset the same way. :func:`check_images` tells
rows without an image apart from a missing image folder, and says whether the images come
from a folder the user has or from ``dermsynth data fetch``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from dermsynth.data.manifest import load_manifest
from dermsynth.data.presets import (
    PRESETS,
    LoadRequest,
    ToneChoice,
    custom_preset,
    load_preset,
    preset_of,
)
from dermsynth.data.tones import SCALES, ToneGroup, ToneScale, parse_tone_groups
from dermsynth.errors import DermsynthError
from dermsynth.io import atomic_write_csv
from dermsynth.schema import FST, MISSING_IMAGE_COLUMNS

if TYPE_CHECKING:
    from dermsynth.config import DatasetConfig


def _raters(config: DatasetConfig) -> tuple[str, ...]:
    if config.rater is None:
        return (config.fst_column,) if config.fst_column and config.preset else ()
    return (config.rater,) if isinstance(config.rater, str) else tuple(config.rater)


def _request(config: DatasetConfig) -> LoadRequest | None:
    """How to read the table through a preset; None for the generic loader's tables."""
    raters = _raters(config)
    name: str | None = config.preset
    if name is None and (raters or config.scale) and config.id_column is None:
        name = detect_preset(config.csv)
    if name is not None:
        preset = preset_of(name)
    elif raters or config.scale is not None:
        if config.id_column is None or config.label_column is None or not raters:
            raise DermsynthError(
                f"{config.csv}: a table of no preset with a rater or scale needs id_column, "
                "label_column and rater (the skin-tone column)"
            )
        preset = custom_preset(
            config.id_column, config.label_column, raters, config.scale or FST, config.path_column
        )
    else:
        return None
    return LoadRequest(
        preset=preset,
        images_dir=config.images,
        tones=ToneChoice(raters, config.consensus),
        label_column=config.label_column if name else None,
        labels_csv=config.labels_csv,
    )


def detect_preset(csv: Path) -> str | None:
    """The preset whose columns a table's header has, if any (the header alone is read)."""
    try:
        columns = set(pd.read_csv(csv, nrows=0).columns)
    except (OSError, ValueError):
        return None  # the loader names what is wrong with the file
    for name, preset in PRESETS.items():
        if preset.labels_table is None and set(preset.expected_columns()) <= columns:
            return name
    return None


def load_dataset(config: DatasetConfig, conditions: Sequence[str] | None = None) -> pd.DataFrame:
    """Load a dataset as a manifest: its preset (or the generic loader), then its label map.

    ``attrs``: ``scale`` (fst or mst), ``groups`` (its skin-tone groups), ``notes`` (what was
    left out and why), ``label_mapping`` (:class:`dermsynth.data.labels.LabelMapping`).
    """
    request = _request(config)
    if request is None:
        manifest = load_manifest(
            config.csv,
            fst_column=config.fst_column,
            id_column=config.id_column,
            label_column=config.label_column,
            path_column=config.path_column,
            images_dir=config.images,
        )
        manifest.attrs.update(scale=FST, bins=None, notes=[])
    else:
        manifest = load_preset(config.csv, request)
    scale = SCALES[manifest.attrs["scale"]]
    manifest.attrs["groups"] = tone_groups(config, scale, manifest.attrs.get("bins"))
    if config.label_map is not None:
        from dermsynth.data.labels import apply_label_map, read_label_map

        notes = list(manifest.attrs.get("notes", []))
        manifest, mapping = apply_label_map(manifest, read_label_map(config.label_map), conditions)
        manifest.attrs.update(notes=notes + mapping.lines(), label_mapping=mapping)
    return manifest


def tone_groups(
    config: DatasetConfig, scale: ToneScale, bins: Sequence[ToneGroup] | None = None
) -> list[ToneGroup]:
    """The dataset's skin-tone groups: ``groups`` of its config, else its rater's bins (DDI's
    pairs), else its scale's default; a group may not split a bin."""
    groups = parse_tone_groups(
        config.groups if config.groups is not None else (list(bins) if bins else None),
        scale,
        option=f"dataset {config.label}: groups",
    )
    for group in groups:
        split = [b for b in bins or () if set(b) & set(group) and not set(b) <= set(group)]
        if split:
            raise DermsynthError(
                f"dataset {config.label}: group {scale.label(group)} splits the rated group "
                f"{scale.label(split[0])} (this dataset rates skin tone in groups "
                f"{', '.join(scale.label(b) for b in bins or ())})"
            )
    return groups


# --------------------------------------------------------------------------- images


@dataclass
class ImageCheck:
    """Which rows of a table have no image file, and whether the folder itself is missing."""

    n_rows: int
    missing: pd.DataFrame  # MISSING_IMAGE_COLUMNS
    folders: list[Path] = field(default_factory=list)
    missing_folders: list[Path] = field(default_factory=list)

    @property
    def n_missing(self) -> int:
        """Rows without an image file."""
        return len(self.missing)


def check_images(manifest: pd.DataFrame) -> ImageCheck:
    """Look for every row's image file; a folder that does not exist is reported as such."""
    paths = manifest["path"].fillna("").astype(str)
    exists = paths.map(lambda p: bool(p) and Path(p).is_file())
    parents = sorted({Path(p).parent for p in paths if p})
    missing_folders = [p for p in parents if not p.is_dir()]
    missing = manifest.loc[~exists, list(MISSING_IMAGE_COLUMNS)].reset_index(drop=True)
    return ImageCheck(len(manifest), missing, parents, missing_folders)


def image_check_lines(
    check: ImageCheck, *, fetchable: bool, listing: Path | None = None
) -> list[str]:
    """What to tell the user: a missing folder as a folder; else how many rows lack an image,
    where they are listed, and whether to fill the folder or run ``dermsynth data fetch``."""
    if not check.n_missing:
        return [f"all {check.n_rows} image(s) found"]
    fetch = (
        "; or download them from the table's URLs with `dermsynth data fetch --out FOLDER`"
        if fetchable
        else ""
    )
    if check.missing_folders and len(check.missing_folders) == len(check.folders):
        names = ", ".join(str(f) for f in check.missing_folders[:3])
        return [
            f"image folder {names} does not exist: give the folder holding this dataset's images "
            f"(--images, dataset.images){fetch}"
        ]
    where = f"; listed in {listing}" if listing is not None else ""
    return [
        f"{check.n_missing} of {check.n_rows} row(s) have no image file{where}: copy those "
        f"files into the image folder{fetch}"
    ]


def write_missing(check: ImageCheck, out: Path) -> Path:
    """The rows without an image, as CSV (``image_id,label,path``)."""
    atomic_write_csv(out, check.missing)
    return out


def rater_agreement_of(
    config: DatasetConfig, raters: Sequence[str] | None = None, *, ita: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each rater's values and Cohen's kappa between every pair of them (see
    :func:`dermsynth.data.tones.rater_agreement`), on the dataset's rows.

    Default raters: every rater of the table on the dataset's scale, plus ``ita`` (from the
    images) when ``ita`` and the scale is FST. Returns (ratings, agreement).
    """
    from dermsynth.data.presets import bins_of, rating_table
    from dermsynth.data.tones import rater_agreement
    from dermsynth.schema import ITA_RATER

    request = _request(config)
    if request is None:
        name = detect_preset(config.csv)
        if name is None:
            raise DermsynthError(
                f"{config.csv}: say which columns are raters: --dataset for a published table, "
                "or --rater COLUMN (twice or more) with --id-column and --label-column"
            )
        request = LoadRequest(preset_of(name), config.images)
    several = isinstance(config.rater, list) and config.consensus is None
    # The table is loaded for its rows and columns; its tone here comes from the first rater.
    manifest = (config.updated(consensus="first") if several else config).load()
    preset, scale = request.preset, manifest.attrs["scale"]
    names = list(raters or [r.column for r in preset.raters if r.scale == scale])
    if ita and scale == FST and ITA_RATER not in names:
        names.append(ITA_RATER)
    scales = {
        FST if n == ITA_RATER else preset.rater(n).scale for n in names if n in preset.rater_names
    }
    unknown = [n for n in names if n not in preset.rater_names]
    if unknown or len(scales) > 1 or len(names) < 2:
        raise DermsynthError(
            f"{preset.title}: agreement needs two or more raters of one scale; its raters: "
            f"{', '.join(preset.rater_names)} (got {', '.join(names) or 'none'})"
        )
    ratings = rating_table(Path(config.csv), manifest, preset, names)
    return ratings, rater_agreement(ratings, SCALES[scales.pop()], bins_of(preset, names))
