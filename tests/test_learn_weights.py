"""``dermsynth study learn-weights``: selection weights from the score-ranked vs random arms.

Each test writes a small finished study the way ``dermsynth study run`` lays it out (study.json,
selection manifests with every candidate's scores, one manifest per run, results/runs.csv and
results/accuracy.csv), with accuracies made to depend on one score or on none, then learns the
weights through the command line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dermsynth.arms import first_by_rank
from dermsynth.cli import main
from dermsynth.config import SelectionConfig, StudyConfig
from dermsynth.data.manifest import write_manifest
from dermsynth.io import atomic_write_csv
from dermsynth.study import layout
from dermsynth.study.grid import RunSpec
from dermsynth.study.runner import claim_folder
from dermsynth.study.weights import NO_SIGNAL, RANDOM_ARM, RANKED_ARM, learn_weights

AUGMENTED = ("psoriasis", "folliculitis")
TARGET = {"train_1-2": "5-6", "train_5-6": "1-2"}  # each direction's seed group
OTHER = {"train_1-2": "3-4", "train_5-6": "3-4"}
SEEDS, CANDIDATES, KEPT = 8, 8, 4
TEST_IMAGES = 400

# accuracy of a run from the raw mean scores of its synthetic images, its cell's base and noise
Accuracy = Callable[[dict[str, float], float, float], float]


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


def dermsynth(capsys: pytest.CaptureFixture[str], *args: str | Path) -> Outcome:
    """Run ``dermsynth ARGS...`` through its console entry point."""
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    out = capsys.readouterr()
    return Outcome(code, out.out, out.err)


def _config(arms: list[str], augmented: list[str], repeats: int, control_doses: str) -> StudyConfig:
    return StudyConfig.model_validate(
        {
            "dataset": {"csv": "data.csv"},
            "conditions": [*AUGMENTED, "acne"],
            "augmented": augmented,
            "directions": [
                {"train": [1, 2], "test": [[3, 4], [5, 6]]},
                {"train": [5, 6], "test": [[1, 2], [3, 4]]},
            ],
            "arms": arms,
            "doses": [8, 32],
            "control_doses": control_doses,
            "repeats": repeats,
            "seeds_per_group": SEEDS,
            "candidates_per_seed": CANDIDATES,
            "synthetic_per_seed": KEPT,
            # not the defaults: the study's own weights are the current ones
            "selection": {"weights": {"tone": 2.0, "pathology": 1.0, "similarity": 0.5}},
        }
    )


def _candidates(
    direction: str, condition: str, rng: np.random.Generator, quality_follows: bool = False
) -> pd.DataFrame:
    """Eight candidates per seed with independent scores (similarity 1 everywhere, as a
    selection whose candidates all sit in the similarity band writes it); with
    ``quality_follows``, quality a linear function of pathology."""
    n = SEEDS * CANDIDATES
    seeds = [f"{direction}_{condition}_seed{i}" for i in range(SEEDS)]
    frame = pd.DataFrame(
        {
            "image_id": [f"{s}_c{c:02d}" for s in seeds for c in range(CANDIDATES)],
            "path": [f"images/{i}.png" for i in range(n)],
            "label": condition,
            "fst": int(TARGET[direction][0]),
            "origin": "synthetic",
            "parent_id": np.repeat(seeds, CANDIDATES),
            "score_tone": rng.choice([0.6, 0.8, 1.0], size=n),
            "score_pathology": rng.uniform(0, 1, size=n),
            "score_similarity": 1.0,
            "score_quality": rng.uniform(0.5, 1, size=n),
            "excluded": False,
        }
    )
    if quality_follows:
        frame["score_quality"] = 0.5 + 0.5 * frame["score_pathology"]
    frame["score"] = frame[["score_tone", "score_pathology", "score_quality"]].mean(axis=1)
    frame["rank"] = frame.groupby("parent_id")["score"].rank(ascending=False, method="first")
    frame["rank"] = frame["rank"].astype(int)
    frame["selected"] = frame["rank"] <= KEPT
    return frame


def _trained_on(spec: RunSpec, candidates: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The ranked arm: the best-ranked kept candidates; the random arm: a random draw."""
    if spec.arm == RANKED_ARM:
        return first_by_rank(candidates[candidates["selected"]], spec.dose)
    return candidates.iloc[rng.choice(len(candidates), size=spec.dose, replace=False)]


