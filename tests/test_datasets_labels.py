"""Label maps: an editable CSV from a dataset's labels to the study's conditions; unmapped
labels are listed, never dropped silently; a map missing a study condition is one line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dermsynth.config import DatasetConfig
from dermsynth.data.labels import read_label_map
from dermsynth.errors import DermsynthError
from test_datasets import write_ddi

CONDITIONS = ["basal cell carcinoma", "melanoma", "seborrheic keratosis"]


def _map(path: Path, rows: list[tuple[str, str]]) -> Path:
    pd.DataFrame(rows, columns=["dataset_label", "condition"]).to_csv(path, index=False)
    return path


def test_label_map_template_lists_every_label_with_a_guess(tmp_path: Path, run_cli) -> None:
    csv = write_ddi(tmp_path)
    out = tmp_path / "ddi_map.csv"
    result = run_cli(
        "data",
        "label-map",
        "--csv",
        csv,
        "--dataset",
        "ddi",
        "--out",
        out,
        "--conditions",
        ",".join(CONDITIONS),
    )
    assert result.code == 0, result.stderr
    assert "5 label(s), 1 matched to a condition" in result.stdout
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == ["dataset_label", "condition", "n_images"]
    guessed = dict(zip(table["dataset_label"], table["condition"], strict=True))
    assert guessed["basal-cell-carcinoma"] == "basal cell carcinoma"
    assert guessed["melanoma-in-situ"] == ""
    # an edited map is never overwritten
    result = run_cli("data", "label-map", "--csv", csv, "--dataset", "ddi", "--out", out)
    assert result.code == 2 and "exists (an edited map?)" in result.stderr


def test_a_map_relabels_keeps_the_dataset_label_and_lists_unmapped(tmp_path: Path) -> None:
    csv = write_ddi(tmp_path)
    label_map = _map(
        tmp_path / "map.csv",
        [
            ("basal-cell-carcinoma", "Basal cell carcinoma"),
            ("basal-cell-carcinoma-nodular", "basal cell carcinoma"),
            ("melanoma-in-situ", "melanoma"),
            ("verruca-vulgaris", ""),
            ("", "seborrheic keratosis"),  # declared absent from this dataset
        ],
    )
    config = DatasetConfig(csv=csv, preset="ddi", label_map=label_map)
    manifest = config.load(CONDITIONS)
    assert manifest["label"].value_counts().to_dict() == {
        "basal cell carcinoma": 2,
        "melanoma": 1,
    }
    assert set(manifest["dataset_label"]) == {
        "basal-cell-carcinoma",
        "basal-cell-carcinoma-nodular",
        "melanoma-in-situ",
    }
    mapping = manifest.attrs["label_mapping"]
    assert mapping.unmapped == {"seborrheic-keratosis-irritated": 1}
    assert mapping.excluded == {"verruca-vulgaris": 1}
    notes = manifest.attrs["notes"]
    assert notes[0].startswith("1 image(s) of 1 label(s) not in the label map left out: ")
    assert "'seborrheic-keratosis-irritated' (1)" in notes[0]
    assert notes[1] == "1 image(s) of 1 label(s) the map leaves out on purpose"


def test_a_map_missing_a_study_condition_is_one_line(tmp_path: Path) -> None:
    csv = write_ddi(tmp_path)
    label_map = _map(tmp_path / "map.csv", [("melanoma-in-situ", "melanoma")])
    with pytest.raises(DermsynthError) as info:
        DatasetConfig(csv=csv, preset="ddi", label_map=label_map).load(CONDITIONS)
    message = str(info.value)
    assert "\n" not in message
    assert "no dataset label is mapped to condition(s) 'basal cell carcinoma', " in message


def test_a_label_mapped_twice_differently_is_refused(tmp_path: Path) -> None:
    label_map = _map(tmp_path / "map.csv", [("x", "melanoma"), ("x", "nevus")])
    with pytest.raises(DermsynthError, match=r"row 2 \(line 3\): 'x' is mapped twice"):
        read_label_map(label_map)
    (tmp_path / "bad.csv").write_text("label,target\nx,y\n")
    with pytest.raises(DermsynthError, match="needs columns dataset_label, condition"):
        read_label_map(tmp_path / "bad.csv")


def test_summary_with_a_label_map_says_what_it_left_out(tmp_path: Path, run_cli) -> None:
    csv = write_ddi(tmp_path)
    label_map = _map(tmp_path / "map.csv", [("basal-cell-carcinoma", "basal cell carcinoma")])
    result = run_cli(
        "data",
        "summary",
        "--csv",
        csv,
        "--dataset",
        "ddi",
        "--label-map",
        label_map,
        "--format",
        "csv",
    )
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines()[0] == "fst,basal cell carcinoma,total"
    assert "4 image(s) of 4 label(s) not in the label map left out" in result.stderr
