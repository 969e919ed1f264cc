"""``dermsynth select`` on a constructed candidate run: decisions, reasons, sheets, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from dermsynth.config import SelectionConfig
from dermsynth.errors import DermsynthError
from dermsynth.select.selection import parse_weights, select_candidates

SEEDS = {"s_light": (75.0, 10.0, 14.0, 1), "s_dark": (30.0, 10.0, 15.0, 6)}


def _lab(lightness: float, a: float, b: float) -> np.ndarray:
    from skimage.color import lab2rgb

    return lab2rgb(np.array([[[lightness, a, b]]], dtype=np.float64))[0, 0] * 255


def _skin(lab: tuple[float, float, float], seed: int, size: int = 64) -> np.ndarray:
    """Skin of one Lab colour with texture and a dark central lesion."""
    rng = np.random.default_rng(seed)
    image = np.tile(_lab(*lab), (size, size, 1)) + rng.normal(0, 10, (size, size, 3))
    yy, xx = np.mgrid[0:size, 0:size]
    lesion = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= (size * 0.2) ** 2
    image[lesion] = _lab(35, 35, 20) + rng.normal(0, 8, (int(lesion.sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _test_image(seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(100 + seed)
    image = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.NEAREST))


def make_candidate_run(root: Path, *, with_crops: bool = True) -> dict[str, Path]:
    """A run folder like ``dermsynth generate`` writes: 2 seeds x 5 candidates, and a plan.

    Per seed: c00 and c01 good variants, c02 blurred, c03 colour-cast, c04 an exact copy of
    a test image (a leak).
    """
    run = root / "gen"
    for sub in ("images", "seeds", "real"):
        (run / sub).mkdir(parents=True, exist_ok=True)
    plan_rows, rows = [], []
    for t in range(3):
        path = root / f"test{t}.png"
        Image.fromarray(_test_image(t)).save(path)
        plan_rows.append(
            {
                "image_id": f"test{t}",
                "path": str(path),
                "label": "psoriasis",
                "fst": 3,
                "origin": "real",
                "parent_id": "",
                "split": "test",
                "test_group": "3-4",
            }
        )
    for k, (seed_id, (lightness, a, b, fst)) in enumerate(SEEDS.items()):
        seed = _skin((lightness, a, b), k)
        real = run / "real" / f"{seed_id}.png"
        Image.fromarray(seed).save(real)
        crop = run / "seeds" / f"{seed_id}_crop.png"
        Image.fromarray(seed).save(crop)
        mask = np.full((64, 64), 255, dtype=np.uint8)
        yy, xx = np.mgrid[0:64, 0:64]
        mask[(yy - 32) ** 2 + (xx - 32) ** 2 <= 16**2] = 0
        mask_path = run / "seeds" / f"{seed_id}_mask.png"
        Image.fromarray(mask).save(mask_path)
        plan_rows.append(
            {
                "image_id": seed_id,
                "path": str(real),
                "label": "psoriasis",
                "fst": fst,
                "origin": "real",
                "parent_id": "",
                "split": "seed",
                "test_group": "",
            }
        )
        variants = [
            _skin((lightness, a, b), 10 + k),
            _skin((lightness + 2, a, b), 20 + k),
            np.asarray(Image.fromarray(seed).filter(ImageFilter.GaussianBlur(3))),
            np.clip(seed.astype(int) + np.array([-50, 10, 60]), 0, 255).astype(np.uint8),
            _test_image(k),
        ]
        for c, array in enumerate(variants):
            image_id = f"{seed_id}_c{c:02d}"
            path = run / "images" / f"{image_id}.png"
            Image.fromarray(array).save(path)
            rows.append(
                {
                    "image_id": image_id,
                    "path": str(path),
                    "label": "psoriasis",
                    "fst": fst,
                    "origin": "synthetic",
                    "parent_id": seed_id,
                    "backend": "tiny",
                    "candidate": c,
                    "seed_crop": str(crop) if with_crops else "",
                    "seed_mask": str(mask_path),
                }
            )
    pd.DataFrame(rows).to_csv(run / "manifest.csv", index=False)
    pd.DataFrame(plan_rows).to_csv(root / "plan.csv", index=False)
    return {"run": run, "manifest": run / "manifest.csv", "plan": root / "plan.csv"}


@pytest.fixture
def cands(tmp_path: Path) -> dict[str, Path]:
    return make_candidate_run(tmp_path)


def test_select_keeps_top_k_excludes_leaks_and_explains(run_cli, cands: dict[str, Path]) -> None:
    out = cands["run"] / "selected.csv"
    res = run_cli(
        "select",
        "--candidates",
        cands["manifest"],
        "--k",
        "2",
        "--out",
        out,
        "--plan",
        cands["plan"],
    )
    assert res.code == 0, res.stderr
    assert "4 of 10 candidate(s) kept" in res.stdout and "2 excluded" in res.stdout
    assert "pathology not scored" in res.stderr
    frame = pd.read_csv(out, dtype=str, keep_default_na=False)
    for column in (
        "score_tone",
        "fst_estimated",
        "ita",
        "score_similarity",
        "flag_similarity",
        "score_quality",
        "blur",
        "clipped",
        "colour_cast",
        "leak_distance",
        "excluded",
        "score",
        "rank",
        "selected",
        "reviewed",
        "final",
        "reason",
        "backend",
    ):
        assert column in frame.columns, column
    assert "score_pathology" not in frame.columns
    frame = frame.set_index("image_id")
    for seed_id, (_, _, _, fst) in SEEDS.items():
        group = frame[frame["parent_id"] == seed_id]
        assert (group["selected"] == "True").sum() == 2
        leak = group.loc[f"{seed_id}_c04"]
        assert leak["excluded"] == "True" and leak["selected"] == "False"
        assert leak["reason"].startswith("excluded: leakage (phash distance 0 to test image test")
        # The good variants keep the seed's tone and beat the blurred and tinted ones.
        assert set(group.index[group["selected"] == "True"]) == {f"{seed_id}_c00", f"{seed_id}_c01"}
        assert group.loc[f"{seed_id}_c00", "fst_estimated"] == str(fst)
        assert group.loc[f"{seed_id}_c00", "reason"].startswith(
            ("kept: rank 1 of 4 (score ", "kept: rank 2 of 4 (score ")
        )
        assert group.loc[f"{seed_id}_c03", "reason"].startswith("dropped: rank ")
        assert float(group.loc[f"{seed_id}_c02", "blur"]) < float(
            group.loc[f"{seed_id}_c00", "blur"]
        )
    assert (frame["final"] == frame["selected"]).all()
    sheets = sorted(p.name for p in (cands["run"] / "contact_sheets").iterdir())
    assert sheets == ["s_dark.png", "s_light.png"]
    assert Image.open(cands["run"] / "contact_sheets" / "s_dark.png").size[0] >= 5 * 128
    info = json.loads((cands["run"] / "selection.json").read_text())
    assert info["manifest"] == "selected.csv" and "pathology" not in info["weights"]


def test_k_larger_than_candidates_keeps_what_there_is(run_cli, cands: dict[str, Path]) -> None:
    out = cands["run"] / "sel.csv"
    res = run_cli(
        "select",
        "--candidates",
        cands["manifest"],
        "--k",
        "9",
        "--out",
        out,
        "--plan",
        cands["plan"],
        "--no-contact-sheets",
        "--weights",
        "pathology=0",
    )
    assert res.code == 0, res.stderr
    assert "seed s_light: only 4 usable candidate(s) of 5, fewer than k=9; kept all 4" in res.stderr
    assert "pathology not scored" not in res.stderr
    frame = pd.read_csv(out)
    assert frame["selected"].sum() == 8
    assert not (cands["run"] / "contact_sheets").exists()


def test_without_test_images_the_guard_is_off_and_said(cands: dict[str, Path]) -> None:
    result = select_candidates(
        cands["manifest"],
        cands["run"] / "s.csv",
        options=SelectionConfig(k=4, contact_sheets=False),
    )
    assert any("leakage guard off" in n for n in result.notes)
    assert not result.manifest["excluded"].any()


def test_missing_seeds_are_refused_then_found_with_seeds(run_cli, tmp_path: Path) -> None:
    paths = make_candidate_run(tmp_path, with_crops=False)
    out = paths["run"] / "sel.csv"
    res = run_cli("select", "--candidates", paths["manifest"], "--out", out)
    assert res.code == 2
    assert "lacks the seed image of 2 of 2 seed(s): 's_light', 's_dark'" in res.stderr
    assert "--seeds" in res.stderr
    res = run_cli(
        "select",
        "--candidates",
        paths["manifest"],
        "--out",
        out,
        "--seeds",
        paths["plan"],
        "--test-images",
        paths["plan"],
    )
    assert res.code == 0, res.stderr


def test_missing_images_are_excluded_and_all_missing_is_an_error(
    run_cli, cands: dict[str, Path]
) -> None:
    (cands["run"] / "images" / "s_light_c00.png").unlink()
    out = cands["run"] / "sel.csv"
    res = run_cli(
        "select", "--candidates", cands["manifest"], "--out", out, "--plan", cands["plan"]
    )
    assert res.code == 0, res.stderr
    assert "1 candidate image(s) missing or unreadable: excluded" in res.stderr
    row = pd.read_csv(out).set_index("image_id").loc["s_light_c00"]
    assert bool(row["excluded"]) and row["reason"].startswith(
        "excluded: image unreadable (image file not found"
    )
    for png in (cands["run"] / "images").glob("*.png"):
        png.unlink()
    res = run_cli("select", "--candidates", cands["manifest"], "--out", out)
    assert res.code == 2 and "none of the 10 candidate image(s) could be read" in res.stderr


def test_bad_options(run_cli, cands: dict[str, Path]) -> None:
    out = cands["run"] / "sel.csv"
    base = ["select", "--candidates", cands["manifest"], "--out", out]
    res = run_cli(*base, "--weights", "tone=1,beauty=2")
    assert res.code == 2 and "unknown score 'beauty'" in res.stderr
    res = run_cli(*base, "--weights", "tone=-1")
    assert res.code == 2 and ">= 0" in res.stderr
    res = run_cli(*base, "--k", "0")
    assert res.code == 2 and "--k" in res.stderr
    res = run_cli(*base, "--plan", cands["plan"], "--test-images", cands["plan"])
    assert res.code == 2 and "not both" in res.stderr
    res = run_cli(*base, "--ita-thresholds", "empirical")
    assert res.code == 2 and "--fit-manifest" in res.stderr
    res = run_cli("select", "--candidates", cands["plan"], "--out", out)
    assert res.code == 2 and "no candidate rows" in res.stderr
    with pytest.raises(DermsynthError, match="at least one"):
        parse_weights("tone=0,quality=0,similarity=0,pathology=0")


def test_weights_from_a_study_config(run_cli, cands: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "study.yaml"
    config.write_text(
        "dataset: {csv: data.csv}\nconditions: [psoriasis, folliculitis]\naugmented: [psoriasis]\n"
        "directions: [{train: [1, 2], test: [[3, 4], [5, 6]]}]\n"
        "selection: {weights: {tone: 2, quality: 1}, leakage_threshold: 3}\n"
    )
    out = cands["run"] / "sel.csv"
    res = run_cli(
        "select",
        "--candidates",
        cands["manifest"],
        "--out",
        out,
        "--config",
        config,
        "--no-contact-sheets",
    )
    assert res.code == 0, res.stderr
    info = json.loads((cands["run"] / "selection.json").read_text())
    assert info["weights"] == {"tone": 2.0, "quality": 1.0} and info["leakage_threshold"] == 3
