"""External validation: a simulated study trains on one simulated table and is also tested on a
second one, made with another random seed and rated on the Monk scale, with its own labels."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dermsynth.config import load_config
from dermsynth.data.manifest import PAPER_CONDITIONS
from dermsynth.data.simulate import simulate_dataset
from dermsynth.errors import DermsynthError
from dermsynth.study.runner import StudyRunner

CONDITIONS = list(PAPER_CONDITIONS)
# How the second table rates skin tone: each Fitzpatrick type of the simulation as a Monk value.
FST_TO_MST = {-1: "", 1: "1", 2: "3", 3: "4", 4: "6", 5: "8", 6: "10"}
ABSENT = "nematode infection"  # the external set has no image of it


def _external_table(folder: Path) -> tuple[Path, Path]:
    """A second simulated set as another dataset would publish it: its own column names, codes
    for conditions, Monk skin tone; two image files gone; and the label map to the study."""
    csv = simulate_dataset(folder, scale=0.03, random_seed=11, image_size=96, progress=False)
    sim = pd.read_csv(csv, keep_default_na=False)
    sim = sim[sim["label"] != ABSENT]
    codes = {c: f"DX{i}" for i, c in enumerate(CONDITIONS)}
    table = pd.DataFrame(
        {
            "lesion": sim["md5hash"],
            "diagnosis": sim["label"].map(codes),
            "monk": sim["fitzpatrick_scale"].map(FST_TO_MST),
            "file": sim["md5hash"] + ".jpg",
        }
    )
    external = folder / "external.csv"
    table.to_csv(external, index=False)
    for md5 in table["lesion"].iloc[:2]:
        (folder / "images" / f"{md5}.jpg").unlink()
    label_map = folder / "label_map.csv"
    rows = [(codes[c], c) for c in CONDITIONS if c != ABSENT] + [("", ABSENT)]
    pd.DataFrame(rows, columns=["dataset_label", "condition"]).to_csv(label_map, index=False)
    return external, label_map


@pytest.fixture(scope="module")
def two_tables(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    study = simulate_dataset(
        tmp_path_factory.mktemp("study"), scale=0.06, random_seed=3, image_size=96, progress=False
    )
    external, label_map = _external_table(tmp_path_factory.mktemp("external"))
    return study, external, label_map


def _config(folder: Path, study: Path, external: dict[str, object]) -> Path:
    config = {
        "name": "external",
        "simulated": True,
        "dataset": {"csv": str(study)},
        "test_datasets": [external],
        "conditions": CONDITIONS,
        "augmented": ["psoriasis"],
        "directions": [{"train": [1, 2], "test": [[5, 6]]}],
        "seeds_per_group": 2,
        "candidates_per_seed": 2,
        "synthetic_per_seed": 2,
        "doses": [4],
        "generator": {"backend": "demo", "steps": 3, "strength": 0.6},
        "classifier": {
            "backbone": "colour-texture",
            "weights": "none",
            "epochs": 2,
            "image_size": 64,
            "views": 1,
            "batch_size": 32,
        },
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _monk_set(external: Path, label_map: Path, **more: object) -> dict[str, object]:
    return {
        "csv": str(external),
        "name": "sim_mst",
        "id_column": "lesion",
        "label_column": "diagnosis",
        "path_column": "file",
        "rater": "monk",
        "scale": "mst",
        "label_map": str(label_map),
        **more,
    }


@pytest.mark.slow
def test_a_study_reports_on_a_second_table_of_another_seed_and_scale(
    two_tables: tuple[Path, Path, Path], tmp_path: Path, run_cli
) -> None:
    study, external, label_map = two_tables
    config = _config(tmp_path, study, _monk_set(external, label_map))
    out = tmp_path / "run"
    result = run_cli("study", "run", config, "--out", out)
    assert result.code == 0, result.stderr

    runs = pd.read_csv(out / "results" / "runs.csv")
    assert len(runs) == 3 and (runs["status"] == "done").all()
    tested = pd.read_csv(out / "external" / "sim_mst" / "manifest.csv")
    missing = pd.read_csv(out / "external" / "sim_mst" / "missing_images.csv")
    assert len(missing) == 2 and not set(missing["image_id"]) & set(tested["image_id"])
    for run_id in runs["run_id"]:
        preds = pd.read_csv(out / "runs" / run_id / "external" / "sim_mst.csv")
        assert set(preds["image_id"]) == set(tested["image_id"])

    summary = pd.read_csv(out / "results" / "external_sim_mst.csv", keep_default_na=False)
    assert set(summary["fst_group"]) == {"MST 1-3", "MST 4-7", "MST 8-10"}
    assert set(summary["arm"]) == {"real", "real+seed", "real+seed+synthetic"}
    assert {"ci_low", "ci_high", "interval"} <= set(summary.columns)
    everything = summary[(summary["condition"] == "(all)") & (summary["arm"] == "real")]
    per_group = dict(zip(everything["fst_group"], everything["n"].astype(int), strict=True))
    monk = tested["mst"]
    assert per_group == {
        "MST 1-3": int(monk.isin([1, 2, 3]).sum()),
        "MST 4-7": int(monk.isin([4, 5, 6, 7]).sum()),
        "MST 8-10": int(monk.isin([8, 9, 10]).sum()),
    }
    absent = summary[summary["condition"] == ABSENT]
    assert (absent["n"].astype(int) == 0).all()

    comparisons = pd.read_csv(out / "results" / "external_sim_mst_comparisons.csv")
    assert {"p", "p_holm", "arm_a", "arm_b"} <= set(comparisons.columns)
    assert set(comparisons["arm_b"]) == {"real+seed+synthetic"}
    about = json.loads((out / "results" / "external_sim_mst.json").read_text())
    assert about["scale"] == "mst" and about["missing_images"] == 2
    assert f"{ABSENT} in MST 8-10" in about["cells_without_images"]
    assert about["images"] == len(tested)

    again = run_cli("study", "run", config, "--out", out)
    assert again.code == 0, again.stderr
    assert "testing" not in again.stderr  # finished predictions are reused

    report = run_cli("report", out)
    assert report.code == 0, report.stderr
    html = (out / "report" / "index.html").read_text()
    assert "External test set sim_mst (Monk skin tone)" in html
    assert "psoriasis on sim_mst" in html
    assert (out / "report" / "table2_sim_mst.csv").is_file()


def test_an_external_map_missing_a_condition_stops_before_training(
    two_tables: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    study, external, label_map = two_tables
    partial = tmp_path / "partial_map.csv"
    rows = pd.read_csv(label_map, keep_default_na=False)
    rows[rows["condition"] != "psoriasis"].to_csv(partial, index=False)
    config = load_config(_config(tmp_path, study, _monk_set(external, partial)))
    with pytest.raises(DermsynthError) as info:
        StudyRunner(config, tmp_path / "run")
    message = str(info.value)
    assert message.startswith("test_datasets (sim_mst): ")
    assert "no dataset label is mapped to condition(s) 'psoriasis'" in message
    assert not (tmp_path / "run" / "runs").exists()


def test_two_external_sets_of_one_name_are_refused(
    two_tables: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    study, external, label_map = two_tables
    path = _config(tmp_path, study, _monk_set(external, label_map))
    raw = yaml.safe_load(path.read_text())
    raw["test_datasets"] = raw["test_datasets"] * 2
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(DermsynthError, match="both named 'sim_mst'"):
        StudyRunner(load_config(path), tmp_path / "run")
