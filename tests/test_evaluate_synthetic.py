"""``dermsynth evaluate synthetic``: how good, how new and how fair-toned a synthetic set is.

The images are drawn here: skin-coloured squares (one tone per Fitzpatrick type) carrying a
lesion whose shape and colour tell the condition (a red disc, dark dots, a yellow square).
"""

from __future__ import annotations

import io
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from dermsynth.data.manifest import load_manifest
from dermsynth.errors import DermsynthError
from dermsynth.evaluate.features import INCEPTION_FILE, make_feature_extractor
from dermsynth.evaluate.metrics import wilson_interval
from dermsynth.evaluate.synthetic import (
    DISTANCES_FILE,
    SUMMARY_FILE,
    TABLE_FILE,
    ImageMeasurements,
    SyntheticQuality,
    evaluate_synthetic,
    image_measurements,
)

SKIN = {
    1: (232, 198, 172),
    2: (218, 178, 146),
    3: (192, 148, 112),
    4: (160, 116, 84),
    5: (118, 80, 56),
    6: (82, 56, 40),
}
CONDITIONS = ("folliculitis", "psoriasis", "squamous cell carcinoma")
REQUIRED = [
    "condition",
    "fst_group",
    "n_synthetic",
    "n_real",
    "kid",
    "kid_std",
    "fid",
    "precision",
    "recall",
    "density",
    "coverage",
    "cas",
    "cas_low",
    "cas_high",
    "cas_real",
    "copy_rate",
    "diversity_ratio",
    "ita_wasserstein",
]


