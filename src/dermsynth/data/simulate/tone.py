"""Skin colour per Fitzpatrick type (CIE-Lab, ITA), the Lab-to-sRGB conversion and the
tone-dependent colours of lesions."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from dermsynth.data.fst import FST_TYPES
from dermsynth.errors import DermsynthError

# ITA (degrees) drawn per type. I-IV lie inside the Kinyanjui bands (> 55 I, > 41 II, > 28 III,
# > 19 IV, > 10 V, else VI) with a margin, so JPEG and lesion-free-region estimates stay in the
# band. V and VI follow measured skin instead: V straddles the dark side of the V/VI boundary,
# VI lies well below -30; both read as VI under the Kinyanjui thresholds.
ITA_RANGES: dict[int, tuple[float, float]] = {
    1: (59.0, 68.0),
    2: (44.5, 51.5),
    3: (31.0, 38.0),
    4: (21.5, 26.5),
    5: (-26.0, 4.0),
    6: (-58.0, -38.0),
}
# b* (yellowness) drawn per type; L* then follows from the ITA.
_B_STAR: dict[int, tuple[float, float]] = {
    1: (11.0, 15.0),
    2: (13.0, 17.0),
    3: (15.0, 19.0),
    4: (16.0, 20.0),
    5: (15.0, 19.0),
    6: (12.0, 16.0),
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


def lab_for(fst: int, ita: float, b_star: float, a_star: float) -> tuple[float, float, float]:
    """The Lab colour with yellowness ``b_star``, redness ``a_star`` and angle ``ita``."""
    return (50.0 + b_star * math.tan(math.radians(ita)), a_star, b_star)


# A representative CIE-Lab skin colour per type (the middle of the ranges drawn from).
SKIN_LAB: dict[int, tuple[float, float, float]] = {
    f: lab_for(f, _mid(ITA_RANGES[f]), _mid(_B_STAR[f]), _mid(_A_STAR[f])) for f in FST_TYPES
}


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


def darkness(fst: int) -> float:
    """0 for FST I to 1 for FST VI: how strongly melanin masks and shifts lesion colours."""
    return (fst - 1) / 5.0


def lerp3(a: Sequence[float], b: Sequence[float], k: float, s: float) -> tuple[float, float, float]:
    """A Lab delta ``s * ((1 - k) * a + k * b)``."""
    return (
        s * (a[0] * (1 - k) + b[0] * k),
        s * (a[1] * (1 - k) + b[1] * k),
        s * (a[2] * (1 - k) + b[2] * k),
    )


def erythema(t: float, s: float) -> tuple[float, float, float]:
    """Lab delta of erythema at strength ``s`` on skin of darkness ``t``."""
    # Haemoglobin red on light skin; melanin masks it on dark skin: less red, violaceous-brown.
    return lerp3((-6.0, 21.0, 4.0), (-8.0, 5.0, -6.0), t**0.8, s)


def violaceous(t: float, s: float) -> tuple[float, float, float]:
    """Lab delta of violaceous (purple-grey) inflammation."""
    return lerp3((-13.0, 15.0, -9.0), (-11.0, 5.0, -7.0), t**0.8, s)


def hyperpigment(t: float, s: float) -> tuple[float, float, float]:
    """Lab delta of hyperpigmentation."""
    # Brown on light skin; deep brown-black (lower L*, less chroma) on dark skin.
    return lerp3((-15.0, 3.0, 8.0), (-15.0, 0.5, -2.0), t, s)


def scale_colour(t: float) -> tuple[float, float, float]:
    """Absolute Lab colour of scale."""
    # Silvery white scale on light skin, ashy grey on dark skin.
    return lerp3((86.0, 1.5, 6.0), (64.0, 1.0, 3.0), t, 1.0)


PUS = (82.0, 4.0, 30.0)
FIBRIN = (68.0, 9.0, 32.0)
GRANULATION = (46.0, 34.0, 20.0)
BLOOD_CRUST = (26.0, 16.0, 12.0)
SERUM_CRUST = (56.0, 14.0, 34.0)
KERATIN = (80.0, 3.0, 20.0)


def draw_skin_colour(
    rng: np.random.Generator, fst: int
) -> tuple[float, tuple[float, float, float]]:
    """Draw a type's skin colour: its ITA (degrees) and Lab colour."""
    ita = float(rng.uniform(*ITA_RANGES[fst]))
    b_star = float(rng.uniform(*_B_STAR[fst]))
    a_star = float(rng.uniform(*_A_STAR[fst]))
    return ita, lab_for(fst, ita, b_star, a_star)
