"""Arms compared honestly: hierarchical bootstrap, p-value corrections, fairness across FST groups."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from statsmodels.stats.multitest import multipletests

from dermsynth.errors import DermsynthError
from dermsynth.evaluate.fairness import FAIRNESS_GROUP_COLUMNS, fairness_report
from dermsynth.evaluate.metrics import load_predictions
from dermsynth.evaluate.paired import bootstrap_difference_ci
from dermsynth.evaluate.stats import (
    HIERARCHICAL_COLUMNS,
    adjust_pvalues,
    align_runs,
    hierarchical_bootstrap_accuracy,
    hierarchical_bootstrap_difference,
    hierarchical_compare,
    multiplicity_table,
)

GROUPS = [(1, 2), (3, 4), (5, 6)]


def simulate_arm(
    rng: np.random.Generator,
    difficulty: np.ndarray,
    accuracy: float,
    repeats: int,
    seed_spread: float,
) -> list[np.ndarray]:
    """Repeats of one arm on shared test images; the expected accuracy is exactly ``accuracy``.

    Image j is right when u < accuracy + s, with s the repeat's training-seed shift (uniform,
    mean 0) and u the image's difficulty (shared by every run, so runs are paired by image) for
    70% of images and a fresh uniform draw for the rest (run-to-run noise).
    """
    runs = []
    for _ in range(repeats):
        shift = rng.uniform(-seed_spread, seed_spread)
        shared = rng.random(len(difficulty)) < 0.7
        u = np.where(shared, difficulty, rng.random(len(difficulty)))
        runs.append(u < accuracy + shift)
    return runs


# --------------------------------------------------------------------------- bootstrap


def test_hierarchical_ci_covers_the_truth_at_about_the_nominal_rate() -> None:
    covered_difference = covered_accuracy = 0
    studies = 200
    for study in range(studies):
        rng = np.random.default_rng(study)
        difficulty = rng.random(200)
        arm_a = simulate_arm(rng, difficulty, 0.60, repeats=5, seed_spread=0.08)
        arm_b = simulate_arm(rng, difficulty, 0.65, repeats=4, seed_spread=0.08)
        result = hierarchical_bootstrap_difference(arm_a, arm_b, n_boot=400, random_seed=study)
        covered_difference += result.ci_low <= 0.05 <= result.ci_high
        _, low, high = hierarchical_bootstrap_accuracy(arm_a, n_boot=400, random_seed=study)
        covered_accuracy += low <= 0.60 <= high
    assert 0.88 <= covered_difference / studies <= 0.99
    assert 0.88 <= covered_accuracy / studies <= 0.99


def test_repeats_that_disagree_widen_the_interval_beyond_one_run_against_one() -> None:
    rng = np.random.default_rng(7)
    difficulty = rng.random(400)
    arm_a = simulate_arm(rng, difficulty, 0.6, repeats=5, seed_spread=0.15)
    arm_b = simulate_arm(rng, difficulty, 0.6, repeats=5, seed_spread=0.15)
    spread = np.std([run.mean() for run in arm_a])
    assert spread > 0.03  # the training seed moves accuracy by several points

    result = hierarchical_bootstrap_difference(arm_a, arm_b)
    low, high = bootstrap_difference_ci(arm_a[0], arm_b[0])
    assert result.ci_high - result.ci_low > 1.5 * (high - low)


def test_intervals_near_the_ceiling_and_floor_stay_within_zero_and_one() -> None:
    # Two perfect repeats and one that misses 3 of 16: widening the repeats' spread must not
    # carry an accuracy past 1 (nor, mirrored, below 0).
    ceiling = [np.ones(16, bool), np.ones(16, bool), np.arange(16) >= 3]
    floor = [~run for run in ceiling]
    _, low, high = hierarchical_bootstrap_accuracy(ceiling)
    assert low > 0.7 and high <= 1.0
    _, low, high = hierarchical_bootstrap_accuracy(floor)
    assert low >= 0.0 and high < 0.3
    result = hierarchical_bootstrap_difference(floor, ceiling)
    assert result.ci_low >= -1.0 and result.ci_high <= 1.0


def test_with_one_repeat_each_it_is_the_paired_image_bootstrap() -> None:
    rng = np.random.default_rng(3)
    difficulty = rng.random(500)
    (run_a,) = simulate_arm(rng, difficulty, 0.6, repeats=1, seed_spread=0.0)
    (run_b,) = simulate_arm(rng, difficulty, 0.7, repeats=1, seed_spread=0.0)
    result = hierarchical_bootstrap_difference([run_a], [run_b], n_boot=4000)
    low, high = bootstrap_difference_ci(run_a, run_b, n_boot=4000)
    assert result.difference == pytest.approx(run_b.mean() - run_a.mean())
    assert result.ci_low == pytest.approx(low, abs=0.01)
    assert result.ci_high == pytest.approx(high, abs=0.01)
    assert (result.n_images, result.repeats_a, result.repeats_b) == (500, 1, 1)


def test_p_value_is_small_for_a_planted_difference_and_not_for_none() -> None:
    rng = np.random.default_rng(11)
    difficulty = rng.random(500)
    arm_a = simulate_arm(rng, difficulty, 0.60, repeats=5, seed_spread=0.03)
    better = simulate_arm(rng, difficulty, 0.75, repeats=3, seed_spread=0.03)
    same = simulate_arm(rng, difficulty, 0.60, repeats=3, seed_spread=0.03)

    planted = hierarchical_bootstrap_difference(arm_a, better)
    assert planted.difference == pytest.approx(np.mean(better) - np.mean(arm_a))
    assert planted.difference > 0.1
    assert planted.ci_low > 0
    assert planted.p_value < 0.01
    assert planted.p_value == pytest.approx(2 / 2001)  # no draw at or below 0, +1 corrected

    none = hierarchical_bootstrap_difference(arm_a, same)
    assert none.ci_low < 0 < none.ci_high
    assert none.p_value > 0.05


def test_identical_arms_give_zero_difference_and_p_one() -> None:
    runs = [np.array([True, False, True, True]), np.array([True, True, False, True])]
    result = hierarchical_bootstrap_difference(runs, runs, n_boot=200)
    assert result.difference == 0.0
    assert result.p_value == pytest.approx(1.0)
    assert result.accuracy_a == result.accuracy_b == 0.75


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(5)
    difficulty = rng.random(100)
    a = simulate_arm(rng, difficulty, 0.5, 3, 0.1)
    b = simulate_arm(rng, difficulty, 0.6, 3, 0.1)
    assert hierarchical_bootstrap_difference(a, b) == hierarchical_bootstrap_difference(a, b)
    other = hierarchical_bootstrap_difference(a, b, random_seed=1)
    assert other.ci_low != hierarchical_bootstrap_difference(a, b).ci_low


def test_empty_inputs_give_nans_and_mismatched_runs_an_error() -> None:
    result = hierarchical_bootstrap_difference([], [np.array([True])])
    assert math.isnan(result.difference) and math.isnan(result.p_value)
    assert (result.n_images, result.repeats_a, result.repeats_b) == (0, 0, 1)
    empty = hierarchical_bootstrap_difference([np.array([], bool)], [np.array([], bool)])
    assert math.isnan(empty.ci_low) and empty.n_images == 0
    assert all(math.isnan(v) for v in hierarchical_bootstrap_accuracy([]))

    with pytest.raises(DermsynthError, match="same test images"):
        hierarchical_bootstrap_difference([np.ones(3, bool)], [np.ones(4, bool)])
    with pytest.raises(DermsynthError, match="same test images"):
        hierarchical_bootstrap_accuracy([np.ones(3, bool), np.ones(4, bool)])
    with pytest.raises(DermsynthError, match="at least 1 resample"):
        hierarchical_bootstrap_accuracy([np.ones(3, bool)], n_boot=0)


# --------------------------------------------------------------------------- from files


def write_run(path: Path, rows: list[tuple[str, str, int, str]]) -> Path:
    """(image_id, label, fst, prediction) rows as a predictions CSV with one-hot p_* columns."""
    frame = pd.DataFrame(rows, columns=["image_id", "label", "fst", "prediction"])
    for name in ("eczema", "psoriasis"):
        frame[f"p_{name}"] = (frame["prediction"] == name).astype(float)
    frame.to_csv(path, index=False)
    return path


def test_runs_from_files_are_aligned_by_image_and_compared_per_cell(tmp_path: Path) -> None:
    ids = [f"img{i}" for i in range(8)]
    labels = ["eczema", "psoriasis"] * 4
    fst = [1, 2, 5, 6, 1, 2, 5, 6]
    flip = {"eczema": "psoriasis", "psoriasis": "eczema"}
    # Arm A: right on images 0-3; arm B: right everywhere. B's second file is stored shuffled.
    a_rows = [
        (i, y, f, y if k < 4 else flip[y])
        for k, (i, y, f) in enumerate(zip(ids, labels, fst, strict=True))
    ]
    b_rows = [(i, y, f, y) for i, y, f in zip(ids, labels, fst, strict=True)]
    runs = [
        load_predictions(write_run(tmp_path / "a1.csv", a_rows)),
        load_predictions(write_run(tmp_path / "a2.csv", a_rows[::-1])),
        load_predictions(write_run(tmp_path / "b1.csv", b_rows[3:] + b_rows[:3])),
    ]
    images, correct = align_runs(runs)
    assert images["image_id"].tolist() == ids
    expected_a = np.array([True] * 4 + [False] * 4)
    assert np.array_equal(correct[0], expected_a)
    assert np.array_equal(correct[1], expected_a)
    assert correct[2].all()

    table = hierarchical_compare(images, correct[:2], correct[2:], [(1, 2), (5, 6)], n_boot=300)
    assert list(table.columns) == list(HIERARCHICAL_COLUMNS)
    assert len(table) == 6  # 2 conditions + "(all)", times 2 groups
    overall = table[table["condition"] == "(all)"].set_index("fst_group")
    assert overall.loc["1-2", "n"] == 4
    assert overall.loc["1-2", "accuracy_a"] == 0.5
    assert overall.loc["1-2", "difference"] == 0.5
    assert (overall["repeats_a"] == 2).all() and (overall["repeats_b"] == 1).all()

    with pytest.raises(DermsynthError, match="do not cover the same test images"):
        align_runs([runs[0], load_predictions(write_run(tmp_path / "short.csv", a_rows[:5]))])


# --------------------------------------------------------------------------- multiplicity


def test_adjusted_pvalues_equal_statsmodels_and_leave_nans_out_of_the_family() -> None:
    p = [0.01, math.nan, 0.04, 0.03, 0.2, math.nan, 0.001]
    finite = [v for v in p if not math.isnan(v)]
    for method in ("holm", "fdr_bh"):
        adjusted = adjust_pvalues(p, method)
        expected = multipletests(finite, method=method)[1]
        assert np.isnan(adjusted[[1, 5]]).all()
        assert np.array_equal(adjusted[~np.isnan(adjusted)], expected)
    assert adjust_pvalues([], "holm").shape == (0,)
    assert np.isnan(adjust_pvalues([math.nan], "fdr_bh")).all()
    with pytest.raises(DermsynthError, match="unknown p-value adjustment"):
        adjust_pvalues([0.1], "bonferroni")  # type: ignore[arg-type]
    with pytest.raises(DermsynthError, match="between 0 and 1"):
        adjust_pvalues([1.5], "holm")


def test_multiplicity_table_corrects_within_each_family() -> None:
    frame = pd.DataFrame(
        {
            "direction": ["light->dark"] * 3 + ["dark->light"] * 3,
            "condition": ["eczema", "psoriasis", "(all)"] * 2,
            "p": [0.01, 0.02, math.nan, 0.04, 0.5, 0.03],
        }
    )
    out = multiplicity_table(frame, family_columns=["direction"])
    assert list(out.columns) == [
        *frame.columns,
        "p_holm",
        "p_bh",
        "significant_holm",
        "significant_bh",
    ]
    first = multipletests([0.01, 0.02], method="holm")
    assert out["p_holm"].iloc[:2].tolist() == first[1].tolist()
    assert out["significant_holm"].iloc[:3].tolist() == [*first[0].tolist(), False]
    assert math.isnan(out["p_holm"].iloc[2])
    second = multipletests([0.04, 0.5, 0.03], method="fdr_bh")
    assert out["p_bh"].iloc[3:].tolist() == second[1].tolist()
    assert out["significant_bh"].iloc[3:].tolist() == second[0].tolist()

    pooled = multiplicity_table(frame)
    everything = multipletests([0.01, 0.02, 0.04, 0.5, 0.03], method="holm")[1]
    assert pooled["p_holm"].dropna().tolist() == everything.tolist()
    with pytest.raises(DermsynthError, match="no column"):
        multiplicity_table(frame, p_column="p_value")


# --------------------------------------------------------------------------- fairness


def fairness_rows() -> list[dict[str, object]]:
    """Three classes, three groups, answers worked out by hand (see the test)."""
    rows: list[dict[str, object]] = []

    def add(label: str, fst: int, prediction: str, probs: tuple[float, float, float]) -> None:
        p_a, p_b, p_c = probs
        rows.append(
            {"image_id": f"img{len(rows)}", "label": label, "fst": fst, "prediction": prediction}
            | {"p_a": p_a, "p_b": p_b, "p_c": p_c}
        )

    # FST 1-2: a perfect, certain scorer.
    for label, probs in (("a", (1, 0, 0)), ("b", (0, 1, 0)), ("c", (0, 0, 1))):
        add(label, 1, label, probs)
        add(label, 2, label, probs)
    # FST 3-4: always "a" at 0.75, right 3 times in 4: calibrated; no image of c.
    for label in ("a", "a", "a", "b"):
        add(label, 3, "a", (0.75, 0.25, 0.0))
    # FST 5-6: confident at 0.9, right half the time.
    add("a", 5, "a", (0.9, 0.05, 0.05))
    add("b", 5, "a", (0.9, 0.05, 0.05))
    add("c", 6, "c", (0.05, 0.05, 0.9))
    add("c", 6, "b", (0.05, 0.9, 0.05))
    # Unknown skin type: in no group.
    add("a", -1, "b", (0.0, 1.0, 0.0))
    return rows


def test_fairness_numbers_on_a_hand_made_table(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    pd.DataFrame(fairness_rows()).to_csv(path, index=False)
    preds = load_predictions(path)
    report = fairness_report(preds, GROUPS)

    groups = report.groups.set_index("fst_group")
    assert list(report.groups.columns) == list(FAIRNESS_GROUP_COLUMNS)
    assert groups["n"].tolist() == [6, 4, 4]
    assert groups["accuracy"].tolist() == [1.0, 0.75, 0.5]
    assert groups.loc["1-2", "auroc"] == 1.0
    assert math.isnan(groups.loc["3-4", "auroc"])
    assert "no test image of c" in groups.loc["3-4", "auroc_note"]
    dark = preds[preds["fst"].isin([5, 6])]
    direct = roc_auc_score(
        dark["label"], dark[["p_a", "p_b", "p_c"]], multi_class="ovr", labels=["a", "b", "c"]
    )
    assert groups.loc["5-6", "auroc"] == pytest.approx(direct)
    assert groups["ece"].tolist() == pytest.approx([0.0, 0.0, 0.4])  # |0.5 - 0.9| = 0.4

    conditions = report.conditions.set_index("condition")
    assert list(report.conditions.columns) == [
        "condition",
        "tpr_1-2",
        "tpr_3-4",
        "tpr_5-6",
        "eo_difference",
        "eo_groups",
    ]
    assert conditions.loc["a", ["tpr_1-2", "tpr_3-4", "tpr_5-6"]].tolist() == [1.0, 1.0, 1.0]
    assert conditions.loc["b", ["tpr_1-2", "tpr_3-4", "tpr_5-6"]].tolist() == [1.0, 0.0, 0.0]
    assert math.isnan(conditions.loc["c", "tpr_3-4"])  # no image of c there: no rate, not 0
    assert conditions["eo_difference"].tolist() == [0.0, 1.0, 0.5]
    assert conditions["eo_groups"].tolist() == [3, 3, 2]

    assert report.summary == {
        "n_images": 14,
        "worst_group": "5-6",
        "worst_accuracy": 0.5,
        "best_group": "1-2",
        "best_accuracy": 1.0,
        "gap": 0.5,
        "ratio": 0.5,
        "max_eo_difference": 1.0,
        "max_eo_condition": "b",
    }


def test_fairness_of_a_two_class_model_and_bad_groups(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.array(["eczema", "psoriasis"] * 10)
    score = np.where(labels == "psoriasis", 0.6, 0.4) + rng.uniform(-0.3, 0.3, len(labels))
    frame = pd.DataFrame(
        {
            "image_id": [f"img{i}" for i in range(len(labels))],
            "label": labels,
            "fst": [1, 1, 6, 6] * 5,
            "prediction": np.where(score > 0.5, "psoriasis", "eczema"),
            "p_eczema": 1 - score,
            "p_psoriasis": score,
        }
    )
    frame.to_csv(tmp_path / "two.csv", index=False)
    preds = load_predictions(tmp_path / "two.csv")
    report = fairness_report(preds, [(1, 2, 3), (4, 5, 6)])
    light = preds[preds["fst"] == 1]
    expected = roc_auc_score(light["label"] == "psoriasis", light["p_psoriasis"])
    assert report.groups.loc[0, "auroc"] == pytest.approx(expected)
    assert report.groups.loc[0, "auroc_note"] == ""

    only_light = fairness_report(preds, [(1, 2), (3, 4)])
    assert only_light.groups["n"].tolist() == [10, 0]
    assert only_light.groups.loc[1, "auroc_note"] == "no images"
    assert math.isnan(only_light.summary["gap"]) and only_light.summary["worst_group"] == "1-2"

    with pytest.raises(DermsynthError, match="must not overlap"):
        fairness_report(preds, [(1, 2), (2, 3)])
    with pytest.raises(DermsynthError, match="no test image falls"):
        fairness_report(preds[preds["fst"] == 1], [(5, 6)])
