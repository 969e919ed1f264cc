"""Simulated clinical photos in the Fitzpatrick 17k schema, for the demo, tests and benchmarks.

Every image is a photo-like rendering of skin with one of the seven conditions of the paper's
Table 1, on one of the six Fitzpatrick skin types (FST). Nothing here is a real patient:
reports that use these data say so with :data:`SIMULATED_NOTE`.

What is simulated, and why:

* **Skin colour** is drawn in CIE-Lab so that its individual typology angle
  ``ITA = atan((L* - 50) / b*)`` falls inside the type's range under the Kinyanjui thresholds
  that Fitzpatrick 17k uses (:data:`ITA_RANGES`, a margin inside each band). After texture and
  lighting are added, lightness is shifted once so that the median ITA of the healthy skin is
  the drawn angle: ITA-based skin-tone checks (selection) see the requested type.
* **Texture and photography**: mottling and fine noise at several scales, pores, skin creases,
  freckles on light skin, body hair on some images, directional light, vignetting, limb
  curvature, a background margin (drape, paper, wall) on some images, slight blur, sensor
  noise and JPEG compression at varying quality; 1:1, 4:3, 3:4, 3:2 and 2:3 frames.
* **Seven morphologies**, one per condition: basal cell carcinoma (pearly papule, rolled border,
  telangiectasia, sometimes a central ulcer; often pigmented on dark skin), folliculitis (many
  small follicular papules and pustules), nematode infection (serpiginous raised track, as
  cutaneous larva migrans), neutrophilic dermatoses (juicy erythematous plaques as in Sweet's
  syndrome, or an ulcer with a violaceous undermined border as in pyoderma gangrenosum),
  prurigo nodularis (many firm hyperpigmented nodules with excoriations), psoriasis
  (well-demarcated plaques with silvery scale), squamous cell carcinoma (keratotic, often
  ulcerated nodule with crust).
* **Tone-dependent appearance**, as in real photos: on darker skin erythema is less red and
  more violaceous or brown, its contrast against the skin is lower, hyperpigmentation is
  darker, inflammation leaves hyperpigmented halos and scale looks ashy grey. Lesion colour is a
  strong cue on light skin that shifts on dark skin, so a classifier trained on FST I-II
  transfers imperfectly to V-VI: the fairness gap the product measures.

Counts: the cell (condition, FST) has ``max(1, floor(scale * n + 0.5))`` images where Table 1
has ``n > 0`` (half-up rounding; the minimum of one keeps every cell of the table present at
any scale). Rows of unknown FST (-1) are added per condition as
``floor(scale * m + 0.5)`` (no minimum) with ``m`` the condition's count of unknown-FST rows in
the real table, so they are about 4% of the rows as there; their images are rendered on a hidden
type drawn from the condition's Table 1 distribution. ``fitzpatrick_centaur`` (the second
annotation of the real table) agrees with ``fitzpatrick_scale`` about 60% of the time, is one
type off about 30% and two types off or unknown otherwise, as the two annotations of the real
table disagree.

Identity and determinism: ``md5hash`` is the MD5 of the stable string
``dermsynth-sim:{random_seed}:{condition}:{fst}:{index}`` (not of the JPEG bytes, so ids do not
depend on the JPEG encoder), and each image's random generator is seeded from the same string.
The output is byte-identical across runs and independent of the number of worker processes.
Existing images that decode at their planned size are kept (resume); images are written
atomically and the CSV last.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

from dermsynth.data.fst import FST_TYPES, UNKNOWN_FST
from dermsynth.data.manifest import PAPER_CONDITIONS
from dermsynth.errors import DermsynthError
from dermsynth.io import atomic_write_bytes, atomic_write_csv

SIMULATED_NOTE = "simulated data: not real patients"

CSV_NAME = "fitzpatrick17k_simulated.csv"
IMAGES_DIRNAME = "images"
CSV_COLUMNS: tuple[str, ...] = (
    "md5hash",
    "fitzpatrick_scale",
    "fitzpatrick_centaur",
    "label",
    "nine_partition_label",
    "three_partition_label",
    "qc",
    "url",
    "url_alphanum",
)

# The paper's Table 1: images per condition for FST I..VI.
TABLE1: dict[str, tuple[int, ...]] = {
    "basal cell carcinoma": (85, 156, 112, 76, 24, 7),
    "folliculitis": (30, 97, 99, 51, 31, 9),
    "nematode infection": (15, 56, 79, 60, 32, 12),
    "neutrophilic dermatoses": (70, 115, 68, 51, 31, 15),
    "prurigo nodularis": (7, 28, 39, 56, 29, 9),
    "psoriasis": (113, 232, 101, 91, 64, 21),
    "squamous cell carcinoma": (100, 180, 122, 71, 40, 23),
}
# Rows with fitzpatrick_scale == -1 for the same conditions in the real Fitzpatrick 17k table.
UNKNOWN_FST_COUNTS: dict[str, int] = {
    "basal cell carcinoma": 8,
    "folliculitis": 25,
    "nematode infection": 6,
    "neutrophilic dermatoses": 11,
    "prurigo nodularis": 2,
    "psoriasis": 31,
    "squamous cell carcinoma": 45,
}
# nine_partition_label and three_partition_label of these conditions in the real table.
PARTITIONS: dict[str, tuple[str, str]] = {
    "basal cell carcinoma": ("malignant epidermal", "malignant"),
    "folliculitis": ("inflammatory", "non-neoplastic"),
    "nematode infection": ("inflammatory", "non-neoplastic"),
    "neutrophilic dermatoses": ("inflammatory", "non-neoplastic"),
    "prurigo nodularis": ("benign epidermal", "benign"),
    "psoriasis": ("inflammatory", "non-neoplastic"),
    "squamous cell carcinoma": ("malignant epidermal", "malignant"),
}
assert tuple(TABLE1) == PAPER_CONDITIONS

# ITA (degrees) drawn per type: inside the Kinyanjui bands (> 55 I, > 41 II, > 28 III, > 19 IV,
# > 10 V, else VI) with a margin, so JPEG and lesion-free-region estimates stay in the band.
ITA_RANGES: dict[int, tuple[float, float]] = {
    1: (59.0, 68.0),
    2: (44.5, 51.5),
    3: (31.0, 38.0),
    4: (21.5, 26.5),
    5: (12.5, 16.5),
    6: (-60.0, 2.0),
}
# b* (yellowness) drawn per type; L* then follows from the ITA.
_B_STAR: dict[int, tuple[float, float]] = {
    1: (11.0, 15.0),
    2: (13.0, 17.0),
    3: (15.0, 19.0),
    4: (16.0, 20.0),
    5: (16.0, 20.0),
    6: (13.0, 18.0),
}
_A_STAR: dict[int, tuple[float, float]] = {
    1: (8.0, 13.0),
    2: (8.0, 12.5),
    3: (8.0, 12.0),
    4: (8.0, 12.0),
    5: (8.5, 12.0),
    6: (8.0, 12.0),
}


def _mid(r: tuple[float, float]) -> float:
    return (r[0] + r[1]) / 2.0


def _lab_for(fst: int, ita: float, b_star: float, a_star: float) -> tuple[float, float, float]:
    return (50.0 + b_star * math.tan(math.radians(ita)), a_star, b_star)


# A representative CIE-Lab skin colour per type (the middle of the ranges drawn from).
SKIN_LAB: dict[int, tuple[float, float, float]] = {
    f: _lab_for(f, _mid(ITA_RANGES[f]) if f != 6 else -30.0, _mid(_B_STAR[f]), _mid(_A_STAR[f]))
    for f in FST_TYPES
}

_ASPECTS: tuple[tuple[int, int], ...] = ((4, 3), (3, 4), (1, 1), (3, 2), (2, 3))
_ASPECT_P = (0.38, 0.22, 0.2, 0.12, 0.08)


def skin_lab(fst: int) -> tuple[float, float, float]:
    """A representative CIE-Lab (L*, a*, b*) skin colour of a Fitzpatrick type (1..6)."""
    if fst not in SKIN_LAB:
        raise DermsynthError(f"skin type must be 1..6, got {fst!r}")
    return SKIN_LAB[fst]


# ---------------------------------------------------------------------------------------------
# Colour conversion (float32, vectorised; sRGB D65, the same constants as skimage)

_M_XYZ_TO_RGB = np.array(
    [
        [3.2404542, -1.5371385, -0.4985314],
        [-0.9692660, 1.8760108, 0.0415560],
        [0.0556434, -0.2040259, 1.0572252],
    ],
    dtype=np.float32,
)
_LUT_SIZE = 16384
_GAMMA_LUT = np.clip(
    np.where(
        (_lin := np.linspace(0.0, 1.0, _LUT_SIZE, dtype=np.float64)) <= 0.0031308,
        12.92 * _lin,
        1.055 * np.power(_lin, 1 / 2.4) - 0.055,
    )
    * 255.0
    + 0.5,
    0,
    255,
).astype(np.uint8)


def _finv(t: np.ndarray) -> np.ndarray:
    return np.where(
        t > 6.0 / 29.0, t * t * t, np.float32(3 * (6 / 29) ** 2) * (t - np.float32(4 / 29))
    )


def lab_to_rgb8(lab_l: np.ndarray, lab_a: np.ndarray, lab_b: np.ndarray) -> np.ndarray:
    """CIE-Lab planes (float32) to an sRGB uint8 image (H, W, 3); a gamma table keeps it fast."""
    fy = (lab_l + 16.0) / 116.0
    x = 0.95047 * _finv(fy + lab_a / 500.0)
    y = _finv(fy)
    z = 1.08883 * _finv(fy - lab_b / 200.0)
    out = np.empty(lab_l.shape + (3,), dtype=np.uint8)
    for c in range(3):
        m = _M_XYZ_TO_RGB[c]
        lin = m[0] * x + m[1] * y + m[2] * z
        idx = np.clip(lin * (_LUT_SIZE - 1) + 0.5, 0, _LUT_SIZE - 1).astype(np.int32)
        out[..., c] = _GAMMA_LUT[idx]
    return out


# ---------------------------------------------------------------------------------------------
# Tone-dependent lesion colours, as (dL*, da*, db*) at strength s on darkness t (0: FST I, 1: VI)


def _darkness(fst: int) -> float:
    return (fst - 1) / 5.0


def _lerp3(
    a: Sequence[float], b: Sequence[float], k: float, s: float
) -> tuple[float, float, float]:
    return (
        s * (a[0] * (1 - k) + b[0] * k),
        s * (a[1] * (1 - k) + b[1] * k),
        s * (a[2] * (1 - k) + b[2] * k),
    )


def _erythema(t: float, s: float) -> tuple[float, float, float]:
    # Haemoglobin red on light skin; melanin masks it on dark skin: less red, violaceous-brown.
    return _lerp3((-6.0, 21.0, 4.0), (-8.0, 5.0, -6.0), t**0.8, s)


def _violaceous(t: float, s: float) -> tuple[float, float, float]:
    return _lerp3((-13.0, 15.0, -9.0), (-11.0, 5.0, -7.0), t**0.8, s)


def _hyperpigment(t: float, s: float) -> tuple[float, float, float]:
    # Brown on light skin; deep brown-black (lower L*, less chroma) on dark skin.
    return _lerp3((-15.0, 3.0, 8.0), (-15.0, 0.5, -2.0), t, s)


def _scale_colour(t: float) -> tuple[float, float, float]:
    # Silvery white scale on light skin, ashy grey on dark skin.
    return _lerp3((86.0, 1.5, 6.0), (64.0, 1.0, 3.0), t, 1.0)


_PUS = (82.0, 4.0, 30.0)
_FIBRIN = (68.0, 9.0, 32.0)
_GRANULATION = (46.0, 34.0, 20.0)
_BLOOD_CRUST = (26.0, 16.0, 12.0)
_SERUM_CRUST = (56.0, 14.0, 34.0)
_KERATIN = (80.0, 3.0, 20.0)


# ---------------------------------------------------------------------------------------------
# Canvas and drawing primitives


@dataclass
class RenderedImage:
    """A rendered photo with what is known about it (masks are (H, W) arrays)."""

    image: Image.Image
    lesion_mask: np.ndarray  # float32 0..1: how much each pixel belongs to the lesion
    skin_mask: np.ndarray  # bool: skin (False on the background margin and hair)
    ita: float  # the ITA (degrees) the healthy skin was calibrated to
    fst: int


_Slices = tuple[slice, slice]
_Window = tuple[_Slices, np.ndarray, np.ndarray]  # slices, local x (1, w), local y (h, 1)


class _Canvas:
    """Lab planes of one image plus the per-image random state and geometry."""

    def __init__(self, w: int, h: int, rng: np.random.Generator, fst: int) -> None:
        self.w, self.h, self.rng, self.fst = w, h, rng, fst
        self.t = _darkness(fst)
        self.S = float(min(w, h))
        self.L = np.zeros((h, w), np.float32)
        self.A = np.zeros((h, w), np.float32)
        self.B = np.zeros((h, w), np.float32)
        self.lesion = np.zeros((h, w), np.float32)
        self.hair = np.zeros((h, w), np.float32)
        angle = rng.uniform(0, 2 * math.pi)
        self.light = (math.cos(angle), math.sin(angle))  # direction towards the light, image plane

    # -- geometry -------------------------------------------------------------------------------
    def window(self, cx: float, cy: float, extent: float) -> _Window | None:
        """Slices of the box ``centre +- extent`` inside the image, with local coordinates."""
        x0, x1 = max(0, int(cx - extent)), min(self.w, int(cx + extent) + 2)
        y0, y1 = max(0, int(cy - extent)), min(self.h, int(cy + extent) + 2)
        if x0 >= x1 or y0 >= y1:
            return None
        xs = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
        return (slice(y0, y1), slice(x0, x1)), xs, ys

    def noise(self, cells: float, shape: tuple[int, int] | None = None) -> np.ndarray:
        """Smooth Gaussian noise, about ``cells`` features across the longer side, std ~1."""
        h, w = shape or (self.h, self.w)
        big = max(h, w)
        ch = max(2, round(cells * h / big))
        cw = max(2, round(cells * w / big))
        small = self.rng.standard_normal((ch + 3, cw + 3)).astype(np.float32)
        img = Image.fromarray(small).resize(
            (w, h), Image.Resampling.BICUBIC, box=(1.5, 1.5, cw + 1.5, ch + 1.5)
        )
        return np.asarray(img, dtype=np.float32) * np.float32(1.6)

    # -- colour ---------------------------------------------------------------------------------
    def tint(
        self, sl: _Slices, alpha: np.ndarray, delta: Sequence[float], lesion: bool = True
    ) -> None:
        """Add ``alpha * delta`` (Lab) over a window."""
        self.L[sl] += alpha * np.float32(delta[0])
        self.A[sl] += alpha * np.float32(delta[1])
        self.B[sl] += alpha * np.float32(delta[2])
        if lesion:
            np.maximum(self.lesion[sl], alpha, out=self.lesion[sl])

    def paint(
        self, sl: _Slices, alpha: np.ndarray, colour: Sequence[float], lesion: bool = True
    ) -> None:
        """Blend towards an absolute Lab colour with opacity ``alpha``."""
        for plane, value in zip((self.L, self.A, self.B), colour, strict=True):
            plane[sl] += alpha * (np.float32(value) - plane[sl])
        if lesion:
            np.maximum(self.lesion[sl], alpha, out=self.lesion[sl])

    def shade(self, sl: _Slices, height: np.ndarray, strength: float) -> None:
        """Light a height field (in pixels of relief) from the image's light direction."""
        if height.shape[0] < 2 or height.shape[1] < 2:
            return
        gy, gx = np.gradient(height)
        lx, ly = self.light
        self.L[sl] += np.float32(strength) * (gx * np.float32(lx) + gy * np.float32(ly))

    def highlight(self, cx: float, cy: float, r: float, strength: float) -> None:
        """A specular spot on a dome, offset towards the light."""
        lx, ly = self.light
        hx, hy, hr = cx + lx * 0.38 * r, cy + ly * 0.38 * r, max(1.0, 0.3 * r)
        win = self.window(hx, hy, 2.5 * hr)
        if win is None:
            return
        sl, xs, ys = win
        g = np.exp(-(xs * xs + ys * ys) / np.float32(2 * hr * hr)).astype(np.float32) * np.float32(
            strength
        )
        self.L[sl] += 14.0 * g
        self.A[sl] *= 1.0 - 0.45 * g
        self.B[sl] *= 1.0 - 0.45 * g

    # -- strokes --------------------------------------------------------------------------------
    def strokes(
        self, paths: Sequence[Sequence[tuple[float, float]]], width: float, blur: float = 0.0
    ) -> np.ndarray:
        """Rasterise polylines into a float32 mask 0..1 of the whole image."""
        img = Image.new("L", (self.w, self.h), 0)
        draw = ImageDraw.Draw(img)
        wpx = max(1, round(width))
        for path in paths:
            if len(path) > 1:
                draw.line(
                    [(float(x), float(y)) for x, y in path], fill=255, width=wpx, joint="curve"
                )
        if blur > 0:
            img = img.filter(_soften(blur))
        return np.asarray(img, dtype=np.float32) * np.float32(1 / 255)


