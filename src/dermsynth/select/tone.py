"""Skin-tone agreement: the ITA of a candidate's healthy skin, mapped to a Fitzpatrick type.

The individual typology angle (ITA) is ``atan2(L* - 50, b*)`` in degrees, from CIE-Lab
lightness L* and yellow-blue b*: light skin has a large angle, dark skin a small or negative
one. It is computed on the *healthy-skin* pixels only:

* the lesion is left out: the seed's inpainting mask (white = the redrawn surround, black = the
  kept lesion, the convention of :mod:`dermsynth.generate.seeds`) where the candidate manifest
  carries one (``seed_mask``), else a central disc (the generated masks keep the centre);
* of what is left, skin-coloured pixels are kept by the YCrCb rule of Chai & Ngan (1999),
  ``133 <= Cr <= 173`` and ``77 <= Cb <= 127``;
* very dark (L* < 5) and very bright (L* > 97: specular highlights) pixels are dropped.

Where fewer than :data:`MIN_SKIN_SHARE` of the region's pixels pass the colour rule (unusual
lighting, noise-like test images), the whole non-lesion region (less the extremes) is used and
the result says so. The region's ITA is the median of the per-pixel angles (robust to stray
hair, rulers and shadows).

Thresholds (``ITA > t1 -> I, > t2 -> II, ... else VI``):

* ``kinyanjui``: Kinyanjui et al. (2020), as used by Fitzpatrick 17k: 55, 41, 28, 19, 10.
* ``empirical``: thresholds fitted to a labelled set of images, as Fitzpatrick 17k also did for
  its own data; :func:`fit_empirical_thresholds` returns the midpoints between the median ITAs
  of consecutive skin types of any labelled manifest (the published Fitzpatrick 17k values are
  not reproduced here: fit them on your own data, where the images come from).

The score is the agreement with the requested type: ``1 - |estimated - requested| / 5``
(1 for the same type, 0 for I vs VI).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dermsynth.data.fst import FST_TYPES, KINYANJUI_ITA_THRESHOLDS
from dermsynth.errors import DermsynthError

ITA_THRESHOLDS: dict[str, tuple[float, ...]] = {"kinyanjui": KINYANJUI_ITA_THRESHOLDS}
MIN_SKIN_SHARE = 0.05
CENTRE_LESION_SHARE = 0.6  # diameter of the assumed lesion disc, as a share of the shorter side
_DARKEST_L = 5.0
_BRIGHTEST_L = 97.0


@dataclass(frozen=True)
class ToneResult:
    """ITA of the healthy skin, its FST, the agreement score and how the pixels were chosen."""

    ita: float
    fst_estimated: int
    score: float
    pixels: int
    fallback: bool  # True: too few skin-coloured pixels, the whole non-lesion region was used


def ita_to_fst_array(ita: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Vectorised :func:`dermsynth.data.fst.ita_to_fst` (descending thresholds)."""
    ita = np.asarray(ita, dtype=np.float64)
    out = np.full(ita.shape, FST_TYPES[-1], dtype=np.int64)
    # Walk from the darkest threshold up, so the lightest matching type wins.
    for fst, limit in reversed(list(zip(FST_TYPES, thresholds, strict=False))):
        out[ita > limit] = fst
    return out


def check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    """Five strictly decreasing ITA thresholds (types I..V; below the last is VI)."""
    values = tuple(float(t) for t in thresholds)
    if len(values) != len(FST_TYPES) - 1:
        raise DermsynthError(f"ITA thresholds: need 5 values (I..V), got {len(values)}")
    if any(not math.isfinite(v) for v in values) or any(
        a <= b for a, b in zip(values, values[1:], strict=False)
    ):
        raise DermsynthError(f"ITA thresholds must be finite and strictly decreasing, got {values}")
    return values


def resolve_thresholds(name_or_values: str | Sequence[float]) -> tuple[float, ...]:
    """A named threshold table (``kinyanjui``) or five numbers."""
    if isinstance(name_or_values, str):
        key = name_or_values.strip().lower()
        if key in ITA_THRESHOLDS:
            return ITA_THRESHOLDS[key]
        try:
            return check_thresholds([float(p) for p in key.split(",")])
        except ValueError:
            raise DermsynthError(
                f"unknown ITA thresholds {name_or_values!r}; use kinyanjui, 'empirical' with a "
                "labelled manifest, or five numbers like 55,41,28,19,10"
            ) from None
    return check_thresholds(name_or_values)


