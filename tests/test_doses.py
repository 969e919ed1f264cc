"""Doses as ratios of synthetic to real images: planned, shown and costed by `study plan`; a
ratio needing more images than are made is refused with the counts per seed it needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dermsynth.config import load_config
from dermsynth.errors import DermsynthError
from dermsynth.study.grid import plan_study, study_grid
from test_study_plan import _write_config


def test_ratio_doses_are_planned_per_direction_and_condition(tmp_path: Path, run_cli) -> None:
    # 20 real training images of psoriasis in FST 1-2 (40 of both conditions); 4 seeds x 5 kept
    # = 20 synthetic images.
    path = _write_config(
        tmp_path, doses=["1x", 8, "0.5X"], synthetic_per_seed=5, candidates_per_seed=10
    )
    config = load_config(path)
    assert config.doses == [8, "0.5x", "1x"]
    plan = plan_study(config)
    synthetic = plan.runs[plan.runs["arm"] == "real+seed+synthetic"]
    # 0.5x -> 10 images, 1x -> 20 (the full dose, seeds x synthetic_per_seed, too), and 8.
    assert sorted(synthetic["train_added"]) == [8, 10, 20]
    assert synthetic["train_total"].tolist() == [40 + 4 + d for d in synthetic["train_added"]]
    assert plan.generation["candidates"].tolist() == [40]
    row = plan.arms[plan.arms["arm"] == "real+seed+synthetic"].iloc[0]
    assert row["doses"] == "8 10 20" and row["per_seed"] == 5 and not row["short"]
    assert plan.cost["training_seconds"] > 0
    with pytest.raises(DermsynthError, match="ratio doses is laid out on its plans"):
        study_grid(config)  # a ratio counts the plan's real images

    result = run_cli("study", "plan", path)
    assert result.code == 0, result.stderr
    assert "ratio doses 0.5x, 1x: synthetic images per real training image" in result.stdout
    payload = json.loads(run_cli("study", "plan", path, "--format", "json").stdout)
    assert payload["summary"]["runs"] == 1 + 1 + 3


def test_a_ratio_needing_more_candidates_than_generated_is_said(tmp_path: Path, run_cli) -> None:
    path = _write_config(tmp_path, doses=["0.5x", "2x"])  # 4 seeds x 2 kept of 4 made
    result = run_cli("study", "plan", path)
    assert result.code == 2
    assert "dose 40 asked, at most 8 images available" in result.stderr
    assert "needs 10 kept of 20 generated per seed" in result.stderr
    assert "synthetic_per_seed >= 10 and candidates_per_seed >= 20" in result.stderr


@pytest.mark.parametrize("dose", ["abc", "0x", "-1x", "8", 0])
def test_bad_doses_are_refused(tmp_path: Path, dose: object) -> None:
    with pytest.raises(DermsynthError, match="doses"):
        load_config(_write_config(tmp_path, doses=[dose]))
