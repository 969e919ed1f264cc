"""Dataset presets: each published table mapped onto the manifest, by name.

``--dataset fitzpatrick17k|ddi|pad-ufes-20|scin`` (``dataset: {preset: ...}`` in a config)
names the columns holding the image id, the image file, the label and the skin-tone ratings of
a published table, with its licence and where to obtain it; :func:`load_preset` turns such a
table into a manifest (:mod:`dermsynth.data.manifest`). A table of another schema is refused
with the columns expected and found. Skin tone comes from one rater, or from a consensus of
several (:mod:`dermsynth.data.tones`); the column of its scale (``fst`` or ``mst``) holds it.

A table of no preset with its own columns named (``id_column`` ...) and a ``rater`` on a
``scale`` goes through the same path (:func:`custom_preset`).
"""

from __future__ import annotations

import ast
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType

import pandas as pd

from dermsynth.data.manifest import (
    check_ids,
    check_labels,
    default_images_dir,
    read_text_table,
)
from dermsynth.data.tones import SCALES, ToneGroup, consensus, ita_ratings
from dermsynth.errors import DermsynthError
from dermsynth.schema import CONSENSUS_RULES, FST, ITA_RATER, MST, REAL, UNKNOWN_TONE

# Cells that mean "not rated" in the published tables.
UNRATED = frozenset({"", "-1", "-1.0", "NONE_SELECTED", "NONE_IDENTIFIED", "NA", "nan"})
_SHOWN_COLUMNS = 25


@dataclass(frozen=True)
class Rater:
    """A column of skin-tone ratings: its scale, who rated, and how its cells read.

    ``codes`` maps a cell's text to a value (SCIN ``FST3`` -> 3); other cells are read as
    numbers. ``bins``: the rater gives a group, not a value (DDI ``12`` = FST I-II); the value
    kept is the group's first and every analysis groups by these bins.
    """

    column: str
    scale: str
    who: str
    codes: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    bins: tuple[ToneGroup, ...] | None = None


@dataclass(frozen=True)
class DatasetPreset:
    """A published dataset's table: which columns mean what, and where it comes from."""

    name: str
    title: str
    id_column: str
    label_column: str
    image_column: str | None  # the image's file (name or path); None: <id><image_suffix>
    raters: tuple[Rater, ...]
    default_rater: str
    licence: str
    source: str
    image_suffix: str = ""
    image_columns: tuple[str, ...] = ()  # several images per row (SCIN): one manifest row each
    labels_table: str | None = None  # a second table joined on id_column (SCIN's labels)
    url_column: str | None = None  # where `dermsynth data fetch` can download the images
    parse_label: Callable[[str], str] | None = None
    other_labels: tuple[str, ...] = ()  # further label fields one may choose instead

    def rater(self, name: str) -> Rater:
        """The rater of column ``name``."""
        for rater in self.raters:
            if rater.column == name:
                return rater
        raise KeyError(name)

    @property
    def rater_names(self) -> list[str]:
        """Every rater this dataset's table has, then the ITA estimate from the images."""
        return [r.column for r in self.raters] + [ITA_RATER]

    def expected_columns(self, label_column: str | None = None) -> list[str]:
        """The columns this preset reads."""
        images = list(self.image_columns) or ([self.image_column] if self.image_column else [])
        columns = [self.id_column, label_column or self.label_column, *images]
        columns += [r.column for r in self.raters]
        return list(dict.fromkeys(columns))


def _fst_codes(prefix: str = "FST") -> Mapping[str, int]:
    return MappingProxyType({f"{prefix}{v}": v for v in SCALES[FST].values})


def top_weighted_label(text: str) -> str:
    """SCIN's ``weighted_skin_condition_label`` (``{'Eczema': 0.6, ...}``): its heaviest
    condition; empty when the case has none."""
    if not text.strip():
        return ""
    try:
        weights = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise DermsynthError(
            f"weighted_skin_condition_label: cannot read {text[:60]!r}; "
            "expected a mapping like {'Eczema': 0.6}"
        ) from None
    if not isinstance(weights, dict) or not weights:
        return ""
    return str(max(weights.items(), key=lambda item: (float(item[1]), str(item[0])))[0])


_SCIN_DERMATOLOGISTS = tuple(
    Rater(f"dermatologist_fitzpatrick_skin_type_label_{i}", FST, f"dermatologist {i}", _fst_codes())
    for i in (1, 2, 3)
)