def _accuracy_rows(spec: RunSpec, accuracy: float, other: float) -> list[dict[str, object]]:
    """The run's accuracy.csv rows: the augmented condition in the target group, and rows the
    fit must not read (another group, another condition) that go the other way."""
    rows = []
    for condition, group, value in (
        (spec.augmented, TARGET[spec.direction], accuracy),
        (spec.augmented, OTHER[spec.direction], other),
        ("acne", TARGET[spec.direction], other),
    ):
        correct = round(min(max(value, 0.0), 1.0) * TEST_IMAGES)
        rows.append(
            {
                "run_id": spec.run_id,
                **{
                    k: getattr(spec, k) for k in ("direction", "arm", "augmented", "dose", "repeat")
                },
                "condition": condition,
                "fst_group": group,
                "n": TEST_IMAGES,
                "correct": correct,
                "accuracy": correct / TEST_IMAGES,
            }
        )
    return rows


def _write_run(study: Path, spec: RunSpec, images: pd.DataFrame) -> None:
    real = pd.DataFrame(
        [{"image_id": "real0", "path": "r.jpg", "label": "acne", "fst": 1, "origin": "real"}]
    )
    folder = layout.run_dir(study, spec.run_id)
    write_manifest(pd.concat([real, images], ignore_index=True), folder / "manifest.csv")
    (folder / layout.DONE_FILE).write_text("{}", encoding="utf-8")


def write_study(
    root: Path,
    accuracy: Accuracy,
    *,
    arms: tuple[str, ...] = (RANKED_ARM, RANDOM_ARM),
    augmented: tuple[str, ...] = AUGMENTED,
    repeats: int = 3,
    control_doses: str = "all",
    seed: int = 0,
    quality_follows: bool = False,
) -> Path:
    """A finished study of the two arms (and ``real``) whose accuracies ``accuracy`` makes."""
    config = _config(["real", *arms], list(augmented), repeats, control_doses)
    study = root / "study"
    claim_folder(config, study)
    rng = np.random.default_rng(seed)
    runs = [RunSpec(direction, "real") for direction in TARGET]
    results: list[dict[str, object]] = []
    for direction in TARGET:
        for condition in augmented:
            candidates = _candidates(direction, condition, rng, quality_follows)
            write_manifest(candidates, layout.selection_path(study, direction, condition))
            bases = {dose: rng.uniform(0.3, 0.7) for dose in config.doses_of(RANKED_ARM)}
            for arm in arms:
                for dose in config.doses_of(arm):
                    base = bases[dose]  # one per cell: the arms differ by their images only
                    for repeat in range(repeats):
                        spec = RunSpec(direction, arm, condition, dose, repeat)
                        images = _trained_on(spec, candidates, rng)
                        _write_run(study, spec, images)
                        means = {
                            s: float(images[f"score_{s}"].mean())
                            for s in ("tone", "pathology", "quality")
                        }
                        value = accuracy(means, base, float(rng.normal(0, 0.01)))
                        other = 0.9 - 0.4 * (means["pathology"] - 0.5)
                        runs.append(spec)
                        results.extend(_accuracy_rows(spec, value, other))
    table = pd.DataFrame([{"run_id": r.run_id, **asdict(r), "status": "done"} for r in runs])
    atomic_write_csv(layout.results_dir(study) / "runs.csv", table)
    atomic_write_csv(layout.results_dir(study) / "accuracy.csv", pd.DataFrame(results))
    return study


def pathology_helps(means: dict[str, float], base: float, noise: float) -> float:
    """Accuracy rises with the pathology score of the images trained on, nothing else."""
    return base + 0.4 * (means["pathology"] - 0.5) + noise


