"""External validation: every run of a study also tested on each of its ``test_datasets``.

A study trains on its own dataset; each dataset of ``test_datasets`` (a dataset config, any
preset, scale and label map) is a second test set: every finished run scores its images, and
the results are computed by skin-tone group of *that* dataset's scale (FST or Monk), with the
intervals and paired tests of the study's own test sets (:mod:`dermsynth.study.evidence`).

Files (beside those of :mod:`dermsynth.study.layout`)::

    RUN/external/<name>/manifest.csv         the set as tested: study conditions, images found
    RUN/external/<name>/missing_images.csv   its rows without an image file
    RUN/runs/<run_id>/external/<name>.csv    one run's predictions on it (+ .json: which set)
    RUN/results/external_<name>.csv          accuracy per cell (as summary.csv), per group
    RUN/results/external_<name>_comparisons.csv   the synthetic arm against the others
    RUN/results/external_<name>.json         scale, groups, counts, what was left out, and
                                             the cells without images

An external set without images of a condition is not an error: its cells show n = 0 and are
listed in the JSON.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from dermsynth.data.manifest import normalise_name, write_manifest
from dermsynth.data.tones import SCALES, ToneGroup, ToneScale
from dermsynth.errors import DermsynthError
from dermsynth.io import atomic_write_csv, atomic_write_json
from dermsynth.schema import FST
from dermsynth.study import layout

if TYPE_CHECKING:
    from dermsynth.config import DatasetConfig, StudyConfig
    from dermsynth.study.runner import StudyRunner


@dataclass
class ExternalSet:
    """One external test dataset, loaded and reduced to what the study's models can score."""

    name: str
    manifest: pd.DataFrame
    scale: ToneScale
    groups: list[ToneGroup]
    notes: list[str] = field(default_factory=list)
    n_missing_images: int = 0
    missing: pd.DataFrame = field(default_factory=pd.DataFrame)

    def group_label(self, group: Sequence[int]) -> str:
        """A group as results tables write it: FST ``1-2``; Monk ``MST 1-3`` (so no reader
        takes it for Fitzpatrick types)."""
        label = self.scale.label(group)
        return label if self.scale.name == FST else f"MST {label}"


def set_names(config: StudyConfig) -> list[str]:
    """Each external dataset's folder-safe name; two with one name are refused."""
    names = [re.sub(r"[^A-Za-z0-9._-]+", "_", d.label) for d in config.test_datasets]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DermsynthError(
            f"test_datasets: two datasets are both named {repeated[0]!r}; give each its own name"
        )
    return names


