"""Selection scorers on constructed images whose answers are known in advance."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from dermsynth.config import QualityConfig
from dermsynth.data.fst import KINYANJUI_ITA_THRESHOLDS, ita_degrees, ita_to_fst
from dermsynth.errors import DermsynthError
from dermsynth.select.leakage import nearest_test_image
from dermsynth.select.quality import quality_score
from dermsynth.select.similarity import LabEmbedder, cosine, make_embedder, similarity_scores
from dermsynth.select.tone import (
    fit_empirical_thresholds,
    ita_to_fst_array,
    resolve_thresholds,
    skin_pixels,
    tone_score,
)


def lab_patch(lightness: float, a: float, b: float, size: int = 64) -> np.ndarray:
    """A flat RGB uint8 patch of one CIE-Lab colour."""
    from skimage.color import lab2rgb

    rgb = lab2rgb(np.array([[[lightness, a, b]]], dtype=np.float64))[0, 0]
    return np.tile(np.round(rgb * 255).astype(np.uint8), (size, size, 1))


def textured(seed: int = 0, size: int = 96) -> np.ndarray:
    """A sharp image: skin-coloured with strong fine texture and a few edges."""
    rng = np.random.default_rng(seed)
    base = lab_patch(62, 14, 18, size).astype(float)
    noise = rng.normal(0, 28, (size, size, 1))
    image = base + noise
    image[size // 3 : size // 2, :, :] -= 60
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("lightness", "a", "b"), [(75, 10, 14), (62, 14, 18), (45, 14, 22), (30, 10, 15)]
)
def test_flat_patch_gives_the_formula_ita(lightness: float, a: float, b: float) -> None:
    result = tone_score(lab_patch(lightness, a, b), requested_fst=3)
    expected = ita_degrees(lightness, b)
    # Only the 8-bit rounding of the patch separates the two.
    assert result.ita == pytest.approx(expected, abs=1.0)
    assert result.fst_estimated == ita_to_fst(expected)
    assert result.score == pytest.approx(1 - abs(result.fst_estimated - 3) / 5)


def test_requested_type_scores_one_and_far_types_less() -> None:
    light = lab_patch(75, 10, 14)  # ITA ~ 60.8: type I
    assert tone_score(light, 1).score == 1.0
    assert tone_score(light, 6).score == 0.0
    assert tone_score(light, 2).score == pytest.approx(0.8)
    assert math.isnan(tone_score(light, -1).score)


def test_lesion_is_left_out_of_the_tone() -> None:
    # Light skin around a dark "lesion" over half the image; the mask marks the lesion black.
    image = lab_patch(75, 10, 14, 64)
    image[8:56, 8:56] = lab_patch(25, 20, 10, 48)
    mask = np.full((64, 64), 255, dtype=np.uint8)
    mask[8:56, 8:56] = 0
    with_mask = tone_score(image, 1, lesion_mask=mask)
    assert with_mask.fst_estimated == 1
    assert with_mask.ita == pytest.approx(ita_degrees(75, 14), abs=1.0)
    # Read whole (no mask, no centre disc), the lesion dominates the median.
    whole = tone_score(image, 1, use_centre=False)
    assert whole.ita < 0 < with_mask.ita


def test_non_skin_colours_fall_back_to_the_region_and_say_so() -> None:
    green = np.zeros((48, 48, 3), dtype=np.uint8)
    green[..., 1] = 160
    mask, fallback = skin_pixels(green)
    assert fallback and mask.any()
    skin, fallback = skin_pixels(lab_patch(62, 14, 18, 48))
    assert not fallback and skin.any()


def test_threshold_tables() -> None:
    assert resolve_thresholds("kinyanjui") == KINYANJUI_ITA_THRESHOLDS
    assert resolve_thresholds("50,40,30,20,10") == (50, 40, 30, 20, 10)
    with pytest.raises(DermsynthError, match="unknown ITA thresholds"):
        resolve_thresholds("fancy")
    with pytest.raises(DermsynthError, match="decreasing"):
        resolve_thresholds([10, 20, 30, 40, 50])
    values = np.array([60, 50, 30, 20, 15, 5, -30])
    assert ita_to_fst_array(values, KINYANJUI_ITA_THRESHOLDS).tolist() == [
        ita_to_fst(v) for v in values
    ]


def test_empirical_thresholds_are_midpoints_of_medians() -> None:
    medians = [70, 50, 35, 20, 5, -20]
    ita = [m + d for m in medians for d in (-2, 0, 2)]
    fst = [t for t in range(1, 7) for _ in range(3)]
    fitted = fit_empirical_thresholds(ita, fst)
    assert fitted == pytest.approx((60, 42.5, 27.5, 12.5, -7.5))
    # Medians out of order (noisy labels) still give a strictly decreasing table.
    swapped = fit_empirical_thresholds([70, 30, 50, 20, 5, -20], [1, 2, 3, 4, 5, 6])
    assert all(a > b for a, b in zip(swapped, swapped[1:], strict=False))
    with pytest.raises(DermsynthError, match="type"):
        fit_empirical_thresholds([70, 50], [1, 2])


def test_blurred_image_scores_below_its_sharp_self() -> None:
    sharp = textured()
    blurred = np.asarray(Image.fromarray(sharp).filter(ImageFilter.GaussianBlur(3)))
    q_sharp, q_blur = quality_score(sharp), quality_score(blurred)
    assert q_blur.blur < q_sharp.blur / 5
    assert q_blur.score < q_sharp.score


def test_clipping_and_colour_cast_lower_quality() -> None:
    image = textured()
    blown = image.copy()
    blown[:48] = 255
    assert quality_score(blown).clipped == pytest.approx(0.5, abs=0.02)
    assert quality_score(blown).score < quality_score(image).score
    tinted = np.clip(image.astype(int) + np.array([-40, 0, 50]), 0, 255).astype(np.uint8)
    plain = quality_score(image, reference=image)
    cast = quality_score(tinted, reference=image)
    assert plain.colour_cast == pytest.approx(0.0, abs=1e-6)
    assert cast.colour_cast > 15 and cast.score < plain.score
    # Without a reference, a blue-green image lies outside the skin quadrant.
    assert quality_score(lab_patch(60, -20, -20)).colour_cast > 20
    assert quality_score(lab_patch(60, 12, 18)).colour_cast == 0.0
    assert QualityConfig().blur_ref == 100.0


def test_similarity_flags_copies_and_drift() -> None:
    seed = textured(0)
    near = np.clip(seed.astype(int) + np.random.default_rng(1).normal(0, 15, seed.shape), 0, 255)
    other = np.asarray(Image.fromarray(textured(5)).transpose(Image.Transpose.ROTATE_90))
    other = np.clip(other.astype(int) * np.array([0.3, 0.9, 1.4]), 0, 255).astype(np.uint8)
    embed = LabEmbedder()
    vectors = embed([seed, seed, near.astype(np.uint8), other])
    sims = cosine(vectors[1:], np.repeat(vectors[:1], 3, axis=0))
    assert sims[0] == pytest.approx(1.0)
    assert sims[0] > sims[1] > sims[2]
    scores, flags = similarity_scores(np.array([1.0, 0.8, 0.2]), copy=0.995, drift=0.5)
    assert flags == ["copy", "", "drift"]
    assert scores.tolist() == pytest.approx([0.0, 1.0, 0.4])
    with pytest.raises(DermsynthError, match="drift"):
        similarity_scores(sims, copy=0.5, drift=0.9)
    with pytest.raises(DermsynthError, match="unknown embedder"):
        make_embedder("pixels")


def test_backbone_embedder_runs_offline() -> None:
    embed = make_embedder("backbone:resnet18", weights="none", image_size=32)
    vectors = embed([textured(0, 48), textured(0, 48), textured(3, 48)])
    assert vectors.shape[0] == 3 and vectors.shape[1] == 512
    assert cosine(vectors[:1], vectors[1:2])[0] == pytest.approx(1.0, abs=1e-5)


def _save(path: Path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path)
    return str(path)


def test_exact_copy_of_a_test_image_is_found(tmp_path: Path) -> None:
    tests = pd.DataFrame(
        {
            "image_id": [f"t{i}" for i in range(3)],
            "path": [_save(tmp_path / f"t{i}.png", textured(10 + i)) for i in range(3)],
        }
    )
    cands = pd.DataFrame(
        {
            "image_id": ["copy", "fresh", "gone"],
            "path": [
                _save(tmp_path / "copy.png", textured(11)),
                _save(tmp_path / "fresh.png", np.asarray(Image.fromarray(textured(40)).rotate(45))),
                str(tmp_path / "missing.png"),
            ],
        }
    )
    result = nearest_test_image(cands, tests)
    assert result.distance[0] == 0 and result.nearest[0] == "t1"
    assert result.distance[1] > 6
    assert math.isnan(result.distance[2])
    with pytest.raises(DermsynthError, match="leakage guard"):
        nearest_test_image(cands, tests.assign(path=str(tmp_path / "nope.png")))
