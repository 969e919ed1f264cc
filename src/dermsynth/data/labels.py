"""Label maps: an editable table from a dataset's labels to the study's conditions.

Datasets name conditions their own way (DDI's ``basal-cell-carcinoma-nodular``, PAD-UFES-20's
``BCC``, SCIN's ``Eczema``). A label map is a CSV with a row per dataset label::

    dataset_label,condition
    basal-cell-carcinoma-nodular,basal cell carcinoma
    melanoma-in-situ,

An empty ``condition`` leaves that label's images out on purpose. Labels the map does not list
are left out too, and listed (:attr:`LabelMapping.unmapped`): never dropped silently.
``dermsynth data label-map`` writes a first version to edit, every label of the table with its
count and, where a label is a condition's name, that condition filled in. A study condition no
row of the map leads to is refused (:func:`check_conditions`); a row with an empty
``dataset_label`` declares a condition the dataset does not have (its cells report n = 0).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dermsynth.data.manifest import normalise_name, read_text_table
from dermsynth.errors import DermsynthError
from dermsynth.io import atomic_write_csv
from dermsynth.schema import DATASET_LABEL, LABEL_MAP_COLUMNS

CONDITION = LABEL_MAP_COLUMNS[1]
_MAX_LISTED = 8


@dataclass(frozen=True)
class LabelMap:
    """Dataset label -> study condition ("" = left out on purpose), and the conditions the
    map declares absent from the dataset."""

    path: Path
    targets: dict[str, str]
    absent: frozenset[str] = frozenset()

    @property
    def conditions(self) -> set[str]:
        """Every condition the map leads to or declares absent."""
        return {c for c in self.targets.values() if c} | set(self.absent)


@dataclass
class LabelMapping:
    """What applying a map did: images per condition, labels left out on purpose, unmapped."""

    mapped: dict[str, int] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)
    unmapped: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """What a user is told: labels the map does not list are named with their counts."""
        out = []
        if self.unmapped:
            shown = ", ".join(f"{k!r} ({v})" for k, v in list(self.unmapped.items())[:_MAX_LISTED])
            more = len(self.unmapped) - _MAX_LISTED
            tail = f" and {more} more" if more > 0 else ""
            out.append(
                f"{sum(self.unmapped.values())} image(s) of {len(self.unmapped)} label(s) not in "
                f"the label map left out: {shown}{tail}; add them to the map (empty condition "
                "to leave them out on purpose)"
            )
        if self.excluded:
            out.append(
                f"{sum(self.excluded.values())} image(s) of {len(self.excluded)} label(s) the map "
                "leaves out on purpose"
            )
        return out


def read_label_map(path: str | os.PathLike[str]) -> LabelMap:
    """Read and check a label map CSV (``dataset_label,condition``; other columns ignored)."""
    path = Path(path)
    frame = read_text_table(path)
    missing = [c for c in LABEL_MAP_COLUMNS if c not in frame.columns]
    if missing:
        raise DermsynthError(
            f"{path}: a label map needs columns {', '.join(LABEL_MAP_COLUMNS)}; missing "
            f"{', '.join(missing)}; found {', '.join(frame.columns)}"
        )
    labels = frame[DATASET_LABEL].str.strip()
    conditions = frame[CONDITION].str.strip()
    absent = frozenset(conditions[(labels == "") & (conditions != "")])
    targets: dict[str, str] = {}
    for row, (label, condition) in enumerate(zip(labels, conditions, strict=True), 1):
        if not label:
            continue
        if label in targets and targets[label] != condition:
            raise DermsynthError(
                f"{path}, row {row} (line {row + 1}): {label!r} is mapped twice "
                f"({targets[label]!r} and {condition!r}); keep one row per label"
            )
        targets[label] = condition
    return LabelMap(path, targets, absent)


def check_conditions(label_map: LabelMap, conditions: Iterable[str]) -> None:
    """Refuse a map that leads to none of a study condition's images, in one line."""
    known = {normalise_name(c) for c in label_map.conditions}
    missing = [c for c in conditions if normalise_name(c) not in known]
    if missing:
        raise DermsynthError(
            f"{label_map.path}: no dataset label is mapped to condition(s) "
            f"{', '.join(repr(c) for c in missing)}; map a label to each, or add a row with an "
            "empty dataset_label to declare the dataset has none"
        )


def apply_label_map(
    manifest: pd.DataFrame, label_map: LabelMap, conditions: Sequence[str] | None = None
) -> tuple[pd.DataFrame, LabelMapping]:
    """Relabel a manifest by the map; the dataset's label is kept in ``dataset_label``.

    Images of labels mapped to "" or not in the map are left out (and counted). With
    ``conditions`` (the study's), the map must reach every one of them and its conditions are
    spelled as the study spells them.
    """
    if conditions is not None:
        check_conditions(label_map, conditions)
    spelling = {normalise_name(c): c for c in conditions or []}
    targets = {
        label: spelling.get(normalise_name(cond), cond) if cond else ""
        for label, cond in label_map.targets.items()
    }
    original = manifest["label"]
    mapped = original.map(targets)
    report = LabelMapping(
        mapped={
            str(k): int(v)
            for k, v in mapped[mapped.notna() & (mapped != "")].value_counts().items()
        },
        excluded=_counts(original[mapped == ""]),
        unmapped=_counts(original[mapped.isna()]),
    )
    keep = mapped.notna() & (mapped != "")
    out = manifest[keep].copy()
    out[DATASET_LABEL] = original[keep]
    out["label"] = mapped[keep].astype(str)
    out.attrs.update(manifest.attrs)
    out.attrs["label_map"] = str(label_map.path)
    return out.reset_index(drop=True), report


def _key(name: str) -> str:
    # DDI writes conditions with hyphens (basal-cell-carcinoma): a guess may ignore them.
    return normalise_name(name.replace("-", " "))


def _counts(labels: pd.Series) -> dict[str, int]:
    counts = labels.value_counts()
    return {str(k): int(v) for k, v in counts.items()}


def label_map_template(labels: pd.Series, conditions: Sequence[str] = ()) -> pd.DataFrame:
    """Every label of a table with its image count, most images first; ``condition`` filled
    where the label is one of ``conditions`` (case and spacing forgiven), else empty."""
    lookup = {_key(c): c for c in conditions}
    counts = labels.value_counts()
    order = sorted(counts.index, key=lambda label: (-counts[label], label))
    return pd.DataFrame(
        {
            DATASET_LABEL: order,
            CONDITION: [lookup.get(_key(label), "") for label in order],
            "n_images": [int(counts[label]) for label in order],
        }
    )


def write_label_map_template(
    labels: pd.Series, out: str | os.PathLike[str], conditions: Sequence[str] = ()
) -> pd.DataFrame:
    """Write :func:`label_map_template` to ``out`` (refusing to overwrite an edited map)."""
    out = Path(out)
    if out.exists():
        raise DermsynthError(f"{out} exists (an edited map?); give another --out or remove it")
    table = label_map_template(labels, conditions)
    atomic_write_csv(out, table)
    return table
