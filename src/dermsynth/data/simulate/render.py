"""One simulated photo: skin, lesion, hair, lighting, calibration of the skin tone, encoding."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from dermsynth.data.fst import FST_TYPES
from dermsynth.data.simulate.canvas import Canvas, soften
from dermsynth.data.simulate.lesions import MORPHOLOGIES
from dermsynth.data.simulate.photo import (
    add_hair,
    add_lighting,
    body_edge,
    paint_background,
    paint_skin,
)
from dermsynth.data.simulate.tone import draw_skin_colour, lab_to_rgb8
from dermsynth.errors import DermsynthError


@dataclass
class RenderedImage:
    """A rendered photo with what is known about it (masks are (H, W) arrays)."""

    image: Image.Image
    lesion_mask: np.ndarray  # float32 0..1: how much each pixel belongs to the lesion
    skin_mask: np.ndarray  # bool: skin (False on the background margin and hair)
    ita: float  # the ITA (degrees) the healthy skin was calibrated to
    fst: int


_ASPECTS: tuple[tuple[int, int], ...] = ((4, 3), (3, 4), (1, 1), (3, 2), (2, 3))
_ASPECT_P = (0.38, 0.22, 0.2, 0.12, 0.08)


def frame_size(rng: np.random.Generator, image_size: int) -> tuple[int, int]:
    """A photo's (width, height): a realistic aspect ratio, longer side 85-100% of the size."""
    aw, ah = _ASPECTS[int(rng.choice(len(_ASPECTS), p=_ASPECT_P))]
    longer = int(round(image_size * rng.uniform(0.85, 1.0)))
    if aw >= ah:
        return longer, max(1, round(longer * ah / aw))
    return max(1, round(longer * aw / ah)), longer


def render_sample(
    condition: str,
    fst: int,
    rng_seed: int,
    size: tuple[int, int] | None = None,
    *,
    image_size: int = 512,
) -> RenderedImage:
    """Render one simulated photo with its lesion and skin masks.

    ``size`` is (width, height); without it the frame is drawn from the seed (longer side
    85-100% of ``image_size``, a realistic aspect ratio).
    """
    if condition not in MORPHOLOGIES:
        raise DermsynthError(
            f"unknown condition {condition!r}; simulated: {', '.join(MORPHOLOGIES)}"
        )
    if fst not in FST_TYPES:
        raise DermsynthError(f"skin type must be 1..6, got {fst!r}")
    rng = np.random.default_rng(rng_seed)
    frame = frame_size(rng, image_size)
    w, h = size if size is not None else frame
    if w < 8 or h < 8:
        raise DermsynthError(f"image size {w}x{h} is too small; at least 8x8 pixels")
    cv = Canvas(int(w), int(h), rng, fst)
    ita, base = draw_skin_colour(rng, fst)
    paint_skin(cv, base)
    MORPHOLOGIES[condition](cv)
    if rng.random() < 0.35:
        add_hair(cv)
    add_lighting(cv)
    margin = body_edge(cv)
    # Calibrate: shift L* so that the healthy skin's median ITA is the drawn angle (median over a
    # sparse grid of pixels is enough and cheap).
    healthy = (cv.lesion < 0.02) & (cv.hair < 0.05)
    if margin is not None:
        healthy &= margin < 0.02
    step = max(1, int(math.sqrt(cv.w * cv.h / 20000)))
    sub = healthy[::step, ::step]
    if sub.sum() < 20:
        sub = np.ones_like(sub)
    l_med = float(np.median(cv.L[::step, ::step][sub]))
    b_med = float(np.median(cv.B[::step, ::step][sub]))
    cv.L += np.float32(50.0 + b_med * math.tan(math.radians(ita)) - l_med)
    skin = np.ones((cv.h, cv.w), bool)
    if margin is not None:
        paint_background(cv, margin)
        skin = margin < 0.05
    cv.L += rng.standard_normal(cv.L.shape, dtype=np.float32) * np.float32(0.6)
    np.clip(cv.L, 0.0, 100.0, out=cv.L)
    rgb = lab_to_rgb8(cv.L, cv.A, cv.B)
    image = Image.fromarray(rgb)
    blur = rng.uniform(0.3, 0.9) * cv.S / 512
    if blur > 0.25:
        image = image.filter(soften(blur))
    return RenderedImage(image, cv.lesion, skin & (cv.hair < 0.05), ita, fst)


def render_image(
    condition: str,
    fst: int,
    rng_seed: int,
    size: tuple[int, int] | None = None,
    *,
    image_size: int = 512,
) -> Image.Image:
    """Render one simulated RGB photo of ``condition`` on skin type ``fst`` (see render_sample)."""
    return render_sample(condition, fst, rng_seed, size, image_size=image_size).image
