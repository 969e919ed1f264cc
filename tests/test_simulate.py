"""The simulated dataset: counts, schema, determinism, resume, skin tone, contrast, learnability."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage.color import rgb2lab

from dermsynth.data.fst import FST_TYPES, UNKNOWN_FST, ita_to_fst
from dermsynth.data.manifest import PAPER_CONDITIONS, load_manifest
from dermsynth.data.simulate import (
    CSV_COLUMNS,
    CSV_NAME,
    ITA_RANGES,
    PARTITIONS,
    SIMULATED_NOTE,
    TABLE1,
    cell_counts,
    plan_dataset,
    render_image,
    render_sample,
    simulate_dataset,
    skin_lab,
)
from dermsynth.errors import DermsynthError
from dermsynth.select.tone import fit_empirical_thresholds, ita_to_fst_array, tone_score

SCALE = 0.02
SIZE = 64


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    simulate_dataset(out, scale=SCALE, random_seed=3, image_size=SIZE, workers=1, progress=False)
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "images").iterdir())}


def test_cell_counts_follow_table1_scaled() -> None:
    counts = cell_counts(0.25)
    for condition, row in TABLE1.items():
        for fst, n in zip(FST_TYPES, row, strict=True):
            assert counts[(condition, fst)] == max(1, math.floor(0.25 * n + 0.5))
    # At a tiny scale every cell of Table 1 is still present.
    tiny = cell_counts(0.001)
    assert all(tiny[(c, f)] == 1 for c in TABLE1 for f in FST_TYPES)
    assert not any(f == UNKNOWN_FST for _, f in tiny)
    assert 650 <= sum(n for (_, f), n in counts.items() if f != UNKNOWN_FST) <= 700


def test_csv_schema_counts_and_images(sim_dir: Path) -> None:
    csv = sim_dir / CSV_NAME
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    assert tuple(table.columns) == CSV_COLUMNS
    counts = table.groupby(["label", "fitzpatrick_scale"]).size()
    for (condition, fst), n in cell_counts(SCALE).items():
        assert counts[(condition, str(fst))] == n
    assert set(table["label"]) == set(PAPER_CONDITIONS)
    for condition, (nine, three) in PARTITIONS.items():
        rows = table[table["label"] == condition]
        assert set(rows["nine_partition_label"]) == {nine}
        assert set(rows["three_partition_label"]) == {three}
    assert (table["qc"] == "").all()
    assert (table["url"] == "https://simulated.invalid/" + table["md5hash"] + ".jpg").all()
    assert table["url_alphanum"].str.fullmatch(r"[0-9A-Za-z]+\.jpg").all()

    manifest = load_manifest(csv)
    assert manifest.attrs["source"] == "fitzpatrick17k"
    assert len(manifest) == len(table)
    for path in manifest["path"]:
        with Image.open(path) as img:
            img.load()
            assert img.format == "JPEG" and img.mode == "RGB"
            assert 0.85 * SIZE - 1 <= max(img.size) <= SIZE
            assert min(img.size) >= SIZE * 0.85 * 2 / 3 - 1


def test_unknown_fst_and_annotator_disagreement() -> None:
    rows, _ = plan_dataset(Path("unused"), 0.25, 0, 512)
    table = pd.DataFrame(rows)
    share_unknown = (table["fitzpatrick_scale"] == UNKNOWN_FST).mean()
    assert 0.02 < share_unknown < 0.08
    known = table[(table["fitzpatrick_scale"] > 0) & (table["fitzpatrick_centaur"] > 0)]
    agree = (known["fitzpatrick_scale"] == known["fitzpatrick_centaur"]).mean()
    assert 0.5 < agree < 0.8
    assert (known["fitzpatrick_scale"] - known["fitzpatrick_centaur"]).abs().max() <= 2


def test_cli_summary_reads_it(sim_dir: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("data", "summary", "--csv", sim_dir / CSV_NAME)
    assert result.code == 0, result.stderr
    assert "psoriasis" in result.stdout and "prurigo nodularis" in result.stdout


def test_byte_identical_and_independent_of_workers(sim_dir: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    simulate_dataset(again, scale=SCALE, random_seed=3, image_size=SIZE, workers=2, progress=False)
    assert _files(again) == _files(sim_dir)
    assert (again / CSV_NAME).read_bytes() == (sim_dir / CSV_NAME).read_bytes()
    other = tmp_path / "other"
    simulate_dataset(other, scale=SCALE, random_seed=4, image_size=SIZE, workers=1, progress=False)
    assert not set(_files(other)) & set(_files(sim_dir))


def test_resume_redraws_only_missing(sim_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(sim_dir, copy)
    images = sorted((copy / "images").iterdir())
    gone = images[5]
    original = gone.read_bytes()
    gone.unlink()
    images[7].write_bytes(b"not a jpeg")  # a corrupt file is redrawn too
    before = {p.name: p.stat().st_mtime_ns for p in images if p not in (gone, images[7])}
    simulate_dataset(copy, scale=SCALE, random_seed=3, image_size=SIZE, workers=1, progress=False)
    assert gone.read_bytes() == original
    assert images[7].read_bytes() == (sim_dir / "images" / images[7].name).read_bytes()
    after = {p.name: p.stat().st_mtime_ns for p in sorted((copy / "images").iterdir())}
    assert all(after[name] == mtime for name, mtime in before.items())


def _healthy_lab(sample) -> np.ndarray:  # type: ignore[no-untyped-def]
    lab = rgb2lab(np.asarray(sample.image))
    healthy = (sample.lesion_mask < 0.01) & sample.skin_mask
    return lab[healthy]


@pytest.fixture(scope="module")
def measured_ita() -> dict[int, list[float]]:
    """ITA of the healthy skin of one rendered photo per condition and type, as selection sees it."""
    out: dict[int, list[float]] = {}
    for fst in FST_TYPES:
        out[fst] = []
        for i, condition in enumerate(PAPER_CONDITIONS):
            sample = render_sample(condition, fst, 100 + i, image_size=160)
            # The inpainting-mask convention of tone_score: black = lesion, white = surround.
            mask = np.where(sample.lesion_mask > 0.05, 0, 255).astype(np.uint8)
            result = tone_score(np.asarray(sample.image), fst, lesion_mask=mask)
            assert not result.fallback, (condition, fst)
            out[fst].append(result.ita)
    return out


def test_skin_tone_per_type_is_realistic_and_monotone(measured_ita: dict[int, list[float]]) -> None:
    for fst, values in measured_ita.items():
        low, high = ITA_RANGES[fst]
        assert all(low - 4 <= v <= high + 4 for v in values), (fst, values)
    medians = [float(np.median(measured_ita[f])) for f in FST_TYPES]
    assert all(a > b + 8 for a, b in zip(medians, medians[1:], strict=False)), medians
    assert max(measured_ita[6]) < -35, "FST VI skin lies well below ITA -30"
    assert -30 < medians[4] < 5 and max(measured_ita[5]) < 10, "FST V near the V/VI boundary"
    assert skin_lab(6)[0] < 40 < skin_lab(5)[0] < 50


def test_kinyanjui_reads_i_to_iv_and_puts_v_with_vi(measured_ita: dict[int, list[float]]) -> None:
    for fst in (1, 2, 3, 4):
        assert [ita_to_fst(v) for v in measured_ita[fst]] == [fst] * len(PAPER_CONDITIONS)
    # Every ITA <= 10 is VI under the Kinyanjui thresholds: simulated V reads as VI there ...
    assert {ita_to_fst(v) for v in measured_ita[5] + measured_ita[6]} == {6}
    # ... and thresholds fitted to labelled images separate all six types.
    itas = [v for f in FST_TYPES for v in measured_ita[f]]
    types = [f for f in FST_TYPES for _ in measured_ita[f]]
    thresholds = fit_empirical_thresholds(itas, types)
    assert -38 < thresholds[-1] < -26
    assert ita_to_fst_array(np.array(itas), thresholds).tolist() == types


def _delta_e(sample) -> float:  # type: ignore[no-untyped-def]
    lab = rgb2lab(np.asarray(sample.image))
    lesion = np.median(lab[(sample.lesion_mask > 0.6) & sample.skin_mask], axis=0)
    skin = np.median(_healthy_lab(sample), axis=0)
    return float(np.linalg.norm(lesion - skin))


@pytest.mark.parametrize("condition", ["neutrophilic dermatoses", "nematode infection"])
def test_erythema_contrast_lower_on_dark_skin(condition: str) -> None:
    light = [_delta_e(render_sample(condition, 1, s, image_size=160)) for s in range(4)]
    dark = [_delta_e(render_sample(condition, 6, s, image_size=160)) for s in range(4)]
    assert np.mean(dark) < 0.8 * np.mean(light)
    # Violaceous-brown, not red, on dark skin: much less a* gained over the skin.
    redness = {
        f: [_lesion_minus_skin(render_sample(condition, f, s, image_size=160)) for s in range(4)]
        for f in (1, 6)
    }
    assert np.mean([d[1] for d in redness[6]]) < 0.5 * np.mean([d[1] for d in redness[1]])


def _lesion_minus_skin(sample) -> np.ndarray:  # type: ignore[no-untyped-def]
    lab = rgb2lab(np.asarray(sample.image))
    lesion = np.median(lab[(sample.lesion_mask > 0.6) & sample.skin_mask], axis=0)
    return lesion - np.median(_healthy_lab(sample), axis=0)


def _features(image: Image.Image) -> np.ndarray:
    lab = rgb2lab(np.asarray(image.resize((48, 48))))
    rel = lab - np.median(lab.reshape(-1, 3), axis=0)
    parts = [np.percentile(rel[..., c], [1, 5, 25, 75, 95, 99]) for c in range(3)]
    grad = np.hypot(*np.gradient(lab[..., 0]))
    parts.append(np.percentile(grad, [50, 90, 99]))
    return np.concatenate(parts)


def test_conditions_learnable_on_light_skin() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xs, ys = [], []
    for label, condition in enumerate(PAPER_CONDITIONS):
        for k in range(16):
            image = render_image(condition, 1 + k % 2, 1000 * label + k, image_size=96)
            xs.append(_features(image))
            ys.append(label)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5))
    accuracy = cross_val_score(model, np.stack(xs), np.array(ys), cv=4).mean()
    assert accuracy > 0.4  # chance is 1/7


def test_reserve_table_of_chosen_cells_has_its_own_ids_and_images(
    sim_dir: Path, tmp_path: Path
) -> None:
    cells = [("psoriasis", 5), ("psoriasis", 6), ("squamous cell carcinoma", 6)]
    reserve = tmp_path / "reserve"
    csv = simulate_dataset(
        reserve,
        scale=SCALE,
        random_seed=3,  # the main table's seed: the prefix alone keeps the draws apart
        image_size=SIZE,
        workers=1,
        progress=False,
        cells=cells,
        id_prefix="reserve-",
    )
    table = pd.read_csv(csv, dtype=str)
    counts = cell_counts(SCALE)
    assert table.groupby(["label", "fitzpatrick_scale"]).size().to_dict() == {
        (c, str(f)): counts[(c, f)] for c, f in cells
    }
    assert table["md5hash"].str.fullmatch(r"reserve-[0-9a-f]{32}").all()
    manifest = load_manifest(csv)
    assert set(manifest["image_id"]) == set(table["md5hash"])
    main = pd.read_csv(sim_dir / CSV_NAME, dtype=str)
    assert not set(table["md5hash"]) & set(main["md5hash"])
    main_bytes = set(_files(sim_dir).values())
    assert not any(b in main_bytes for b in _files(reserve).values())
    # Every cell, no prefix: the plan (ids, rows, image keys) is the main table's own.
    assert plan_dataset(sim_dir, SCALE, 3, SIZE, list(counts)) == plan_dataset(
        sim_dir, SCALE, 3, SIZE
    )


def test_reserve_table_bad_inputs(tmp_path: Path) -> None:
    for cells, message in (
        ([("eczema", 5)], "unknown condition 'eczema'"),
        ([("psoriasis", 7)], "FST in cells must be 1-6"),
        ([], "cells is empty"),
        (["psoriasis"], r"\(condition, FST\) pairs"),
    ):
        with pytest.raises(DermsynthError, match=message):
            simulate_dataset(tmp_path / "r", scale=SCALE, image_size=SIZE, cells=cells)
    with pytest.raises(DermsynthError, match="id prefix"):
        simulate_dataset(tmp_path / "r", scale=SCALE, image_size=SIZE, id_prefix="../x")
    assert not (tmp_path / "r").exists()


def test_render_image_size_and_note() -> None:
    image = render_image("psoriasis", 4, 1, size=(120, 90))
    assert image.size == (120, 90) and image.mode == "RGB"
    assert "simulated" in SIMULATED_NOTE and "not real patients" in SIMULATED_NOTE
    with pytest.raises(DermsynthError):
        render_image("eczema", 3, 0)
    with pytest.raises(DermsynthError):
        render_image("psoriasis", 7, 0)


def test_bad_inputs(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("data", "simulate", "--out", tmp_path / "x", "--scale", "0")
    assert result.code == 2
    assert "--scale" in result.stderr
    with pytest.raises(DermsynthError, match="scale"):
        simulate_dataset(tmp_path / "y", scale=0)
    with pytest.raises(DermsynthError, match="at least 64"):
        simulate_dataset(tmp_path / "y", image_size=32)
    assert not (tmp_path / "x").exists()