def unrelated(means: dict[str, float], base: float, noise: float) -> float:
    """Accuracy owes nothing to any score."""
    return base + 2 * noise


# --------------------------------------------------------------------------- outcomes


def test_the_score_accuracy_depends_on_gets_the_weight(tmp_path: Path, capsys) -> None:
    study = write_study(tmp_path, pathology_helps)
    result = dermsynth(capsys, "study", "learn-weights", study, "--out", tmp_path / "w.yaml")
    assert result.code == 0, result.stderr
    fit = learn_weights(study)
    effects = fit.effects.set_index("score")
    # 2 directions x 2 conditions x 2 doses, both arms, 3 repeats: every cell informs the fit
    assert (fit.n_runs, fit.n_cells) == (48, 8)
    assert fit.covariance.startswith("cluster-robust by cell (8 cells")
    assert fit.notes == [
        "with 8 cells (fewer than 20) cluster-robust intervals tend to be too narrow: read them "
        "as optimistic"
    ]
    pathology = effects.loc["pathology"]
    assert pathology["ci_low"] > 0 and pathology["p"] < 0.001
    # the slope made (0.4 per unit of raw score) is per candidate SD in the fit
    assert pathology["ci_low"] < 0.4 * pathology["candidate_sd"] < pathology["ci_high"]
    assert (pathology["n_runs"], pathology["n_cells"]) == (48, 8)
    for other in ("tone", "quality"):
        assert effects.loc[other, "ci_low"] < 0 < effects.loc[other, "ci_high"]
    assert effects.loc["similarity", "note"] == "the same for every candidate: not estimable"
    assert fit.qualified == ("pathology",)
    # all the weight on pathology, summing to the study's own weights (2 + 1 + 0.5)
    assert fit.learned == {"tone": 0.0, "pathology": 3.5, "similarity": 0.0, "quality": 0.0}
    written = yaml.safe_load((tmp_path / "w.yaml").read_text(encoding="utf-8"))
    assert written["selection"]["weights"] == fit.learned
    assert SelectionConfig(weights=written["selection"]["weights"]).weights["pathology"] == 3.5
    printed = result.stdout
    assert "learned weights from 48 runs in 8 cells: pathology 3.5 (coefficient +0.1" in printed
    assert "; tone 0; similarity 0; quality 0 (scaled to the current weights' sum, 3.5)" in printed
    assert "selection:\n  weights:\n    tone: 0.0\n    pathology: 3.5" in printed
    assert "pathology" in printed and "CI above 0: earns a weight" in printed


def test_accuracy_unrelated_to_the_scores_keeps_the_current_weights(tmp_path: Path, capsys) -> None:
    study = write_study(tmp_path, unrelated)
    result = dermsynth(capsys, "study", "learn-weights", study, "--format", "json")
    assert result.code == 0, result.stderr
    fit = json.loads(result.stdout)
    assert fit["verdict"].startswith(f"{NO_SIGNAL} (no coefficient with its 95% CI above 0")
    assert fit["verdict"].endswith("the current weights are kept")
    assert fit["qualified"] == []
    assert fit["learned"] == fit["current"] == {"tone": 2.0, "pathology": 1.0, "similarity": 0.5}
    effects = {row["score"]: row for row in fit["effects"]}
    for score in ("tone", "pathology", "quality"):  # fitted, both signs shown, none above 0
        assert effects[score]["ci_low"] <= 0 and effects[score]["n_runs"] == 48
    table = dermsynth(capsys, "study", "learn-weights", study)
    assert f"{NO_SIGNAL}" in table.stdout and "tone: 2.0" in table.stdout
    csv = dermsynth(capsys, "study", "learn-weights", study, "--format", "csv")
    rows = pd.read_csv(pd.io.common.StringIO(csv.stdout))
    assert list(rows["score"]) == ["tone", "pathology", "similarity", "quality"]
    assert list(rows["weight_learned"]) == [2.0, 1.0, 0.5, 0.0]


