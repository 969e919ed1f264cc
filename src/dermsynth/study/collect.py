"""Collect a study's results: metrics of every finished run, the evidence, Figure 2's images.

Writes ``RUN/results/`` (see :mod:`dermsynth.study.layout`): ``runs.csv`` (every run and its
status), ``accuracy.csv`` and ``groups.csv`` (each finished run's metrics from
:mod:`dermsynth.evaluate.metrics`), ``paired.csv`` (each run against ``real`` and ``real+seed``
of its repeat, from :mod:`dermsynth.evaluate.paired`), ``summary.csv``, ``comparisons.csv`` and
``fairness.csv`` (:mod:`dermsynth.study.evidence`), ``findings.csv`` and ``findings.json``
(:mod:`dermsynth.study.findings`), and ``figure2.csv`` (seeds and their kept synthetic images).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pandas as pd

from dermsynth.arms import POOL_SYNTHETIC, REAL, REAL_SEED, SYNTHETIC
from dermsynth.io import atomic_write_csv, atomic_write_json
from dermsynth.schema import FIGURE2_COLUMNS, PAIRED_KEYS, RUN_KEYS, SEED
from dermsynth.study import layout
from dermsynth.study.grid import RunSpec

if TYPE_CHECKING:
    from dermsynth.study.runner import StudyRunner


def _keys_first(frame: pd.DataFrame, keys: tuple[str, ...]) -> pd.DataFrame:
    first = [c for c in keys if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def finished_predictions(
    runner: StudyRunner,
) -> tuple[list[dict[str, object]], dict[str, pd.DataFrame]]:
    """Every run with its status, and the predictions of the finished ones by run id."""
    from dermsynth.evaluate.metrics import load_predictions

    status: list[dict[str, object]] = []
    predictions: dict[str, pd.DataFrame] = {}
    for spec in runner.runs:
        folder = layout.run_dir(runner.out, spec.run_id)
        done = (folder / layout.DONE_FILE).exists()
        status.append(
            {
                "run_id": spec.run_id,
                **dataclasses.asdict(spec),
                "status": "done" if done else "missing",
            }
        )
        if done:
            predictions[spec.run_id] = load_predictions(folder / "predictions.csv")
    return status, predictions


def run_metrics(
    runner: StudyRunner, predictions: dict[str, pd.DataFrame]
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Accuracy per condition x group and the group summaries of every finished run."""
    from dermsynth.evaluate.metrics import evaluate_predictions

    accuracy, groups = [], []
    for spec in runner.runs:
        if spec.run_id not in predictions:
            continue
        meta = {"run_id": spec.run_id, **dataclasses.asdict(spec)}
        tests = list(runner.directions[spec.direction].tests)
        evaluation = evaluate_predictions(predictions[spec.run_id], tests)
        accuracy.append(evaluation.table.assign(**meta))
        groups.append(evaluation.summary.assign(**meta))
    if not accuracy:
        return None, None
    return (
        _keys_first(pd.concat(accuracy, ignore_index=True), RUN_KEYS),
        _keys_first(pd.concat(groups, ignore_index=True), RUN_KEYS),
    )


def baselines_of(spec: RunSpec) -> list[RunSpec]:
    """The runs a run is compared with, image by image: ``real``, and for the synthetic arm
    ``real+seed`` of the same condition (same direction and repeat)."""
    if spec.arm == REAL:
        return []
    out = [RunSpec(spec.direction, REAL, repeat=spec.repeat)]
    if spec.arm == SYNTHETIC:
        out.append(RunSpec(spec.direction, REAL_SEED, spec.augmented, repeat=spec.repeat))
    return out


def paired_comparisons(runner: StudyRunner, predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """McNemar and a bootstrap CI of the difference for each run against its baselines."""
    from dermsynth.evaluate.paired import compare_predictions

    rows = []
    for spec in runner.runs:
        if spec.run_id not in predictions:
            continue
        for base in baselines_of(spec):
            if base.run_id not in predictions:
                continue
            table = compare_predictions(
                predictions[base.run_id],
                predictions[spec.run_id],
                list(runner.directions[spec.direction].tests),
                random_seed=runner.config.random_seed,
            )
            rows.append(
                table.assign(
                    direction=spec.direction,
                    augmented=spec.augmented,
                    repeat=spec.repeat,
                    arm_a=base.arm,
                    arm_b=spec.arm,
                    dose_b=spec.dose,
                )
            )
    if not rows:
        return pd.DataFrame(columns=list(PAIRED_KEYS))
    return _keys_first(pd.concat(rows, ignore_index=True), PAIRED_KEYS)


def figure2_rows(runner: StudyRunner) -> pd.DataFrame:
    """Each seed with the synthetic images the study trains on, best-ranked first."""
    rows = []
    if SYNTHETIC in runner.config.arms:
        for name, plan in runner.plan.splits.items():
            seeds = plan[plan["split"] == SEED].set_index("image_id")
            for condition in runner.augmented:
                if not layout.selection_path(runner.out, name, condition).exists():
                    continue
                kept = runner.pool(name, condition, POOL_SYNTHETIC)
                for row in kept.sort_values(["parent_id", "rank"]).itertuples():
                    rows.append(
                        {
                            "direction": name,
                            "condition": condition,
                            "seed_id": row.parent_id,
                            "seed_path": seeds.loc[str(row.parent_id), "path"]
                            if row.parent_id in seeds.index
                            else "",
                            "synthetic_path": row.path,
                            "rank": row.rank,
                        }
                    )
    return pd.DataFrame(rows, columns=list(FIGURE2_COLUMNS))


def write_evidence(runner: StudyRunner, predictions: dict[str, pd.DataFrame]) -> None:
    """Summaries over repeats, comparisons between arms, fairness, and the findings."""
    from dermsynth.study import evidence
    from dermsynth.study.findings import findings_table, headline

    runs = [
        ((s.direction, s.arm, s.augmented, s.dose), s.repeat, predictions[s.run_id])
        for s in runner.runs
        if s.run_id in predictions
    ]
    tests = {name: d.tests for name, d in runner.directions.items()}
    seed = runner.config.random_seed
    table = evidence.cells(runs)
    results = layout.results_dir(runner.out)
    summary = evidence.summary_table(table, runner.conditions, tests, seed)
    atomic_write_csv(results / "summary.csv", summary)
    comparisons = evidence.comparisons_table(table, runner.conditions, tests, seed)
    atomic_write_csv(results / "comparisons.csv", comparisons)
    atomic_write_csv(results / "fairness.csv", evidence.fairness_table(runs, tests))
    findings = findings_table(comparisons, runner.config.full_dose)
    atomic_write_csv(results / "findings.csv", findings)
    atomic_write_json(
        results / "findings.json",
        {"headline": headline(findings), "findings": findings.to_dict(orient="records")},
    )


def collect_results(runner: StudyRunner) -> None:
    """Write every results table of the study (see the module doc)."""
    status, predictions = finished_predictions(runner)
    results = layout.results_dir(runner.out)
    atomic_write_csv(results / "runs.csv", pd.DataFrame(status))
    accuracy, groups = run_metrics(runner, predictions)
    if accuracy is not None and groups is not None:
        atomic_write_csv(results / "accuracy.csv", accuracy)
        atomic_write_csv(results / "groups.csv", groups)
    atomic_write_csv(results / "paired.csv", paired_comparisons(runner, predictions))
    atomic_write_csv(results / "figure2.csv", figure2_rows(runner))
    if predictions:
        write_evidence(runner, predictions)
    if runner.external:
        from dermsynth.study.external import collect_external

        collect_external(runner, runner.external)
