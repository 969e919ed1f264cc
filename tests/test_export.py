"""``dermsynth export``: a selected set as an ImageFolder and as WebDataset shards, loaded back
with ``datasets`` and ``webdataset``; the dataset card and Croissant metadata say synthetic;
an unselected manifest is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermsynth.select.selection import select_candidates
from test_select_cli import make_candidate_run


@pytest.fixture(scope="module")
def selected(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 seeds x 5 candidates, 2 kept per seed (a leak excluded), as `dermsynth select` writes."""
    root = tmp_path_factory.mktemp("export")
    cands = make_candidate_run(root)
    from dermsynth.config import SelectionConfig

    out = cands["run"] / "selected.csv"
    select_candidates(cands["manifest"], out, options=SelectionConfig(k=2), test_csv=cands["plan"])
    return out


def kept_ids(selected: Path) -> set[str]:
    frame = pd.read_csv(selected, dtype=str, keep_default_na=False)
    return set(frame["image_id"][frame["selected"] == "True"])


def test_imagefolder_export_loads_in_datasets(run_cli, selected: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "set"
    res = run_cli(
        "export", selected, "--format", "imagefolder", "--out", out, "--licence", "CC BY-NC-SA 3.0"
    )
    assert res.code == 0, res.stderr
    assert "exported 4 synthetic images" in res.stdout
    assert "no quality metrics" in res.stderr

    ds = datasets.load_dataset("imagefolder", data_dir=str(out), cache_dir=str(tmp_path / "hf"))[
        "train"
    ]
    assert len(ds) == 4 and set(ds["image_id"]) == kept_ids(selected)
    row = next(r for r in ds if r["image_id"] == "s_dark_c00")
    original = Image.open(selected.parent / "images" / "s_dark_c00.png")
    assert np.array_equal(np.asarray(row["image"]), np.asarray(original))  # the same pixels
    assert row["label"] == "psoriasis" and row["fst"] == 6 and row["parent_id"] == "s_dark"
    assert row["synthetic"] is True and row["backend"] == "tiny" and row["rank"] in (1, 2)
    assert 0 <= row["score"] <= 1
    assert "path" not in ds.column_names and "seed_crop" not in ds.column_names

    card = (out / "README.md").read_text()
    assert "**Every image in this set is synthetic.**" in card
    assert "CC BY-NC-SA 3.0" in card and 'license_name: "cc-by-nc-sa-3.0"' in card
    assert "s_dark, s_light" in card  # the seed images' ids
    assert "| psoriasis | 6 | 2 |" in card and "| backend | tiny |" in card
    assert "| kept per seed (k) | 2 |" in card and "score_tone" in card
    croissant = json.loads((out / "croissant.json").read_text())
    assert croissant["rai:dataCollectionType"] == ["Synthetic"]
    assert croissant["rai:hasSyntheticData"] is True
    assert croissant["license"] == "CC BY-NC-SA 3.0"
    assert {d["identifier"] for d in croissant["wasDerivedFrom"]} == {"s_dark", "s_light"}
    fields = {f["name"] for s in croissant["recordSet"] for f in s["field"]}
    assert {"image", "label", "fst", "parent_id", "score", "synthetic"} <= fields
    assert croissant["@context"]["rai"] == "http://mlcommons.org/croissant/RAI/"


def test_webdataset_export_loads_in_webdataset(run_cli, selected: Path, tmp_path: Path) -> None:
    wds = pytest.importorskip("webdataset")
    out = tmp_path / "shards"
    res = run_cli("export", selected, "--format", "webdataset", "--out", out, "--shard-size", "3")
    assert res.code == 0, res.stderr
    assert "no --licence given" in res.stderr
    tars = sorted(out.glob("shard-*.tar"))
    assert [t.name for t in tars] == ["shard-000000.tar", "shard-000001.tar"]
    samples = list(wds.WebDataset([str(t) for t in tars], shardshuffle=False).decode("pil"))
    assert len(samples) == 4
    records = {s["json"]["image_id"]: s for s in samples}
    assert set(records) == kept_ids(selected)
    sample = records["s_light_c01"]
    assert sample["__key__"] == "s_light_c01" and sample["png"].size == (64, 64)
    assert sample["json"]["synthetic"] is True and sample["json"]["parent_id"] == "s_light"
    assert sample["json"]["fst"] == 1 and isinstance(sample["json"]["score"], float)
    card = (out / "README.md").read_text()
    assert "were not stated at export time" in card and "shard-{000000..000001}.tar" in card
    croissant = json.loads((out / "croissant.json").read_text())
    assert croissant["distribution"][0]["includes"] == "shard-*.tar"
    # Exporting again replaces the earlier export whole.
    assert run_cli("export", selected, "--format", "webdataset", "--out", out).code == 0
    assert sorted(p.name for p in out.glob("shard-*.tar")) == ["shard-000000.tar"]


def test_a_set_without_selection_is_refused(run_cli, selected: Path, tmp_path: Path) -> None:
    candidates = selected.parent / "manifest.csv"  # what `dermsynth generate` wrote
    res = run_cli("export", candidates, "--out", tmp_path / "x")
    assert res.code == 2
    assert "holds no selection" in res.stderr and "run `dermsynth select`" in res.stderr
    assert not (tmp_path / "x").exists()

    frame = pd.read_csv(selected, dtype=str, keep_default_na=False)
    frame["selected"] = "False"
    frame["final"] = "False"
    frame["reviewed"] = "rejected"
    nothing = selected.parent / "nothing.csv"
    frame.to_csv(nothing, index=False)
    res = run_cli("export", nothing, "--out", tmp_path / "x")
    assert res.code == 2 and "no image is selected" in res.stderr

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    res = run_cli("export", selected, "--out", tmp_path / "mine")
    assert res.code == 2 and "holds other files" in res.stderr
    res = run_cli("export", selected, "--out", tmp_path / "y", "--format", "zip")
    assert res.code == 2 and "imagefolder or webdataset" in res.stderr


def test_a_set_from_a_simulated_study_says_so(run_cli, selected: Path, tmp_path: Path) -> None:
    import shutil

    study = tmp_path / "study"
    folder = study / "selection" / "train_1-2" / "psoriasis"
    shutil.copytree(selected.parent, folder)
    (study / "study.json").write_text(json.dumps({"config": {"simulated": True}}))
    assert run_cli("export", folder / "selected.csv", "--out", tmp_path / "set").code == 0
    card = (tmp_path / "set" / "README.md").read_text()
    assert "The seed images themselves were simulated" in card
    plain = tmp_path / "plain"
    assert run_cli("export", selected, "--out", plain).code == 0
    assert "simulated" not in (plain / "README.md").read_text()