PRESETS: dict[str, DatasetPreset] = {
    "fitzpatrick17k": DatasetPreset(
        name="fitzpatrick17k",
        title="Fitzpatrick 17k",
        id_column="md5hash",
        label_column="label",
        image_column=None,
        image_suffix=".jpg",
        raters=(
            Rater("fitzpatrick_scale", FST, "Scale AI annotators"),
            Rater("fitzpatrick_centaur", FST, "Centaur Labs annotators"),
        ),
        default_rater="fitzpatrick_scale",
        licence="CC BY-NC-SA 3.0",
        source="table: github.com/mattgroh/fitzpatrick17k; images: a folder from the "
        "maintainers (the table's URLs mostly answer 404), or `dermsynth data fetch`",
        url_column="url",
        other_labels=("nine_partition_label", "three_partition_label"),
    ),
    "ddi": DatasetPreset(
        name="ddi",
        title="Diverse Dermatology Images (DDI)",
        id_column="DDI_file",
        label_column="disease",
        image_column="DDI_file",
        raters=(
            Rater(
                "skin_tone",
                FST,
                "dermatologists, in pairs of types",
                MappingProxyType({"12": 1, "34": 3, "56": 5}),
                bins=((1, 2), (3, 4), (5, 6)),
            ),
        ),
        default_rater="skin_tone",
        licence="Stanford DDI research use agreement (no redistribution)",
        source="Stanford AIMI shared datasets (ddi-dataset.github.io), after accepting the "
        "research use agreement",
        other_labels=("malignant",),
    ),
    "pad-ufes-20": DatasetPreset(
        name="pad-ufes-20",
        title="PAD-UFES-20",
        id_column="img_id",
        label_column="diagnostic",
        image_column="img_id",
        raters=(Rater("fitspatrick", FST, "the examining clinician"),),
        default_rater="fitspatrick",
        licence="CC BY 4.0",
        source="Mendeley Data, doi:10.17632/zr7vgbcyr2.1 (metadata.csv and images/)",
    ),
    "scin": DatasetPreset(
        name="scin",
        title="SCIN (Skin Condition Image Network)",
        id_column="case_id",
        label_column="weighted_skin_condition_label",
        image_column=None,
        image_columns=("image_1_path", "image_2_path", "image_3_path"),
        raters=(
            Rater("fitzpatrick_skin_type", FST, "the contributor (self-reported)", _fst_codes()),
            *_SCIN_DERMATOLOGISTS,
            Rater("monk_skin_tone_label_us", MST, "lay graders in the US"),
            Rater("monk_skin_tone_label_india", MST, "lay graders in India"),
        ),
        default_rater="monk_skin_tone_label_us",
        licence="SCIN data use terms (see the dataset's repository); research and education",
        source="github.com/google-research-datasets/scin (bucket dx-scin-public-data: "
        "dataset/scin_cases.csv, dataset/scin_labels.csv, dataset/images/)",
        labels_table="scin_labels.csv",
        parse_label=top_weighted_label,
    ),
}
PRESET_NAMES: tuple[str, ...] = tuple(PRESETS)


