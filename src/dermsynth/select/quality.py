"""Image quality of a candidate: sharpness, exposure clipping and colour cast.

Three raw measures, each turned into a sub-score in [0, 1]; the quality score is their mean.

* ``blur``: variance of the Laplacian of the gray image (on a copy whose shorter side is at
  most :data:`ANALYSIS_SIDE`, so images of different sizes compare). Low means blurred.
  Sub-score ``blur / (blur + blur_ref)``: 0.5 at ``blur_ref`` (default 100, the usual
  "is this photo blurred" cut-off for 8-bit images), rising towards 1 for sharp images.
* ``clipped``: share of pixels whose gray value is at or beyond the clip limits (<= 2 or
  >= 253): blown highlights and crushed shadows. Sub-score ``1 - clipped / clip_tolerance``,
  floored at 0 (default tolerance 0.25: a quarter of the image clipped scores 0).
* ``colour_cast``: with a reference (the candidate's seed), the distance in the CIE-Lab a*b*
  plane between the mean colours of candidate and seed: a global tint the generator added.
  Without a reference, how far the mean colour lies outside the a* >= 0, b* >= 0 quadrant
  where skin lies (a green or blue tint). Sub-score ``1 - cast / cast_limit``, floored at 0
  (default limit 25 a*b* units).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dermsynth.config import QualityConfig

ANALYSIS_SIDE = 256
CLIP_LOW = 2
CLIP_HIGH = 253


@dataclass(frozen=True)
class QualityResult:
    """The raw measures and the combined score."""

    blur: float
    clipped: float
    colour_cast: float
    score: float


def _analysis_copy(rgb: np.ndarray) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(np.asarray(rgb, dtype=np.uint8))
    short = min(image.size)
    if short > ANALYSIS_SIDE:
        scale = ANALYSIS_SIDE / short
        size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image)


def _gray(rgb: np.ndarray) -> np.ndarray:
    # ITU-R 601 luma on 0..255, the scale the blur reference is meant for.
    rgb = np.asarray(rgb, dtype=np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def laplacian_variance(rgb: np.ndarray) -> float:
    """Variance of the (4-neighbour) Laplacian of the gray image: a sharpness measure."""
    from scipy.ndimage import laplace

    gray = _gray(_analysis_copy(rgb))
    return float(laplace(gray, mode="reflect").var())


def clipped_share(rgb: np.ndarray) -> float:
    """Share of pixels whose gray value is clipped (<= 2 or >= 253)."""
    gray = _gray(rgb)
    return float(((gray <= CLIP_LOW) | (gray >= CLIP_HIGH)).mean())


def mean_ab(rgb: np.ndarray) -> tuple[float, float]:
    """Mean CIE-Lab a* and b* of an image."""
    from skimage.color import rgb2lab

    lab = rgb2lab(_analysis_copy(rgb))
    return float(lab[..., 1].mean()), float(lab[..., 2].mean())


def colour_cast(rgb: np.ndarray, reference: np.ndarray | None = None) -> float:
    """a*b* distance of the mean colour from the reference's (or from the skin quadrant)."""
    a, b = mean_ab(rgb)
    if reference is not None:
        ra, rb = mean_ab(reference)
        return float(np.hypot(a - ra, b - rb))
    return float(np.hypot(min(a, 0.0), min(b, 0.0)))


def quality_score(
    rgb: np.ndarray, reference: np.ndarray | None = None, params: QualityConfig | None = None
) -> QualityResult:
    """Blur, clipping and colour cast of ``rgb`` (HxWx3 uint8) and the combined score."""
    params = params or QualityConfig()
    blur = laplacian_variance(rgb)
    clipped = clipped_share(rgb)
    cast = colour_cast(rgb, reference)
    sub_blur = blur / (blur + params.blur_ref) if blur + params.blur_ref > 0 else 0.0
    sub_clip = max(0.0, 1.0 - clipped / params.clip_tolerance)
    sub_cast = max(0.0, 1.0 - cast / params.cast_limit)
    score = float(np.mean([sub_blur, sub_clip, sub_cast]))
    return QualityResult(blur, clipped, cast, score)
