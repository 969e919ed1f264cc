"""Healthy skin and photography: texture, hair, lighting, the body's edge and the background."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy import ndimage

from dermsynth.data.simulate.canvas import Canvas, walk
from dermsynth.data.simulate.tone import hyperpigment


def paint_skin(cv: Canvas, base: tuple[float, float, float]) -> None:
    """Healthy skin of colour ``base``: mottling, relief, pores, creases, freckles."""
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
        cv.tint((slice(None), slice(None)), spots, hyperpigment(t, 0.6), lesion=False)


def add_hair(cv: Canvas) -> None:
    """Body hair: thin curved strokes, mostly in one direction."""
    rng = cv.rng
    n = int(rng.integers(8, 60))
    heading = rng.uniform(0, 2 * math.pi)
    paths = []
    for _ in range(n):
        x, y = rng.uniform(0, cv.w), rng.uniform(0, cv.h)
        length = cv.S * rng.uniform(0.05, 0.25)
        paths.append(walk(rng, x, y, heading + rng.normal(0, 0.5), 8, length / 8, 0.08))
    mask = cv.strokes(paths, max(1.0, cv.S / 500), blur=0.5) * np.float32(rng.uniform(0.5, 0.9))
    dark = rng.random() < 0.8 or cv.t > 0.4
    colour = (18.0, 2.0, 4.0) if dark else (58.0, 6.0, 22.0)
    cv.paint((slice(None), slice(None)), mask, colour, lesion=False)
    np.maximum(cv.hair, mask, out=cv.hair)


def add_lighting(cv: Canvas) -> None:
    """Directional light, vignetting, limb curvature, sheen and white balance."""
    rng, t = cv.rng, cv.t
    yy = (np.arange(cv.h, dtype=np.float32)[:, None] - cv.h / 2) / np.float32(cv.S / 2)
    xx = (np.arange(cv.w, dtype=np.float32)[None, :] - cv.w / 2) / np.float32(cv.S / 2)
    lx, ly = cv.light
    light: np.ndarray = np.float32(rng.uniform(1.5, 5.0)) * (
        xx * np.float32(lx) + yy * np.float32(ly)
    )
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


def body_edge(cv: Canvas) -> np.ndarray | None:
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


def paint_background(cv: Canvas, soft: np.ndarray) -> None:
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