def preset_of(name: str) -> DatasetPreset:
    """The preset called ``name``, or one line listing the known ones."""
    key = name.strip().lower()
    if key not in PRESETS:
        raise DermsynthError(f"unknown dataset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    return PRESETS[key]


def custom_preset(
    id_column: str,
    label_column: str,
    raters: Sequence[str],
    scale: str = FST,
    path_column: str | None = None,
) -> DatasetPreset:
    """A preset for a table of no published schema: its columns named by the user."""
    if scale not in SCALES:
        raise DermsynthError(f"unknown skin-tone scale {scale!r}; choose {' or '.join(SCALES)}")
    return DatasetPreset(
        name="csv",
        title="the table",
        id_column=id_column,
        label_column=label_column,
        image_column=path_column,
        image_suffix="" if path_column else ".jpg",
        raters=tuple(Rater(c, scale, c) for c in raters),
        default_rater=raters[0],
        licence="",
        source="",
    )


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class ToneChoice:
    """Which raters give a dataset its skin tone, and how several are combined."""

    raters: tuple[str, ...] = ()
    consensus: str | None = None


def choose_raters(preset: DatasetPreset, choice: ToneChoice) -> list[str]:
    """The raters to use (the preset's default when none is named), checked."""
    names = list(choice.raters) or [preset.default_rater]
    unknown = [n for n in names if n not in preset.rater_names]
    if unknown:
        raise DermsynthError(
            f"{preset.title} has no rater {unknown[0]!r}; its raters: "
            f"{', '.join(preset.rater_names)}"
        )
    if len(set(names)) != len(names):
        raise DermsynthError(f"rater {names[0]!r} is named twice")
    if len(names) > 1 and choice.consensus is None:
        raise DermsynthError(
            f"{len(names)} raters given ({', '.join(names)}) but no consensus rule: add "
            f"consensus ({'|'.join(CONSENSUS_RULES)}), or choose one rater"
        )
    scales = {_scale_of(preset, n) for n in names}
    if len(scales) > 1:
        raise DermsynthError(
            f"raters {', '.join(names)} rate on different scales ({', '.join(sorted(scales))}); "
            "a consensus needs raters of one scale"
        )
    return names


def _scale_of(preset: DatasetPreset, rater: str) -> str:
    return FST if rater == ITA_RATER else preset.rater(rater).scale


def bins_of(preset: DatasetPreset, raters: Sequence[str]) -> tuple[ToneGroup, ...] | None:
    """The coarse groups the chosen raters rate in (DDI's pairs), or None."""
    for name in raters:
        if name != ITA_RATER and preset.rater(name).bins is not None:
            return preset.rater(name).bins
    return None


def require_schema(
    csv_path: Path, frame: pd.DataFrame, preset: DatasetPreset, label_column: str | None = None
) -> None:
    """Refuse a table that lacks a column the preset reads: one line, expected and found."""
    expected = preset.expected_columns(label_column)
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        found = list(frame.columns)
        more = f" (+{len(found) - _SHOWN_COLUMNS} more)" if len(found) > _SHOWN_COLUMNS else ""
        raise DermsynthError(
            f"{csv_path}: not a {preset.title} table: missing {', '.join(missing)}; expected "
            f"columns {', '.join(expected)}; found {', '.join(found[:_SHOWN_COLUMNS])}{more}"
        )


def parse_ratings(csv_path: Path, frame: pd.DataFrame, rater: Rater) -> pd.Series:
    """A rater's cells as values of its scale (-1 = not rated); bad cells named by row."""
    text = frame[rater.column].str.strip()
    coded = text.map(dict(rater.codes)) if rater.codes else pd.Series(pd.NA, index=text.index)
    numbers = pd.to_numeric(text.where(coded.isna(), ""), errors="coerce")
    value = coded.astype("Float64").fillna(numbers.astype("Float64"))
    unrated = text.isin(UNRATED)
    allowed = set(rater.codes.values()) if rater.bins else set(SCALES[rater.scale].values)
    ok = unrated | value.isin(allowed).fillna(False)
    if not ok.all():
        bad = [int(i) for i in (~ok).to_numpy().nonzero()[0]]
        shown = ", ".join(rater.codes) if rater.bins else _describe(rater)
        more = f" ({len(bad) - 1} more rows like it)" if len(bad) > 1 else ""
        raise DermsynthError(
            f"{csv_path}, row {bad[0] + 1} (line {bad[0] + 2}): {rater.column} must be {shown} "
            f"or empty (not rated), got {text.iloc[bad[0]]!r}{more}"
        )
    return value.where(~unrated, UNKNOWN_TONE).fillna(UNKNOWN_TONE).astype(int)


def _describe(rater: Rater) -> str:
    scale = SCALES[rater.scale]
    values = f"{scale.values[0]}..{scale.values[-1]}"
    return f"{values} ({', '.join(list(rater.codes)[:2])}, ...)" if rater.codes else values


def rating_table(
    csv_path: Path, frame: pd.DataFrame, preset: DatasetPreset, raters: Sequence[str]
) -> pd.DataFrame:
    """One column per rater, values of its scale (-1 = not rated); ``ita`` from the images
    (needs the ``path`` column)."""
    columns = {}
    for name in raters:
        if name == ITA_RATER:
            columns[name] = ita_ratings(frame["path"])
        else:
            columns[name] = parse_ratings(csv_path, frame, preset.rater(name))
    return pd.DataFrame(columns, index=frame.index)


def _join_labels(
    csv_path: Path, frame: pd.DataFrame, preset: DatasetPreset, labels_csv: Path | None
) -> pd.DataFrame:
    if preset.labels_table is None:
        return frame
    if labels_csv is None:
        beside = csv_path.parent / preset.labels_table
        if not beside.is_file() or preset.label_column in frame.columns:
            return frame  # a table already merged, or the labels are not there (named below)
        labels_csv = beside
    labels = read_text_table(labels_csv)
    if preset.id_column not in labels.columns:
        raise DermsynthError(f"{labels_csv}: no {preset.id_column!r} column to join on")
    shared = [c for c in labels.columns if c in frame.columns and c != preset.id_column]
    return frame.merge(labels.drop(columns=shared), on=preset.id_column, how="left").fillna("")


def _one_row_per_image(frame: pd.DataFrame, preset: DatasetPreset) -> pd.DataFrame:
    """SCIN-like tables hold up to three images per case: one row per image, empty ones out."""
    if not preset.image_columns:
        return frame.assign(_image=frame[preset.image_column] if preset.image_column else "")
    parts = []
    for column in preset.image_columns:
        part = frame.assign(_image=frame[column].str.strip())
        parts.append(part[part["_image"] != ""])
    return pd.concat(parts).sort_index(kind="stable").reset_index(drop=True)


def _ids_and_paths(
    csv_path: Path, frame: pd.DataFrame, preset: DatasetPreset, images_dir: Path | None
) -> tuple[pd.Series, pd.Series]:
    folder = images_dir if images_dir is not None else default_images_dir(csv_path)
    if preset.image_columns:
        names = frame["_image"].map(lambda p: PurePosixPath(p).name)
        ids = names.map(lambda n: PurePosixPath(n).stem)
    else:
        ids = frame[preset.id_column].str.strip()
        names = frame["_image"].str.strip() if preset.image_column else ids + preset.image_suffix
    paths = names.map(lambda n: n if os.path.isabs(n) else str(folder / n))
    return ids, paths


def _labels(frame: pd.DataFrame, preset: DatasetPreset, label_column: str) -> pd.Series:
    labels = frame[label_column].str.strip()
    if preset.parse_label is not None and label_column == preset.label_column:
        labels = labels.map(preset.parse_label)
    return labels


@dataclass(frozen=True)
class LoadRequest:
    """How to read a table: its preset, image folder, raters, label field, second table."""

    preset: DatasetPreset
    images_dir: Path | None = None
    tones: ToneChoice = ToneChoice()
    label_column: str | None = None
    labels_csv: Path | None = None


def load_preset(csv_path: str | os.PathLike[str], request: LoadRequest) -> pd.DataFrame:
    """Load a table in a preset's schema into a validated manifest.

    The skin tone of the chosen rater(s) goes to the column of its scale (``fst`` or ``mst``;
    ``fst`` is -1 on an MST-rated table); the source columns are kept. Rows without a label
    (SCIN cases no dermatologist labelled) are left out and counted in ``attrs["notes"]``.
    """
    csv_path, preset = Path(csv_path), request.preset
    frame = read_text_table(csv_path)
    if frame.empty:
        raise DermsynthError(f"{csv_path}: the table has a header but no rows")
    frame = _join_labels(csv_path, frame, preset, request.labels_csv)
    label_column = request.label_column or preset.label_column
    require_schema(csv_path, frame, preset, label_column)
    raters = choose_raters(preset, request.tones)
    frame = _one_row_per_image(frame, preset)
    ids, paths = _ids_and_paths(csv_path, frame, preset, request.images_dir)
    frame = frame.assign(path=paths)
    labels = _labels(frame, preset, label_column)
    notes = []
    unlabelled = labels == ""
    if unlabelled.any() and preset.parse_label is not None:
        notes.append(f"{int(unlabelled.sum())} image(s) without a {label_column} left out")
        keep = ~unlabelled
        frame, ids, labels = frame[keep], ids[keep], labels[keep]
    check_ids(csv_path, ids, preset.id_column)
    check_labels(csv_path, labels, label_column)
    tone, scale = _tone(csv_path, frame, preset, raters, request.tones.consensus)
    out = pd.DataFrame(
        {
            "image_id": ids,
            "path": frame["path"],
            "label": labels,
            FST: tone if scale == FST else UNKNOWN_TONE,
            "origin": REAL,
            "parent_id": "",
        }
    )
    if scale == MST:
        out[MST] = tone
    used = {"_image", "path", preset.id_column, label_column, *out.columns}
    extra = frame[[c for c in frame.columns if c not in used]]
    out = pd.concat([out, extra], axis=1).reset_index(drop=True)
    out.attrs.update(
        source=preset.name,
        csv=str(csv_path),
        fst_column=_rater_text(raters, request.tones.consensus),
        scale=scale,
        bins=bins_of(preset, raters),
        notes=notes,
    )
    return out


def _rater_text(raters: Sequence[str], rule: str | None) -> str:
    return raters[0] if len(raters) == 1 else f"{rule} of {', '.join(raters)}"


def _tone(
    csv_path: Path,
    frame: pd.DataFrame,
    preset: DatasetPreset,
    raters: Sequence[str],
    rule: str | None,
) -> tuple[pd.Series, str]:
    scale = _scale_of(preset, raters[0])
    ratings = rating_table(csv_path, frame, preset, raters)
    if len(raters) == 1:
        return ratings.iloc[:, 0], scale
    bins = bins_of(preset, raters)
    if bins is not None:
        # A pair-rated column (DDI) and a typed one: combine at the pairs' resolution.
        for column in ratings.columns:
            for group in bins:
                ratings[column] = ratings[column].mask(ratings[column].isin(group), group[0])
    return consensus(ratings, rule or "first", SCALES[scale]), scale