def _study_labels(
    manifest: pd.DataFrame, conditions: Sequence[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Rows of the study's conditions, spelled as the study spells them."""
    spelling = {normalise_name(c): c for c in conditions}
    study = manifest["label"].map(lambda label: spelling.get(normalise_name(label)))
    outside = manifest.loc[study.isna(), "label"].value_counts()
    notes = []
    if len(outside):
        shown = ", ".join(f"{k!r} ({v})" for k, v in list(outside.items())[:5])
        notes.append(
            f"{int(outside.sum())} image(s) of {len(outside)} label(s) that are not study "
            f"conditions left out: {shown} (a label map relabels them)"
        )
    kept = manifest[study.notna()].assign(label=study[study.notna()])
    return kept.reset_index(drop=True), notes


def load_set(dataset: DatasetConfig, name: str, conditions: Sequence[str]) -> ExternalSet:
    """Load one external dataset: its label map checked against the study's conditions, rows
    of other conditions and rows without an image file left out (and said so)."""
    from dermsynth.data.datasets import check_images, image_check_lines

    try:
        manifest = dataset.load(list(conditions) if dataset.label_map else None)
    except DermsynthError as exc:
        raise DermsynthError(f"test_datasets ({name}): {exc}") from None
    scale = SCALES[manifest.attrs["scale"]]
    notes = list(manifest.attrs.get("notes", []))
    manifest, outside = _study_labels(manifest, conditions)
    check = check_images(manifest)
    if check.n_missing:
        notes += [f"{line}; left out" for line in image_check_lines(check, fetchable=False)]
        manifest = manifest[~manifest["image_id"].isin(set(check.missing["image_id"]))]
    manifest = manifest.reset_index(drop=True)
    if manifest.empty:
        raise DermsynthError(
            f"test_datasets ({name}): no image of the study's conditions with an image file "
            f"is left to test on ({'; '.join(notes + outside) or 'the table is empty'})"
        )
    return ExternalSet(
        name,
        manifest,
        scale,
        list(manifest.attrs.get("groups") or scale.groups),
        notes + outside,
        check.n_missing,
        check.missing,
    )


def load_external(config: StudyConfig, conditions: Sequence[str]) -> list[ExternalSet]:
    """Every external test dataset of a study, loaded and checked (before any training)."""
    return [
        load_set(dataset, name, conditions)
        for dataset, name in zip(config.test_datasets, set_names(config), strict=True)
    ]


def _set_dir(out: Path, name: str) -> Path:
    return out / "external" / name


def _predictions_path(out: Path, run_id: str, name: str) -> Path:
    return layout.run_dir(out, run_id) / "external" / f"{name}.csv"


def write_sets(out: Path, sets: Sequence[ExternalSet]) -> dict[str, str]:
    """Each set's manifest (and its rows without images); returns each manifest's hash."""
    hashes = {}
    for ext in sets:
        folder = _set_dir(out, ext.name)
        path = write_manifest(ext.manifest, folder / layout.MANIFEST_FILE)
        atomic_write_csv(folder / "missing_images.csv", ext.missing)
        hashes[ext.name] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return hashes


def score_external(runner: StudyRunner, sets: Sequence[ExternalSet]) -> None:
    """Predictions of every finished run on every external set; a run's predictions are
    reused while its model and the set are unchanged."""
    from dermsynth.train.predict import predict

    hashes = write_sets(runner.out, sets)
    for spec in runner.runs:
        folder = layout.run_dir(runner.out, spec.run_id)
        if not (folder / layout.DONE_FILE).exists():
            continue
        for ext in sets:
            target = _predictions_path(runner.out, spec.run_id, ext.name)
            marker = target.with_suffix(".json")
            if target.exists() and _marker(marker) == hashes[ext.name]:
                continue
            runner.echo(f"testing {spec.run_id} on {ext.name}")
            predict(
                folder,
                _set_dir(runner.out, ext.name) / layout.MANIFEST_FILE,
                target,
                split=None,
                cache_dir=layout.cache_dir(runner.out),
                skip_bad_images=True,
                progress=False,
            )
            atomic_write_json(marker, {"set": ext.name, "manifest": hashes[ext.name]})


def _marker(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["manifest"])
    except (OSError, ValueError, KeyError):
        return None


def _with_tone(preds: pd.DataFrame, ext: ExternalSet) -> pd.DataFrame:
    """Predictions whose ``fst`` column holds the set's own skin tone, in memory only.

    The evidence functions group rows by ``fst``; on a Monk-rated set the Monk value stands
    there, and the groups passed with it are Monk groups.
    """
    tone = ext.manifest.set_index("image_id")[ext.scale.column]
    return preds.assign(fst=preds["image_id"].map(tone).fillna(-1).astype(int))


def _runs(runner: StudyRunner, ext: ExternalSet) -> list[tuple[Any, int, pd.DataFrame]]:
    from dermsynth.evaluate.metrics import load_predictions

    runs = []
    for spec in runner.runs:
        path = _predictions_path(runner.out, spec.run_id, ext.name)
        if (layout.run_dir(runner.out, spec.run_id) / layout.DONE_FILE).exists() and path.exists():
            key = (spec.direction, spec.arm, spec.augmented, spec.dose)
            runs.append((key, spec.repeat, _with_tone(load_predictions(path), ext)))
    return runs


def _relabel(frame: pd.DataFrame, ext: ExternalSet) -> pd.DataFrame:
    labels = {ext.scale.label(g): ext.group_label(g) for g in ext.groups}
    return frame.assign(fst_group=frame["fst_group"].map(lambda g: labels.get(g, g)))


def collect_external(runner: StudyRunner, sets: Sequence[ExternalSet]) -> None:
    """Per external set: accuracy per cell with its interval, the synthetic arm's paired
    comparisons, and what the set holds (see the module doc)."""
    from dermsynth.study import evidence

    results = layout.results_dir(runner.out)
    seed = runner.config.random_seed
    for ext in sets:
        runs = _runs(runner, ext)
        if not runs:
            continue
        table = evidence.cells(runs)
        tests: dict[str, Sequence[ToneGroup]] = {name: ext.groups for name in runner.directions}
        summary = evidence.summary_table(table, runner.conditions, tests, seed)
        summary = _relabel(summary, ext).assign(dataset=ext.name, scale=ext.scale.name)
        atomic_write_csv(results / f"external_{ext.name}.csv", summary)
        comparisons = evidence.comparisons_table(table, runner.conditions, tests, seed)
        atomic_write_csv(
            results / f"external_{ext.name}_comparisons.csv",
            _relabel(comparisons, ext).assign(dataset=ext.name),
        )
        atomic_write_json(results / f"external_{ext.name}.json", _about(ext, summary))


def _about(ext: ExternalSet, summary: pd.DataFrame) -> dict[str, Any]:
    tones = ext.manifest[ext.scale.column]
    empty = summary[(summary["n"] == 0) & (summary["condition"] != "(all)")]
    return {
        "dataset": ext.name,
        "scale": ext.scale.name,
        "scale_title": ext.scale.title,
        "groups": [ext.group_label(g) for g in ext.groups],
        "images": len(ext.manifest),
        "images_per_group": {
            ext.group_label(g): int(tones.isin(list(g)).sum()) for g in ext.groups
        },
        "unknown_tone": int((tones == -1).sum()),
        "missing_images": ext.n_missing_images,
        "notes": ext.notes,
        "cells_without_images": sorted(
            {f"{r.condition} in {r.fst_group}" for r in empty.itertuples()}
        ),
    }


def read_external(
    run: Path, names: Sequence[str]
) -> dict[str, tuple[pd.DataFrame, dict[str, Any]]]:
    """The results of each external set a run folder has (for the report): summary and about."""
    from dermsynth.schema import coerce

    out = {}
    for name in names:
        path = layout.results_dir(run) / f"external_{name}.csv"
        about = path.with_suffix(".json")
        if not path.is_file() or not about.is_file():
            continue
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
        for column in (
            "accuracy",
            "ci_low",
            "ci_high",
            "accuracy_sd",
            "accuracy_min",
            "accuracy_max",
        ):
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
        frame = coerce(frame)
        frame["n"] = frame["n"].astype(int)
        frame["repeats"] = frame["repeats"].astype(int)
        out[name] = (frame, json.loads(about.read_text(encoding="utf-8")))
    return out