def _soften(sigma: float) -> ImageFilter.Filter:
    """A Gaussian blur; a 3x3 kernel for small sigmas, several times faster than PIL's blur."""
    if sigma > 1.0:
        return ImageFilter.GaussianBlur(sigma)
    w1 = math.exp(-1.0 / (2.0 * sigma * sigma))
    row = (w1, 1.0, w1)
    weights = [a * b for a in row for b in row]
    return ImageFilter.Kernel((3, 3), weights, scale=sum(weights))


def _blob(
    xs: np.ndarray,
    ys: np.ndarray,
    rx: float,
    ry: float,
    angle: float,
    harmonics: Sequence[tuple[int, float, float]] = (),
) -> np.ndarray:
    """Normalised distance to an irregular ellipse: < 1 inside, 1 on its border."""
    c, s = math.cos(angle), math.sin(angle)
    u = xs * np.float32(c) + ys * np.float32(s)
    v = ys * np.float32(c) - xs * np.float32(s)
    r = np.sqrt((u / np.float32(rx)) ** 2 + (v / np.float32(ry)) ** 2)
    if harmonics:
        theta = np.arctan2(v / np.float32(ry), u / np.float32(rx))
        edge = np.ones_like(theta)
        for k, amp, phase in harmonics:
            edge += np.float32(amp) * np.cos(np.float32(k) * theta + np.float32(phase))
        r = r / np.maximum(edge, 0.35)
    return r.astype(np.float32)


