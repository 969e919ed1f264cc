"""Study configs and `dermsynth study plan`: the paper's grid on the real table, bad configs refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import write_f17k_csv
from dermsynth.config import load_config
from dermsynth.errors import DermsynthError
from dermsynth.study.grid import plan_study, study_grid

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_paper_config_plans_the_papers_grid(f17k_csv: Path, run_cli) -> None:
    result = run_cli(
        "study", "plan", EXAMPLES / "paper.yaml", "--csv", f17k_csv, "--format", "json"
    )
    assert result.code == 0, result.stderr
    payload = json.loads(result.stdout)
    # 2 directions x (1 real + 3 augmented x (1 real+seed + 4 doses)) x 3 repeats.
    assert payload["summary"]["runs"] == 2 * (1 + 3 * (1 + 4)) * 3
    assert payload["summary"]["candidates_to_generate"] == 2 * 3 * 8 * 8
    assert payload["summary"]["synthetic_selected"] == 2 * 3 * 8 * 4
    runs = payload["runs"]
    real = next(r for r in runs if r["direction"] == "train_1-2" and r["arm"] == "real")
    assert real["train_real"] == 420 + 864 and real["train_seed"] == 0
    assert real["test_3-4"] == 620 + 456 and real["test_5-6"] == 251 + 96 - 3 * 8
    full = [r for r in runs if r["arm"] == "real+seed+synthetic" and r["dose"] == 32]
    assert all(r["train_seed"] == 8 and r["train_added"] == 32 for r in full)
    table = run_cli("study", "plan", EXAMPLES / "paper.yaml", "--csv", f17k_csv)
    assert "estimated cost" in table.stdout


def _write_config(tmp_path: Path, **overrides: object) -> Path:
    rows = [(f"a{i}", 1 + i % 6, "psoriasis") for i in range(60)]
    rows += [(f"b{i}", 1 + i % 6, "folliculitis") for i in range(60)]
    write_f17k_csv(tmp_path / "table.csv", rows)
    config = {
        "dataset": {"csv": "table.csv"},
        "conditions": ["psoriasis", "folliculitis"],
        "augmented": ["psoriasis"],
        "directions": [{"train": [1, 2], "test": [[3, 4], [5, 6]]}],
        "seeds_per_group": 4,
        "candidates_per_seed": 4,
        "synthetic_per_seed": 2,
        "doses": [2, 8],
    }
    config.update(overrides)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_grid_counts_and_relative_paths(tmp_path: Path) -> None:
    config = load_config(_write_config(tmp_path, repeats=2))
    assert config.dataset.csv == tmp_path / "table.csv"
    runs = study_grid(config)
    assert len(runs) == 2 * (1 + 1 + 2)
    assert len({r.run_id for r in runs}) == len(runs)
    plan = plan_study(config)
    assert plan.runs["train_seed"].max() == 4
    assert set(plan.generation["candidates"]) == {16}


def test_every_config_problem_is_listed_with_its_path(tmp_path: Path, run_cli) -> None:
    path = _write_config(
        tmp_path,
        directions=[{"train": [1, 7], "test": [[3, 4]]}, {"train": [1, 2], "test": [[2, 3]]}],
        seeds_per_group=0,
        colour="red",
    )
    result = run_cli("study", "plan", path)
    assert result.code == 2
    message = result.stderr
    assert "directions.0.train: skin types must be 1..6" in message
    assert "directions.1" in message and "overlaps" in message
    assert "seeds_per_group" in message
    assert "colour: unknown setting" in message
    assert len(message.strip().splitlines()) == 1


def test_cross_field_problems(tmp_path: Path) -> None:
    path = _write_config(tmp_path, doses=[2, 64], synthetic_per_seed=5, augmented=["acne"])
    with pytest.raises(DermsynthError) as info:
        load_config(path)
    message = str(info.value)
    assert "synthetic_per_seed: 5 is more than candidates_per_seed (4)" in message
    assert "doses: [64] exceed" in message
    assert "augmented[0]: 'acne' is not among the conditions" in message


def test_infeasible_study_names_condition_and_group(tmp_path: Path) -> None:
    config = load_config(_write_config(tmp_path, seeds_per_group=50, doses=[2]))
    with pytest.raises(
        DermsynthError, match="'psoriasis' has 20 images in FST 5-6, 50 seeds asked"
    ):
        plan_study(config)


def test_unknown_condition_in_config(tmp_path: Path) -> None:
    config = load_config(_write_config(tmp_path, conditions=["psoriasis", "foliculitis"]))
    with pytest.raises(DermsynthError, match="closest: 'folliculitis'"):
        plan_study(config)


def test_missing_and_malformed_config_files(tmp_path: Path, run_cli) -> None:
    assert "no such config file" in run_cli("study", "plan", tmp_path / "none.yaml").stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [unclosed\n")
    result = run_cli("study", "plan", bad)
    assert result.code == 2 and "not valid YAML" in result.stderr
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    assert "YAML mapping" in run_cli("study", "plan", scalar).stderr