def lesion(condition: str, fst: int, rng: np.random.Generator, size=(64, 64)) -> Image.Image:
    """Skin of type ``fst`` with the condition's lesion drawn at a random place and size."""
    width, height = size
    skin = np.array(SKIN[fst], dtype=float) + rng.normal(0, 6, (height, width, 3))
    image = Image.fromarray(np.clip(skin, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    cx, cy = (
        rng.integers(width * 3 // 8, width * 5 // 8),
        rng.integers(height * 3 // 8, height * 5 // 8),
    )
    r = int(rng.integers(width // 6, width // 4))
    if condition == "psoriasis":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(200, 40, 50))
    elif condition == "folliculitis":
        for _ in range(12):
            x, y = rng.integers(4, width - 4), rng.integers(4, height - 4)
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(40, 30, 20))
    else:
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=(230, 220, 90))
    return image


def save_rows(root: Path, rows: list[dict], images: list[Image.Image]) -> list[dict]:
    for row, image in zip(rows, images, strict=True):
        image.save(root / row["path"])
    return rows


@dataclass
class World:
    root: Path
    real: Path  # a plan: split train / test
    copies: Path  # pixel copies of the real 5-6 images
    noise: Path  # uniform noise, labelled
    drawn: Path  # new lesions drawn like the real ones: the label is in the image


def _row(image_id: str, label: str, fst: int, **extra: object) -> dict:
    return {"image_id": image_id, "path": f"{image_id}.png", "label": label, "fst": fst, **extra}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("synthetic_quality")
    rng = np.random.default_rng(0)
    real = []
    for c, condition in enumerate(CONDITIONS):
        for fst, count in ((1, 2), (2, 2), (5, 3), (6, 3)):
            for k in range(count):
                real.append(_row(f"r{c}_{fst}_{k}", condition, fst, split="train"))
        for fst in (5, 6):
            real.append(_row(f"t{c}_{fst}", condition, fst, split="test"))
    save_rows(root, real, [lesion(r["label"], r["fst"], rng) for r in real])
    plan = pd.DataFrame(real).assign(origin="real", parent_id="")
    plan.to_csv(root / "real.csv", index=False)

    cell = [r for r in real if r["fst"] >= 5 and r["split"] == "train"]
    copies = [
        _row(f"c_{r['image_id']}", r["label"], r["fst"], parent_id=r["image_id"]) for r in cell
    ]
    for r, copy in zip(cell, copies, strict=True):
        shutil.copy(root / r["path"], root / copy["path"])
    # Two images from each of three seeds: six per condition, as many as the real cell holds.
    seeds = [r for r in cell if r["image_id"].endswith("_0") or r["image_id"].endswith("_5_1")]
    noise = [
        _row(f"n_{r['image_id']}_{k}", r["label"], r["fst"], parent_id=r["image_id"])
        for r in seeds
        for k in range(2)
    ]
    pixels = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in noise]
    save_rows(root, noise, [Image.fromarray(p) for p in pixels])
    drawn = [
        _row(f"s_{r['image_id']}_{k}", r["label"], r["fst"], parent_id=r["image_id"])
        for r in seeds
        for k in range(2)
    ]
    save_rows(root, drawn, [lesion(r["label"], r["fst"], rng) for r in drawn])
    paths = {}
    for name, rows in (("copies", copies), ("noise", noise), ("drawn", drawn)):
        frame = pd.DataFrame(rows).assign(origin="synthetic")
        frame.to_csv(root / f"{name}.csv", index=False)
        paths[name] = root / f"{name}.csv"
    return World(root, root / "real.csv", paths["copies"], paths["noise"], paths["drawn"])


@pytest.fixture(scope="module")
def shared() -> ImageMeasurements:
    """One feature store for the module: each image is read and featurized once."""
    return image_measurements()


@pytest.fixture(scope="module")
def measured(world: World, shared: ImageMeasurements) -> dict[str, SyntheticQuality]:
    """Each set measured once against the real plan."""
    real = load_manifest(world.real)
    return {
        name: evaluate_synthetic(load_manifest(getattr(world, name)), real, features=shared)
        for name in ("copies", "noise", "drawn")
    }


def cells(result: SyntheticQuality) -> pd.DataFrame:
    return result.table.set_index("condition")


# --------------------------------------------------------------------------- the metrics


def test_identical_sets_have_kid_and_fid_near_zero_and_copy_rate_one(
    measured: dict[str, SyntheticQuality],
) -> None:
    copies, noise = cells(measured["copies"]), cells(measured["noise"])
    assert list(copies.index) == sorted(CONDITIONS)
    assert (copies["fst_group"] == "5-6").all() and (copies["n_synthetic"] == 6).all()
    assert (copies["n_real"] == 6).all()  # the test rows of the plan are not compared with
    # KID's unbiased estimate of a set against itself is a hair below zero at this N.
    assert (copies["kid"].abs() < 1e-4 * noise["kid"]).all()
    assert (copies["fid"].abs() < 1e-2).all() and (noise["fid"] > 1000).all()
    assert (copies["precision"] == 1).all() and (copies["coverage"] == 1).all()
    assert (copies["copy_rate"] == 1).all() and (copies["n_copies"] == 6).all()
    distances = measured["copies"].distances
    assert np.allclose(distances["d_seed"], 0, atol=1e-4)
    assert distances["copied"].all()


def test_noise_is_far_from_real_never_a_copy_and_teaches_nothing(
    measured: dict[str, SyntheticQuality],
) -> None:
    noise, drawn = cells(measured["noise"]), cells(measured["drawn"])
    assert (noise["kid"] - 3 * noise["kid_std"] > 100 * drawn["kid"].abs().max()).all()
    assert (noise["precision"] == 0).all() and (noise["copy_rate"] == 0).all()
    # Trained on noise, the classifier is no better than chance (1/3) on real images; trained
    # on as many real images it recognizes them all.
    assert noise["cas"].mean() <= 0.5
    assert (noise["cas_real"] == 1).all()
    assert noise["ita_wasserstein"].min() > 3 * drawn["ita_wasserstein"].max()


def test_a_set_that_carries_its_labels_scores_a_high_cas(
    measured: dict[str, SyntheticQuality],
) -> None:
    drawn = cells(measured["drawn"])
    assert (drawn["cas"] == 1).all() and (drawn["cas_ratio"] == 1).all()
    # Each real cell of 6 splits into 3 reference-training and 3 test images.
    assert (drawn["cas_n"] == 3).all()
    low, high = wilson_interval(3, 3)
    assert drawn["cas_low"].tolist() == pytest.approx([low] * 3)
    assert drawn["cas_high"].tolist() == pytest.approx([high] * 3)
    assert drawn["copy_rate"].mean() < 0.5
    assert ((drawn["diversity_ratio"] > 0) & (drawn["diversity_ratio"] < 2)).all()
    assert (drawn["tone_match"] == 1).all()  # drawn on type V-VI skin, asked for V-VI
    assert (drawn["prdc_k"] == 4).all() and (drawn["kid_subset_size"] == 6).all()
    quantiles = measured["drawn"].quantiles
    overall = quantiles[(quantiles["condition"] == "(all)") & (quantiles["distance"] == "d_real")]
    assert overall["n"].item() == 18 and overall["q05"].item() <= overall["q95"].item()
    assert any("FID is biased" in n for n in measured["drawn"].notes)


def test_copies_of_generator_or_test_images_are_caught(
    world: World, tmp_path: Path, shared: ImageMeasurements
) -> None:
    drawn = load_manifest(world.drawn)
    # The generator was trained on the first two synthetic images' exact pixels; two others
    # are copies of test images.
    generator = drawn.iloc[:2].assign(image_id=["g0", "g1"])
    test_rows = load_manifest(world.real)
    test_rows = test_rows[test_rows["split"] == "test"].iloc[:2]
    leaked = drawn.copy()
    for i, row in zip((2, 3), test_rows.itertuples(), strict=True):
        shutil.copy(world.root / Path(row.path).name, tmp_path / f"leak{i}.png")
        leaked.loc[i, "path"] = str(tmp_path / f"leak{i}.png")
    result = evaluate_synthetic(
        leaked,
        load_manifest(world.real),
        generator_data=generator,
        copy_threshold=0.5,
        features=shared,
    )
    d = result.distances.set_index("image_id")
    assert d.loc[drawn["image_id"][:2], "nearest_set"].tolist() == ["generator"] * 2
    assert d.loc[drawn["image_id"][2:4], "nearest_set"].tolist() == ["test"] * 2
    assert d.loc[drawn["image_id"][:4], "copied"].all()
    assert result.info["copy_threshold"] == 0.5
    assert "given with --copy-threshold" in " ".join(result.notes)


# --------------------------------------------------------------------------- the command


def test_cli_writes_the_table_distances_and_summary(world: World, tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "quality"
    args = ("--candidates", world.drawn, "--real", world.real, "--groups", "1-2,3-4,5-6")
    result = run_cli(
        "evaluate", "synthetic", *args, "--format", "csv", "--out", out, "--device", "cpu"
    )
    assert result.code == 0, result.stderr
    table = pd.read_csv(io.StringIO(result.stdout))
    assert set(REQUIRED) <= set(table.columns)
    assert table["condition"].tolist() == sorted(CONDITIONS) and (table["cas"] == 1).all()
    assert "note: FID is biased upwards at small N" in result.stderr
    written = pd.read_csv(out / TABLE_FILE)
    assert written[REQUIRED].equals(table[REQUIRED])
    assert len(pd.read_csv(out / DISTANCES_FILE)) == 18
    text = (out / SUMMARY_FILE).read_text()
    summary = json.loads(text)  # strict JSON: NaN is written as null
    assert "NaN" not in text and summary["features"] == "colour-texture"
    assert summary["measured"].startswith("all 18 synthetic candidate(s)")

    shown = run_cli("evaluate", "synthetic", *args)
    assert shown.code == 0 and "cas (95% CI)" in shown.stdout and "1.00 (0.44-1.00)" in shown.stdout
    group_help = run_cli("evaluate", "--help")
    assert group_help.code == 0 and "synthetic" in group_help.stdout


def test_a_selected_manifest_is_measured_by_its_final_selection(
    world: World, tmp_path: Path, shared: ImageMeasurements
) -> None:
    drawn = pd.read_csv(world.drawn)
    drawn["selected"] = [i % 2 == 0 for i in range(len(drawn))]
    drawn["final"] = drawn["selected"]
    drawn.loc[1, "final"] = True  # a reviewer accepted one more
    path = tmp_path / "selected.csv"
    drawn.assign(path=[str(world.root / p) for p in drawn["path"]]).to_csv(path, index=False)
    result = evaluate_synthetic(load_manifest(path), load_manifest(world.real), features=shared)
    assert result.info["measured"] == (
        "the final selection (column final): 10 of 18 synthetic image(s)"
    )
    table = result.table
    assert table["n_synthetic"].sum() == 10
    # KID subsets have as many images as the smaller side; where the sides differ they vary.
    assert (table["kid_subset_size"] == table[["n_real", "n_synthetic"]].min(axis=1)).all()
    uneven = table["n_synthetic"] != table["n_real"]
    assert uneven.any() and (table.loc[uneven, "kid_std"] > 0).all()


# --------------------------------------------------------------------------- bad input


def test_cells_too_small_are_not_computable_never_zero(
    world: World, shared: ImageMeasurements
) -> None:
    drawn = load_manifest(world.drawn)
    rng = np.random.default_rng(3)
    extra = [
        _row("x_nematode_0", "nematode infection", 5, parent_id="r0_5_0"),
        _row("x_nematode_1", "nematode infection", 6, parent_id="r0_5_0"),
        _row("x_psoriasis_light", "psoriasis", 1, parent_id="r1_1_0"),
    ]
    save_rows(world.root, extra, [lesion("psoriasis", r["fst"], rng) for r in extra])
    frame = pd.DataFrame(extra).assign(origin="synthetic")
    frame["path"] = [str(world.root / p) for p in frame["path"]]
    drawn["path"] = [str(world.root / Path(p).name) for p in drawn["path"]]
    candidates = pd.concat([drawn, frame], ignore_index=True)
    result = evaluate_synthetic(candidates, load_manifest(world.real), features=shared)
    table = result.table.set_index(["condition", "fst_group"])

    nematode = table.loc[("nematode infection", "5-6")]
    assert nematode["n_synthetic"] == 2 and nematode["n_real"] == 0
    for column in (
        "kid",
        "fid",
        "precision",
        "coverage",
        "cas",
        "diversity_ratio",
        "ita_wasserstein",
    ):
        assert math.isnan(nematode[column]), column
    assert "no real images of this cell outside the test set" in nematode["notes"]
    assert any("nematode infection / 5-6" in n for n in result.notes)

    single = table.loc[("psoriasis", "1-2")]
    assert single["n_synthetic"] == 1 and single["n_real"] == 4
    for column in ("kid", "kid_std", "fid", "precision", "recall", "density", "coverage", "cas"):
        assert math.isnan(single[column]), column
    assert "KID and FID not computable" in single["notes"]
    assert "CAS not computable" in single["notes"]  # one condition in group 1-2: no classifier
    assert not math.isnan(single["copy_rate"])  # one image can still be a copy (or not)
    # The other cells are unaffected by their neighbours' troubles.
    assert table.loc[("psoriasis", "5-6"), "cas"] == 1


def test_unreadable_and_odd_sized_images_are_skipped_or_resized(
    world: World, tmp_path: Path, shared: ImageMeasurements
) -> None:
    drawn = load_manifest(world.drawn)
    rng = np.random.default_rng(4)
    for i in range(6):  # some synthetic images come at another size
        big = tmp_path / f"big{i}.png"
        lesion(drawn.loc[i, "label"], int(drawn.loc[i, "fst"]), rng, size=(96, 80)).save(big)
        drawn.loc[i, "path"] = str(big)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    drawn.loc[6, "path"] = str(tmp_path / "broken.png")
    drawn.loc[7, "path"] = str(tmp_path / "gone.png")
    result = evaluate_synthetic(drawn, load_manifest(world.real), features=shared)
    assert result.table["n_synthetic"].sum() == 16 and len(result.distances) == 16
    assert result.info["n_unreadable"] == 2
    notes = " ".join(result.notes)
    assert "unreadable images skipped: 2 synthetic" in notes and "broken.png" in notes
    assert "the images come in 2 sizes (64x64, 96x80" in notes and "128 px square" in notes
    assert (result.table["cas"] == 1).all()


def test_bad_requests_are_one_line_errors(
    world: World, tmp_path: Path, run_cli, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DermsynthError, match=INCEPTION_FILE) as info:
        make_feature_extractor("inception")
    assert "checkpoints/" in str(info.value)
    with pytest.raises(DermsynthError, match="no such folder; place the model folder there"):
        make_feature_extractor(f"dinov2:{tmp_path / 'dinov2-small'}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(DermsynthError, match="pass clip:/path/to/folder, or put the model in"):
        make_feature_extractor("clip:someone/clip-absent")
    with pytest.raises(DermsynthError, match="unknown feature extractor 'vgg'"):
        make_feature_extractor("vgg")

    base = ("evaluate", "synthetic", "--candidates", world.drawn, "--real", world.real)
    result = run_cli(*base, "--features", "inception")
    assert result.code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert INCEPTION_FILE in result.stderr
    only_real = run_cli("evaluate", "synthetic", "--candidates", world.real, "--real", world.real)
    assert only_real.code == 2 and "no rows with origin=synthetic" in only_real.stderr
    wrong_groups = run_cli(*base, "--groups", "3-4")
    assert wrong_groups.code == 2 and "the set's requested types: 5, 6" in wrong_groups.stderr


def test_dinov2_features_from_a_local_folder(world: World, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    import torch
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    folder = tmp_path / "dinov2-tiny"
    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        image_size=32,
        patch_size=8,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        Dinov2Model(config).save_pretrained(folder)
    BitImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_convert_rgb=True
    ).save_pretrained(folder)
    copies = load_manifest(world.copies)
    result = evaluate_synthetic(copies, load_manifest(world.real), features=f"dinov2:{folder}")
    assert result.info["features"] == f"dinov2:{folder}"
    assert (result.table["fid"].abs() < 1e-3).all() and (result.table["copy_rate"] == 1).all()