def _harmonics(rng: np.random.Generator, irregularity: float) -> list[tuple[int, float, float]]:
    return [
        (k, irregularity * rng.uniform(0.3, 1.0) / k, rng.uniform(0, 2 * math.pi))
        for k in range(2, 7)
    ]


def _edge(d: np.ndarray, softness: float) -> np.ndarray:
    """Opacity 1 inside, falling to 0 across the border over ``softness`` (in units of d)."""
    x = np.clip((1.0 - d) / np.float32(softness) + 0.5, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _dome(d: np.ndarray) -> np.ndarray:
    return np.sqrt(np.clip(1.0 - d * d, 0.0, 1.0))


def _walk(
    rng: np.random.Generator,
    x: float,
    y: float,
    heading: float,
    n: int,
    step: float,
    turn: float,
    wave: float = 0.0,
    period: float = 12.0,
) -> list[tuple[float, float]]:
    """A smooth random walk; ``wave`` adds a regular meander (serpiginous tracks)."""
    noise = rng.normal(0.0, turn, n)
    # The meander's period wanders too, so loops differ in size as real tracks do.
    phases = rng.uniform(0, 2 * math.pi) + np.cumsum(
        2 * math.pi / period * np.exp(rng.normal(0, 0.35, n))
    )
    pts = [(x, y)]
    curv = 0.0
    for i in range(n):
        curv = 0.85 * curv + noise[i]
        h = heading + curv + wave * math.sin(phases[i])
        heading += 0.15 * curv
        x += step * math.cos(h)
        y += step * math.sin(h)
        pts.append((x, y))
    return pts


def _centre(cv: _Canvas, spread: float = 0.12) -> tuple[float, float]:
    return (
        cv.w / 2 + cv.rng.uniform(-spread, spread) * cv.w,
        cv.h / 2 + cv.rng.uniform(-spread, spread) * cv.h,
    )


# ---------------------------------------------------------------------------------------------
# Skin, photography


def _skin(cv: _Canvas, base: tuple[float, float, float]) -> None:
    rng, t = cv.rng, cv.t
    cv.L[:] = base[0]
    cv.A[:] = base[1]
    cv.B[:] = base[2]
    # Mottling: broad uneven pigment and redness, as real skin has.
    cv.L += cv.noise(3.5) * np.float32(1.2) + cv.noise(12) * np.float32(0.35)
    cv.A += cv.noise(5) * np.float32(1.2 * (1 - 0.5 * t))
    cv.B += cv.noise(4) * np.float32(0.9)
    # Micro-relief lit from the light direction: the bumpy surface of real skin.
    relief = cv.noise(cv.S / 5) * np.float32(0.6) + cv.noise(cv.S / 14)
    cv.shade((slice(None), slice(None)), relief, rng.uniform(1.2, 2.2) * cv.S / 512)
    # Fine structure at half resolution: pores, creases (skin lines) and grain.
    hh, hw = (cv.h + 1) // 2, (cv.w + 1) // 2
    fine = rng.standard_normal((hh, hw)).astype(np.float32) * np.float32(1.2)
    n_pores = int(hh * hw / rng.uniform(35, 80))
    py = rng.integers(0, hh, n_pores)
    px = rng.integers(0, hw, n_pores)
    np.add.at(fine, (py, px), -rng.uniform(6.0, 18.0, n_pores).astype(np.float32))
    fine = ndimage.gaussian_filter(fine, 0.5 + 0.1 * cv.S / 512)
    period = cv.S * rng.uniform(0.015, 0.03) / 2
    yy, xx = np.mgrid[0:hh, 0:hw].astype(np.float32)
    warp = cv.noise(8, (hh, hw)) * np.float32(period * 0.35)
    for _ in range(2):
        a = rng.uniform(0, math.pi)
        u = (xx * np.float32(math.cos(a)) + yy * np.float32(math.sin(a)) + warp) / np.float32(
            period
        )
        crease = np.cos(np.float32(2 * math.pi) * u)
        fine -= np.float32(rng.uniform(0.8, 1.8)) * np.clip(crease, 0, 1) ** 10
    up = np.asarray(
        Image.fromarray(fine).resize((cv.w, cv.h), Image.Resampling.BILINEAR), dtype=np.float32
    )
    cv.L += up * np.float32(1.0 - 0.3 * t)
    # Freckles and naevi on light skin.
    if t < 0.45 and rng.random() < 0.5:
        n = int(rng.integers(20, 160) * (cv.w * cv.h) / 512**2) + 1
        spots = np.zeros((cv.h, cv.w), np.float32)
        spots[rng.integers(0, cv.h, n), rng.integers(0, cv.w, n)] = rng.uniform(0.3, 1.0, n)
        spots = ndimage.gaussian_filter(spots, max(0.8, cv.S * 0.004)) * np.float32(
            2 * math.pi * max(0.8, cv.S * 0.004) ** 2
        )
        spots = np.minimum(spots, 1.0)
        cv.tint((slice(None), slice(None)), spots, _hyperpigment(t, 0.6), lesion=False)


def _hair(cv: _Canvas) -> None:
    rng = cv.rng
    n = int(rng.integers(8, 60))
    heading = rng.uniform(0, 2 * math.pi)
    paths = []
    for _ in range(n):
        x, y = rng.uniform(0, cv.w), rng.uniform(0, cv.h)
        length = cv.S * rng.uniform(0.05, 0.25)
        paths.append(_walk(rng, x, y, heading + rng.normal(0, 0.5), 8, length / 8, 0.08))
    mask = cv.strokes(paths, max(1.0, cv.S / 500), blur=0.5) * np.float32(rng.uniform(0.5, 0.9))
    dark = rng.random() < 0.8 or cv.t > 0.4
    colour = (18.0, 2.0, 4.0) if dark else (58.0, 6.0, 22.0)
    cv.paint((slice(None), slice(None)), mask, colour, lesion=False)
    np.maximum(cv.hair, mask, out=cv.hair)


def _lighting(cv: _Canvas) -> None:
    rng, t = cv.rng, cv.t
    yy = (np.arange(cv.h, dtype=np.float32)[:, None] - cv.h / 2) / np.float32(cv.S / 2)
    xx = (np.arange(cv.w, dtype=np.float32)[None, :] - cv.w / 2) / np.float32(cv.S / 2)
    lx, ly = cv.light
    light = np.float32(rng.uniform(1.5, 5.0)) * (xx * np.float32(lx) + yy * np.float32(ly))
    light = light - np.float32(rng.uniform(2.0, 9.0)) * (xx * xx + yy * yy) ** 1.4 / 2.5
    if rng.random() < 0.5:
        # A limb or trunk curving away from the camera darkens towards two sides.
        a = rng.uniform(0, math.pi)
        across = xx * np.float32(math.cos(a)) + yy * np.float32(math.sin(a))
        light = light - np.float32(rng.uniform(3.0, 9.0)) * np.abs(across) ** 3
    cv.L += light
    if rng.random() < 0.35 + 0.3 * t:
        # Sheen: broad soft highlights, more visible on dark skin.
        sheen = np.clip(cv.noise(2.5) - 1.0, 0, None) * np.float32(rng.uniform(2.0, 5.0))
        cv.L += sheen
        cv.A -= sheen * np.float32(0.2)
        cv.B -= sheen * np.float32(0.3)
    # White balance of the camera.
    cv.A += np.float32(rng.normal(0, 0.8))
    cv.B += np.float32(rng.normal(0, 1.2))


def _body_edge(cv: _Canvas) -> np.ndarray | None:
    """On some photos the body ends before the frame: the margin's opacity (None: no margin).

    The skin darkens towards the contour, where the body curves away from the camera.
    """
    rng = cv.rng
    if rng.random() >= 0.22:
        return None
    side = int(rng.integers(4))  # 0 top, 1 bottom, 2 left, 3 right
    length, depth_n = (cv.w, cv.h) if side < 2 else (cv.h, cv.w)
    depth = depth_n * rng.uniform(0.05, 0.18)
    contour = depth + cv.noise(3, (1, length))[0] * np.float32(depth_n * 0.025)
    pos = np.arange(depth_n, dtype=np.float32)[:, None]
    dist = (pos - contour[None, :]) / np.float32(max(1.0, cv.S / 400))  # > 0 on the skin
    soft = np.clip(0.5 - dist, 0.0, 1.0)
    near = np.exp(-np.clip(dist, 0, None) * np.float32(max(1.0, cv.S / 400) / (cv.S * 0.08)))
    fields = []
    for f in (soft, near):
        if side == 1:
            f = f[::-1]
        f = f if side < 2 else f.T
        if side == 3:
            f = f[:, ::-1]
        fields.append(np.ascontiguousarray(f, dtype=np.float32))
    cv.L -= fields[1] * np.float32(rng.uniform(4.0, 10.0))
    return fields[0]


def _paint_background(cv: _Canvas, soft: np.ndarray) -> None:
    """Drape, paper, wall or shadow beyond the body contour."""
    rng = cv.rng
    palette = [
        (52.0, -4.0, -22.0),
        (50.0, -20.0, 4.0),
        (62.0, 0.0, 1.0),
        (88.0, 0.5, 3.0),
        (16.0, 0.0, 0.0),
        (70.0, 3.0, 12.0),
    ]
    colour = palette[int(rng.integers(len(palette)))]
    bg_l = np.float32(colour[0]) + cv.noise(6) * np.float32(2.0) + cv.noise(40) * np.float32(0.6)
    cv.L += soft * (bg_l - cv.L)
    cv.A += soft * (np.float32(colour[1]) - cv.A)
    cv.B += soft * (np.float32(colour[2]) - cv.B)
    cv.lesion *= 1.0 - soft


# ---------------------------------------------------------------------------------------------
# The seven morphologies


def _halo(cv: _Canvas, cx: float, cy: float, r: float, s: float) -> None:
    """Diffuse inflammation around a lesion; a hyperpigmented halo on dark skin."""
    win = cv.window(cx, cy, 2.2 * r)
    if win is None:
        return
    sl, xs, ys = win
    d = _blob(xs, ys, 1.6 * r, 1.6 * r, 0.0)
    alpha = np.exp(-2.2 * d * d) * np.float32(s)
    cv.tint(sl, alpha * np.float32(1 - 0.5 * cv.t), _erythema(cv.t, 0.7), lesion=False)
    cv.tint(sl, alpha * np.float32(cv.t), _hyperpigment(cv.t, 0.5), lesion=False)


def _basal_cell_carcinoma(cv: _Canvas) -> None:
    rng, t = cv.rng, cv.t
    cx, cy = _centre(cv)
    r = cv.S * rng.uniform(0.09, 0.2)
    pigmented = rng.random() < 0.08 + 0.65 * t  # pigmented BCC is common on dark skin
    ulcerated = rng.random() < 0.45
    _halo(cv, cx, cy, r, 0.5)
    win = cv.window(cx, cy, 1.3 * r)
    if win is None:
        return
    sl, xs, ys = win
    d = _blob(
        xs, ys, r * rng.uniform(0.85, 1.15), r, rng.uniform(0, math.pi), _harmonics(rng, 0.12)
    )
    body = _edge(d, 0.18)
    skin = (float(cv.L[sl].mean()), float(cv.A[sl].mean()), float(cv.B[sl].mean()))
    if pigmented:
        colour = (max(18.0, skin[0] - 22.0), 6.0, 4.0 + 4.0 * (1 - t))
    else:
        colour = (skin[0] + 7.0 - 4.0 * t, skin[1] + 6.0, skin[2] - 5.0)  # pearly, translucent pink
    cv.paint(sl, body * np.float32(0.8), colour)
    # Rolled border: a raised, paler, shinier rim.
    rim = np.exp(-(((d - 0.82) / 0.12) ** 2)).astype(np.float32)
    cv.tint(sl, rim * body, (6.0 - 2.0 * t, -3.0, -4.0))
    height = (_dome(d) * 0.6 + rim * 0.6) * np.float32(r * 0.25)
    if ulcerated:
        core = _edge(d / 0.38, 0.4)
        height = height - core * np.float32(r * 0.2)
        cv.paint(sl, core * np.float32(0.85), _BLOOD_CRUST if rng.random() < 0.6 else _GRANULATION)
    cv.shade(sl, height, 1.6)
    # Telangiectasia: fine branching vessels over the surface, faint on dark skin.
    paths = [
        _walk(
            rng,
            cx + rng.normal(0, r * 0.4),
            cy + rng.normal(0, r * 0.4),
            rng.uniform(0, 6.3),
            10,
            r * 0.09,
            0.35,
        )
        for _ in range(int(rng.integers(3, 9)))
    ]
    vessels = cv.strokes(paths, max(1.0, cv.S / 400), blur=0.4)[sl] * body
    cv.tint(sl, vessels * np.float32(1.0 - 0.75 * t), (-10.0, 28.0, 6.0))
    for _ in range(int(rng.integers(1, 3))):
        cv.highlight(cx + rng.normal(0, r * 0.2), cy + rng.normal(0, r * 0.2), r * 0.7, 0.8)


def _papule(cv: _Canvas, cx: float, cy: float, r: float, pus: bool, hyper: float) -> None:
    t = cv.t
    win = cv.window(cx, cy, 2.6 * r)
    if win is None:
        return
    sl, xs, ys = win
    d = np.sqrt(xs * xs + ys * ys) / np.float32(r)
    halo = np.exp(-0.55 * d * d).astype(np.float32)
    cv.tint(sl, halo, _erythema(t, 0.9 * (1 - hyper)))
    cv.tint(sl, halo, _hyperpigment(t, 0.7 * hyper))
    cv.shade(sl, _dome(d * 0.9) * np.float32(r * 0.6), 3.0)
    if pus:
        core = _edge(d / 0.5, 0.5)
        cv.paint(sl, core * np.float32(0.8), _lerp3(_PUS, (74.0, 6.0, 28.0), t, 1.0))
        cv.shade(sl, _dome(d / 0.5) * np.float32(r * 0.3), 3.0)


def _folliculitis(cv: _Canvas) -> None:
    rng, t = cv.rng, cv.t
    cx, cy = _centre(cv, 0.08)
    spread = cv.S * rng.uniform(0.22, 0.42)
    n = int(rng.integers(20, 80))
    hyper = 0.85 * t
    pus_p = rng.uniform(0.25, 0.75)
    heading = rng.uniform(0, 2 * math.pi)
    spots = [
        (cx + rng.normal(0, spread * 0.55), cy + rng.normal(0, spread * 0.45)) for _ in range(n)
    ]
    # Hairs grow out of the inflamed follicles; drawn first so that pus covers their roots.
    hairs = [
        _walk(rng, x, y, heading + rng.normal(0, 0.4), 4, cv.S * rng.uniform(0.008, 0.02), 0.1)
        for x, y in spots
        if rng.random() < 0.25
    ]
    if hairs:
        mask = cv.strokes(hairs, max(1.0, cv.S / 700), blur=0.4) * np.float32(0.7)
        cv.paint((slice(None), slice(None)), mask, (20.0, 2.0, 4.0), lesion=False)
        np.maximum(cv.hair, mask, out=cv.hair)
    for x, y in spots:
        r = cv.S * rng.uniform(0.007, 0.022)
        _papule(cv, x, y, r, rng.random() < pus_p, hyper)


def _nematode_infection(cv: _Canvas) -> None:
    rng, t = cv.rng, cv.t
    paths = []
    for _ in range(1 if rng.random() < 0.7 else 2):
        x, y = _centre(cv, 0.2)
        n = int(rng.integers(40, 90))
        step = cv.S * rng.uniform(0.01, 0.016)
        paths.append(
            _walk(
                rng,
                x,
                y,
                rng.uniform(0, 6.3),
                n,
                step,
                0.09,
                wave=rng.uniform(0.7, 1.3),
                period=rng.uniform(9, 20),
            )
        )
    # Recentre the tracks on the frame, as a photographer would.
    pts = np.array([p for path in paths for p in path])
    shift = np.array([cv.w / 2, cv.h / 2]) - (pts.min(0) + pts.max(0)) / 2
    paths = [[(x + shift[0], y + shift[1]) for x, y in path] for path in paths]
    width = cv.S * rng.uniform(0.012, 0.024)
    track = cv.strokes(paths, width, blur=width * 0.35)
    halo = cv.strokes(paths, width * 3.0, blur=width * 1.2)
    full = (slice(None), slice(None))
    cv.tint(full, halo * np.float32(0.45), _erythema(t, 0.6), lesion=False)
    cv.tint(full, track, _erythema(t, 1.15))
    cv.tint(full, track * np.float32(t), _hyperpigment(t, 0.35))
    cv.shade(full, track * np.float32(width * 0.9), 1.4)
    # Vesicles along the track, and a few excoriations.
    for path in paths:
        for i in rng.choice(len(path), size=min(len(path), int(rng.integers(2, 7))), replace=False):
            x, y = path[int(i)]
            win = cv.window(x, y, width)
            if win is None:
                continue
            sl, xs, ys = win
            d = np.sqrt(xs * xs + ys * ys) / np.float32(width * 0.45)
            cv.paint(sl, _edge(d, 0.5) * np.float32(0.5), (cv.L[sl].mean() + 8, 8.0, 14.0))
            cv.shade(sl, _dome(d) * np.float32(width * 0.3), 1.5)


def _neutrophilic_dermatoses(cv: _Canvas) -> None:
    rng, t = cv.rng, cv.t
    cx, cy = _centre(cv)
    if rng.random() < 0.6:
        # Sweet's syndrome: juicy, oedematous red plaques, sometimes pseudovesicular.
        for i in range(int(rng.integers(1, 5))):
            x = cx + (0 if i == 0 else rng.normal(0, cv.S * 0.2))
            y = cy + (0 if i == 0 else rng.normal(0, cv.S * 0.2))
            r = cv.S * rng.uniform(0.06, 0.17) * (1.0 if i == 0 else 0.7)
            win = cv.window(x, y, 1.4 * r)
            if win is None:
                continue
            sl, xs, ys = win
            d = _blob(
                xs, ys, r * rng.uniform(0.8, 1.2), r, rng.uniform(0, 3.1), _harmonics(rng, 0.15)
            )
            body = _edge(d, 0.55)
            cv.tint(sl, body, _erythema(t, rng.uniform(1.0, 1.35)))
            cv.tint(sl, body * np.float32(0.5 * t), _violaceous(t, 0.8))
            cv.shade(sl, _dome(d * 0.95) * np.float32(r * 0.35), 1.4)
            cv.highlight(x, y, r * 0.8, 0.55)
            if rng.random() < 0.5:
                for _ in range(int(rng.integers(3, 12))):
                    vx, vy = x + rng.normal(0, r * 0.4), y + rng.normal(0, r * 0.4)
                    w2 = cv.window(vx, vy, r * 0.12)
                    if w2 is None:
                        continue
                    s2, x2, y2 = w2
                    dd = np.sqrt(x2 * x2 + y2 * y2) / np.float32(r * 0.07)
                    cv.tint(s2, _edge(dd, 0.6) * np.float32(0.7), (7.0, -5.0, 4.0))
    else:
        # Pyoderma gangrenosum: ulcer with an undermined violaceous border.
        r = cv.S * rng.uniform(0.1, 0.22)
        _halo(cv, cx, cy, r, 0.8)
        win = cv.window(cx, cy, 1.5 * r)
        if win is None:
            return
        sl, xs, ys = win
        d = _blob(xs, ys, r * rng.uniform(0.8, 1.25), r, rng.uniform(0, 3.1), _harmonics(rng, 0.25))
        border = np.exp(-(((d - 1.0) / 0.16) ** 2)).astype(np.float32)
        cv.tint(sl, border, _violaceous(t, 1.2))
        base = _edge(d / 0.9, 0.15)
        mix = np.clip(cv.noise(10, base.shape) * np.float32(0.5) + np.float32(0.5), 0, 1)
        cv.paint(sl, base * mix * np.float32(0.9), _GRANULATION)
        cv.paint(sl, base * (1 - mix) * np.float32(0.85), _FIBRIN)
        cv.shade(sl, (border - base) * np.float32(r * 0.2), 1.3)


def _prurigo_nodularis(cv: _Canvas) -> None:
    rng, t = cv.rng, cv.t
    cx, cy = _centre(cv, 0.06)
    n = int(rng.integers(5, 22))
    spread = cv.S * rng.uniform(0.2, 0.38)
    scratches = []
    for _ in range(n):
        x, y = cx + rng.normal(0, spread * 0.6), cy + rng.normal(0, spread * 0.5)
        r = cv.S * rng.uniform(0.02, 0.05)
        win = cv.window(x, y, 1.8 * r)
        if win is None:
            continue
        sl, xs, ys = win
        d = _blob(xs, ys, r, r * rng.uniform(0.8, 1.1), rng.uniform(0, 3.1), _harmonics(rng, 0.1))
        body = _edge(d, 0.35)
        if t > 0.5 and rng.random() < 0.4:
            # A pale rim around the nodule, seen on dark skin.
            ring = np.exp(-(((d - 1.25) / 0.2) ** 2)).astype(np.float32)
            cv.tint(sl, ring * np.float32(0.6), (6.0, -1.0, -1.0))
        cv.tint(sl, body, _hyperpigment(t, rng.uniform(0.8, 1.25)))
        cv.tint(sl, body, _erythema(t, 0.35 * (1 - t)))
        cv.shade(sl, _dome(d) * np.float32(r * 0.6), 1.6)
        cv.highlight(x, y, r, 0.5)
        if rng.random() < 0.6:
            # Excoriated top: a small crust.
            dc = np.sqrt((xs - np.float32(rng.normal(0, r * 0.2))) ** 2 + ys**2) / np.float32(
                r * 0.35
            )
            cv.paint(
                sl,
                _edge(dc, 0.6) * np.float32(0.85),
                _BLOOD_CRUST if rng.random() < 0.7 else _SERUM_CRUST,
            )
        if rng.random() < 0.3:
            scratches.append(_walk(rng, x, y, rng.uniform(0, 6.3), 5, r * 0.5, 0.05))
    if scratches:
        mask = cv.strokes(scratches, max(1.0, cv.S / 350), blur=0.5)
        cv.paint((slice(None), slice(None)), mask * np.float32(0.75), (32.0, 18.0, 12.0))


def _psoriasis(cv: _Canvas) -> None:
    rng, t = cv.rng, cv.t
    cx, cy = _centre(cv)
    full = (slice(None), slice(None))
    plaques = np.zeros((cv.h, cv.w), np.float32)
    inner = np.zeros((cv.h, cv.w), np.float32)
    for i in range(int(rng.integers(1, 6))):
        x = cx + (0 if i == 0 else rng.normal(0, cv.S * 0.25))
        y = cy + (0 if i == 0 else rng.normal(0, cv.S * 0.25))
        r = cv.S * rng.uniform(0.1, 0.26) * (1.0 if i == 0 else rng.uniform(0.3, 0.7))
        win = cv.window(x, y, 1.5 * r)
        if win is None:
            continue
        sl, xs, ys = win
        d = _blob(xs, ys, r * rng.uniform(0.7, 1.3), r, rng.uniform(0, 3.1), _harmonics(rng, 0.3))
        np.maximum(plaques[sl], _edge(d, 0.07), out=plaques[sl])  # well demarcated
        np.maximum(inner[sl], _edge(d / 0.88, 0.35), out=inner[sl])
    # Silvery scale: thick flakes, thinner towards the red rim, split by fine cracks.
    flakes = cv.noise(cv.S / 9) * np.float32(0.7) + cv.noise(cv.S / 3.5) * np.float32(0.45)
    cracks = np.clip((np.abs(cv.noise(cv.S / 11)) - 0.06) / 0.2, 0, 1)
    coverage = np.float32(rng.uniform(-0.25, 0.2))
    scale_alpha = (
        plaques * inner * np.clip(0.6 + flakes * np.float32(0.6) + coverage, 0, 1) * cracks
    )
    scale_alpha *= np.float32(rng.uniform(0.75, 0.95))
    cv.tint(full, plaques, _erythema(t, 1.0))
    cv.tint(full, plaques * np.float32(0.6 * t), _violaceous(t, 0.6))
    cv.paint(full, scale_alpha, _scale_colour(t))
    cv.shade(
        full, (plaques * np.float32(0.6) + scale_alpha) * np.float32(max(1.0, cv.S * 0.005)), 1.3
    )


def _squamous_cell_carcinoma(cv: _Canvas) -> None:
    rng, t = cv.rng, cv.t
    cx, cy = _centre(cv)
    r = cv.S * rng.uniform(0.1, 0.22)
    _halo(cv, cx, cy, r, 0.7)
    win = cv.window(cx, cy, 1.4 * r)
    if win is None:
        return
    sl, xs, ys = win
    d = _blob(xs, ys, r * rng.uniform(0.8, 1.2), r, rng.uniform(0, 3.1), _harmonics(rng, 0.25))
    body = _edge(d, 0.2)
    cv.tint(sl, body, _erythema(t, 0.9))
    cv.tint(sl, body * np.float32(t), _hyperpigment(t, 0.5))
    fine = cv.noise(max(8.0, r / 1.5), body.shape)
    rough = np.clip(
        cv.noise(max(6.0, r / 5), body.shape) * np.float32(0.3)
        + fine * np.float32(0.15)
        + np.float32(0.7),
        0,
        1,
    )
    keratin = body * rough * _edge(d / 0.85, 0.4) * np.float32(rng.uniform(0.55, 0.9))
    cv.paint(sl, keratin, _KERATIN)
    height = _dome(d) * np.float32(r * 0.45) + keratin * fine * np.float32(max(1.0, r * 0.04))
    if rng.random() < 0.6:
        core = _edge(d / rng.uniform(0.3, 0.5), 0.35)
        cv.paint(sl, core * np.float32(0.9), _BLOOD_CRUST if rng.random() < 0.65 else _GRANULATION)
        height = height - core * np.float32(r * 0.2)
    cv.shade(sl, height, 1.5)


_MORPHOLOGIES: dict[str, Callable[[_Canvas], None]] = {
    "basal cell carcinoma": _basal_cell_carcinoma,
    "folliculitis": _folliculitis,
    "nematode infection": _nematode_infection,
    "neutrophilic dermatoses": _neutrophilic_dermatoses,
    "prurigo nodularis": _prurigo_nodularis,
    "psoriasis": _psoriasis,
    "squamous cell carcinoma": _squamous_cell_carcinoma,
}


# ---------------------------------------------------------------------------------------------
# One image


def _frame_size(rng: np.random.Generator, image_size: int) -> tuple[int, int]:
    aw, ah = _ASPECTS[int(rng.choice(len(_ASPECTS), p=_ASPECT_P))]
    longer = int(round(image_size * rng.uniform(0.85, 1.0)))
    if aw >= ah:
        return longer, max(1, round(longer * ah / aw))
    return max(1, round(longer * aw / ah)), longer


def _draw_skin_colour(
    rng: np.random.Generator, fst: int
) -> tuple[float, tuple[float, float, float]]:
    ita = float(rng.uniform(*ITA_RANGES[fst]))
    b_star = float(rng.uniform(*_B_STAR[fst]))
    a_star = float(rng.uniform(*_A_STAR[fst]))
    return ita, _lab_for(fst, ita, b_star, a_star)


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
    if condition not in _MORPHOLOGIES:
        raise DermsynthError(
            f"unknown condition {condition!r}; simulated: {', '.join(_MORPHOLOGIES)}"
        )
    if fst not in FST_TYPES:
        raise DermsynthError(f"skin type must be 1..6, got {fst!r}")
    rng = np.random.default_rng(rng_seed)
    frame = _frame_size(rng, image_size)
    w, h = size if size is not None else frame
    if w < 8 or h < 8:
        raise DermsynthError(f"image size {w}x{h} is too small; at least 8x8 pixels")
    cv = _Canvas(int(w), int(h), rng, fst)
    ita, base = _draw_skin_colour(rng, fst)
    _skin(cv, base)
    _MORPHOLOGIES[condition](cv)
    if rng.random() < 0.35:
        _hair(cv)
    _lighting(cv)
    margin = _body_edge(cv)
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
        _paint_background(cv, margin)
        skin = margin < 0.05
    cv.L += rng.standard_normal(cv.L.shape, dtype=np.float32) * np.float32(0.6)
    np.clip(cv.L, 0.0, 100.0, out=cv.L)
    rgb = lab_to_rgb8(cv.L, cv.A, cv.B)
    image = Image.fromarray(rgb)
    blur = rng.uniform(0.3, 0.9) * cv.S / 512
    if blur > 0.25:
        image = image.filter(_soften(blur))
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


# ---------------------------------------------------------------------------------------------
# The dataset


@dataclass(frozen=True)
class _Task:
    path: str
    condition: str
    fst: int  # the type the skin is rendered on (the hidden one for unknown-FST rows)
    seed: int
    image_size: int
    quality: int


def _seed_of(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def cell_counts(scale: float) -> dict[tuple[str, int], int]:
    """Images per (condition, FST) at ``scale``, FST -1 included (see the module docstring)."""
    counts: dict[tuple[str, int], int] = {}
    for condition, row in TABLE1.items():
        for fst, n in zip(FST_TYPES, row, strict=True):
            if n > 0:
                counts[(condition, fst)] = max(1, _round_half_up(scale * n))
        unknown = _round_half_up(scale * UNKNOWN_FST_COUNTS[condition])
        if unknown:
            counts[(condition, UNKNOWN_FST)] = unknown
    return counts


def _centaur(rng: np.random.Generator, fst: int) -> int:
    """A second annotator's type: mostly the same, sometimes one or two off, or unknown."""
    u = rng.random()
    if u < 0.04:
        return UNKNOWN_FST
    if u < 0.64:
        return fst
    off = 1 if u < 0.94 else 2
    candidates = [f for f in (fst - off, fst + off) if 1 <= f <= 6] or [fst]
    return int(candidates[int(rng.integers(len(candidates)))])


def _plan(
    out_dir: Path, scale: float, random_seed: int, image_size: int
) -> tuple[list[dict[str, object]], list[_Task]]:
    rows: list[dict[str, object]] = []
    tasks: list[_Task] = []
    images = out_dir / IMAGES_DIRNAME
    for (condition, fst), n in cell_counts(scale).items():
        nine, three = PARTITIONS[condition]
        weights = np.array(TABLE1[condition], dtype=float)
        for index in range(n):
            key = f"dermsynth-sim:{random_seed}:{condition}:{fst}:{index}"
            md5 = hashlib.md5(key.encode()).hexdigest()
            meta = np.random.default_rng(_seed_of(key + ":meta"))
            shown = (
                fst
                if fst != UNKNOWN_FST
                else int(meta.choice(FST_TYPES, p=weights / weights.sum()))
            )
            centaur = _centaur(meta, shown)
            url = f"https://simulated.invalid/{md5}.jpg"
            rows.append(
                {
                    "md5hash": md5,
                    "fitzpatrick_scale": fst,
                    "fitzpatrick_centaur": centaur,
                    "label": condition,
                    "nine_partition_label": nine,
                    "three_partition_label": three,
                    "qc": "",
                    "url": url,
                    "url_alphanum": re.sub(r"[^0-9A-Za-z]", "", url) + ".jpg",
                }
            )
            tasks.append(
                _Task(
                    str(images / f"{md5}.jpg"),
                    condition,
                    shown,
                    _seed_of(key + ":image"),
                    image_size,
                    int(meta.integers(82, 96)),
                )
            )
    return rows, tasks


def _planned_size(task: _Task) -> tuple[int, int]:
    return _frame_size(np.random.default_rng(task.seed), task.image_size)


def _is_valid(task: _Task) -> bool:
    """An existing image that decodes fully at its planned size is kept on resume."""
    path = Path(task.path)
    if not path.is_file():
        return False
    try:
        with Image.open(path) as img:
            if img.format != "JPEG" or img.size != _planned_size(task):
                return False
            img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False
    return True


def _run_task(task: _Task) -> bool:
    """Render and write one image unless a valid one is there; True when written."""
    if _is_valid(task):
        return False
    image = render_sample(task.condition, task.fst, task.seed, image_size=task.image_size).image
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=task.quality, optimize=False)
    atomic_write_bytes(task.path, buf.getvalue())
    return True


def _n_workers(workers: int) -> int:
    if workers > 0:
        return workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def simulate_dataset(
    out_dir: str | os.PathLike[str],
    *,
    scale: float = 0.25,
    random_seed: int = 0,
    image_size: int = 512,
    workers: int = 0,
    progress: bool = True,
) -> Path:
    """Write a simulated dataset (JPEGs and a Fitzpatrick 17k-schema CSV); return the CSV path.

    ``scale`` multiplies the paper's Table 1 counts (0.25: about 700 images); ``image_size`` is
    the longest image side in pixels (sides vary 85-100% of it); ``workers`` processes render
    (0: one per core). Deterministic in ``random_seed``; images already there are kept.
    """
    if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
        raise DermsynthError(f"scale must be a positive number, got {scale!r}")
    if int(image_size) != image_size or image_size < 64:
        raise DermsynthError(f"image size must be at least 64 pixels, got {image_size!r}")
    if workers < 0:
        raise DermsynthError(f"workers must be 0 (one per core) or more, got {workers!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DermsynthError(f"{out} exists and is not a folder")
    (out / IMAGES_DIRNAME).mkdir(parents=True, exist_ok=True)
    rows, tasks = _plan(out, float(scale), int(random_seed), int(image_size))

    from tqdm.auto import tqdm

    n = min(_n_workers(workers), len(tasks))
    with tqdm(total=len(tasks), desc="simulate", unit="img", disable=not progress) as bar:
        if n <= 1:
            for task in tasks:
                _run_task(task)
                bar.update()
        else:
            chunk = max(1, min(16, len(tasks) // (n * 8)))
            with ProcessPoolExecutor(max_workers=n) as pool:
                for _ in pool.map(_run_task, tasks, chunksize=chunk):
                    bar.update()
    csv_path = out / CSV_NAME
    atomic_write_csv(csv_path, pd.DataFrame(rows, columns=list(CSV_COLUMNS)))
    return csv_path


__all__ = [
    "CSV_NAME",
    "ITA_RANGES",
    "PARTITIONS",
    "SIMULATED_NOTE",
    "SKIN_LAB",
    "TABLE1",
    "UNKNOWN_FST_COUNTS",
    "RenderedImage",
    "cell_counts",
    "lab_to_rgb8",
    "render_image",
    "render_sample",
    "simulate_dataset",
    "skin_lab",
]