def test_scores_that_move_together_are_named_and_the_others_fitted(tmp_path: Path, capsys) -> None:
    # quality = 0.5 + 0.5 x pathology in every candidate: no run can tell them apart
    study = write_study(tmp_path, pathology_helps, quality_follows=True)
    result = dermsynth(capsys, "study", "learn-weights", study)
    assert result.code == 0, result.stderr
    fit = learn_weights(study)
    effects = fit.effects.set_index("score")
    assert effects.loc["quality", "note"] == (
        "moves with pathology within cells: not estimable on its own"
    )
    assert effects.loc["quality", "n_runs"] == 0 and np.isnan(effects.loc["quality", "p"])
    # pathology (first in the scores' order among equally varying ones) is fitted and earns it
    assert effects.loc["pathology", "ci_low"] > 0 and fit.qualified == ("pathology",)
    assert effects.loc["tone", "n_runs"] == 48
    assert "moves with pathology within cells: not estimable on its own" in result.stdout


def test_cells_where_every_run_trained_on_the_same_images_are_left_out(tmp_path: Path) -> None:
    # the random arm only at the full dose: the dose-8 cells hold the ranked arm's 3 runs on the
    # same images; 2 informative cells are too few for cluster-robust errors on 3 scores
    study = write_study(tmp_path, pathology_helps, augmented=("psoriasis",), control_doses="full")
    fit = learn_weights(study)
    assert (fit.n_runs, fit.n_cells) == (12, 2)
    assert fit.notes == [
        "2 cell(s) (6 runs) where every run trained on the same synthetic images inform no "
        "score and are left out of the fit"
    ]
    assert fit.covariance == "HC3 (2 cells: too few for cluster-robust errors on 3 scores)"
    fitted = fit.effects.set_index("score").loc[["tone", "pathology", "quality"]]
    assert np.isfinite(fitted[["ci_low", "ci_high"]].to_numpy()).all()
    assert (fitted["n_runs"] == 12).all() and (fitted["n_cells"] == 2).all()


# --------------------------------------------------------------------------- bad input


def _one_line_error(result: Outcome, *words: str) -> None:
    assert result.code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0]


def test_a_folder_that_is_not_a_study(tmp_path: Path, capsys) -> None:
    result = dermsynth(capsys, "study", "learn-weights", tmp_path)
    _one_line_error(result, "not a study folder", "dermsynth study run")
    result = dermsynth(capsys, "study", "learn-weights", tmp_path / "absent")
    _one_line_error(result, "no such study folder")


def test_a_study_without_the_random_arm(tmp_path: Path, capsys) -> None:
    study = write_study(tmp_path, pathology_helps, arms=(RANKED_ARM,))
    result = dermsynth(capsys, "study", "learn-weights", study)
    _one_line_error(result, f"no {RANDOM_ARM} arm", "add both to the config's arms")


def test_a_cell_of_one_run(tmp_path: Path, capsys) -> None:
    study = write_study(tmp_path, pathology_helps, repeats=1, control_doses="full")
    result = dermsynth(capsys, "study", "learn-weights", study)
    _one_line_error(result, "dose 8 has 1 run", "repeats: 2 or more")


def test_an_unfinished_study(tmp_path: Path, capsys) -> None:
    study = write_study(tmp_path, pathology_helps)
    runs_csv = layout.results_dir(study) / "runs.csv"
    runs = pd.read_csv(runs_csv, dtype=str, keep_default_na=False)
    runs.loc[runs["arm"] == RANDOM_ARM, "status"] = "missing"
    atomic_write_csv(runs_csv, runs)
    result = dermsynth(capsys, "study", "learn-weights", study)
    _one_line_error(result, "24 of 48 runs", "not done", "finish the study")
    (layout.results_dir(study) / "accuracy.csv").unlink()
    runs_csv.unlink()
    result = dermsynth(capsys, "study", "learn-weights", study)
    _one_line_error(result, "no results/runs.csv", "unfinished")


def test_a_bad_format(tmp_path: Path, capsys) -> None:
    result = dermsynth(capsys, "study", "learn-weights", tmp_path, "--format", "yaml")
    _one_line_error(result, "--format must be table, csv or json")