def fit_empirical_thresholds(ita: Sequence[float], fst: Sequence[int]) -> tuple[float, ...]:
    """Thresholds fitted to labelled images: midpoints of consecutive types' median ITA.

    ``ita`` and ``fst`` are per image (unknown types, -1, are ignored). Every type 1..6 needs
    at least one image; medians that do not decrease with the type (noisy labels) are made
    monotone by pooling adjacent types, so the thresholds always decrease.
    """
    frame = pd.DataFrame({"ita": np.asarray(ita, dtype=float), "fst": np.asarray(fst, dtype=int)})
    frame = frame[frame["fst"].isin(FST_TYPES) & np.isfinite(frame["ita"])]
    medians = frame.groupby("fst")["ita"].median()
    missing = [t for t in FST_TYPES if t not in medians.index]
    if missing:
        raise DermsynthError(
            "cannot fit empirical ITA thresholds: no labelled image of type(s) "
            f"{', '.join(map(str, missing))}; use the kinyanjui thresholds"
        )
    values = [float(medians[t]) for t in FST_TYPES]
    # Pool-adjacent-violators for a non-increasing sequence (unweighted; medians are summaries).
    blocks: list[list[float]] = []
    for v in values:
        blocks.append([v])
        while len(blocks) > 1 and np.mean(blocks[-2]) < np.mean(blocks[-1]):
            last = blocks.pop()
            blocks[-1].extend(last)
    monotone = [float(np.mean(b)) for b in blocks for _ in b]
    mids = [(a + b) / 2 for a, b in zip(monotone, monotone[1:], strict=False)]
    # Pooled types share a median; nudge equal midpoints apart so the table stays strict.
    for i in range(1, len(mids)):
        if mids[i] >= mids[i - 1]:
            mids[i] = mids[i - 1] - 1e-6
    return check_thresholds(mids)


def _lesion_from_mask(mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """Boolean lesion region of an image of ``shape``: from an inpainting mask, else a disc."""
    height, width = shape
    if mask is not None:
        from PIL import Image

        mask_image = Image.fromarray(np.asarray(mask, dtype=np.uint8))
        if mask_image.size != (width, height):
            mask_image = mask_image.resize((width, height), Image.Resampling.NEAREST)
        # Black = kept lesion; a feathered edge counts as lesion up to mid-gray.
        return np.asarray(mask_image) < 128
    yy, xx = np.mgrid[0:height, 0:width]
    radius = CENTRE_LESION_SHARE * min(height, width) / 2
    return (yy - (height - 1) / 2) ** 2 + (xx - (width - 1) / 2) ** 2 <= radius**2


def skin_pixels(
    rgb: np.ndarray, lesion_mask: np.ndarray | None = None, *, use_centre: bool = True
) -> tuple[np.ndarray, bool]:
    """Boolean mask of healthy-skin pixels of an RGB uint8 image, and whether it fell back.

    ``lesion_mask``: the inpainting mask (white = surround, black = lesion) or None (then a
    central disc is taken as the lesion when ``use_centre``).
    """
    from skimage.color import rgb2lab, rgb2ycbcr

    rgb = np.asarray(rgb)
    lab = rgb2lab(rgb)
    ycbcr = rgb2ycbcr(rgb)
    cb, cr = ycbcr[..., 1], ycbcr[..., 2]
    region = np.ones(rgb.shape[:2], dtype=bool)
    if lesion_mask is not None or use_centre:
        region &= ~_lesion_from_mask(lesion_mask, rgb.shape[:2])
    lightness = lab[..., 0]
    region &= (lightness >= _DARKEST_L) & (lightness <= _BRIGHTEST_L)
    skin = region & (cr >= 133) & (cr <= 173) & (cb >= 77) & (cb <= 127)
    if region.sum() and skin.sum() >= MIN_SKIN_SHARE * region.sum():
        return skin, False
    return region, True


def tone_score(
    rgb: np.ndarray,
    requested_fst: int,
    *,
    lesion_mask: np.ndarray | None = None,
    thresholds: Sequence[float] = KINYANJUI_ITA_THRESHOLDS,
    use_centre: bool = True,
) -> ToneResult:
    """ITA of the healthy skin of ``rgb`` (HxWx3 uint8), its FST and the agreement score.

    ``requested_fst``: the type the candidate was asked to show (1..6; anything else scores
    NaN). An image with no usable pixel at all (all black or white) gets ITA NaN, FST -1 and
    score 0.
    """
    from skimage.color import rgb2lab

    pixels, fallback = skin_pixels(rgb, lesion_mask, use_centre=use_centre)
    if not pixels.any():
        return ToneResult(float("nan"), -1, 0.0, 0, True)
    lab = rgb2lab(np.asarray(rgb))[pixels]
    angles = np.degrees(np.arctan2(lab[:, 0] - 50.0, lab[:, 2]))
    ita = float(np.median(angles))
    fst_est = int(ita_to_fst_array(np.array([ita]), thresholds)[0])
    if requested_fst in FST_TYPES:
        score = 1.0 - abs(fst_est - int(requested_fst)) / (len(FST_TYPES) - 1)
    else:
        score = float("nan")
    return ToneResult(ita, fst_est, score, int(pixels.sum()), fallback)
