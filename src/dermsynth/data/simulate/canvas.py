"""The canvas an image is painted on (Lab planes, masks, light) and the drawing primitives."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dermsynth.data.simulate.tone import darkness

Slices = tuple[slice, slice]
Window = tuple[Slices, np.ndarray, np.ndarray]  # slices, local x (1, w), local y (h, 1)


class Canvas:
    """Lab planes of one image plus the per-image random state and geometry."""

    def __init__(self, w: int, h: int, rng: np.random.Generator, fst: int) -> None:
        self.w, self.h, self.rng, self.fst = w, h, rng, fst
        self.t = darkness(fst)
        self.S = float(min(w, h))
        self.L = np.zeros((h, w), np.float32)
        self.A = np.zeros((h, w), np.float32)
        self.B = np.zeros((h, w), np.float32)
        self.lesion = np.zeros((h, w), np.float32)
        self.hair = np.zeros((h, w), np.float32)
        angle = rng.uniform(0, 2 * math.pi)
        self.light = (math.cos(angle), math.sin(angle))  # direction towards the light, image plane

    # -- geometry -------------------------------------------------------------------------------
    def window(self, cx: float, cy: float, extent: float) -> Window | None:
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
        self, sl: Slices, alpha: np.ndarray, delta: Sequence[float], lesion: bool = True
    ) -> None:
        """Add ``alpha * delta`` (Lab) over a window."""
        self.L[sl] += alpha * np.float32(delta[0])
        self.A[sl] += alpha * np.float32(delta[1])
        self.B[sl] += alpha * np.float32(delta[2])
        if lesion:
            np.maximum(self.lesion[sl], alpha, out=self.lesion[sl])

    def paint(
        self, sl: Slices, alpha: np.ndarray, colour: Sequence[float], lesion: bool = True
    ) -> None:
        """Blend towards an absolute Lab colour with opacity ``alpha``."""
        for plane, value in zip((self.L, self.A, self.B), colour, strict=True):
            plane[sl] += alpha * (np.float32(value) - plane[sl])
        if lesion:
            np.maximum(self.lesion[sl], alpha, out=self.lesion[sl])

    def shade(self, sl: Slices, height: np.ndarray, strength: float) -> None:
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
            img = img.filter(soften(blur))
        return np.asarray(img, dtype=np.float32) * np.float32(1 / 255)


def soften(sigma: float) -> ImageFilter.Filter:
    """A Gaussian blur; a 3x3 kernel for small sigmas, several times faster than PIL's blur."""
    if sigma > 1.0:
        return ImageFilter.GaussianBlur(sigma)
    w1 = math.exp(-1.0 / (2.0 * sigma * sigma))
    row = (w1, 1.0, w1)
    weights = [a * b for a in row for b in row]
    return ImageFilter.Kernel((3, 3), weights, scale=sum(weights))


def blob(
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


def random_harmonics(
    rng: np.random.Generator, irregularity: float
) -> list[tuple[int, float, float]]:
    """Random low-order boundary wobbles (order, amplitude, phase) for :func:`blob`."""
    return [
        (k, irregularity * rng.uniform(0.3, 1.0) / k, rng.uniform(0, 2 * math.pi))
        for k in range(2, 7)
    ]


def edge_alpha(d: np.ndarray, softness: float) -> np.ndarray:
    """Opacity 1 inside, falling to 0 across the border over ``softness`` (in units of d)."""
    x = np.clip((1.0 - d) / np.float32(softness) + 0.5, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def dome(d: np.ndarray) -> np.ndarray:
    """Height of a dome over a normalised distance (1 at the centre, 0 at the border)."""
    return np.sqrt(np.clip(1.0 - d * d, 0.0, 1.0))


def walk(
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


def centre(cv: Canvas, spread: float = 0.12) -> tuple[float, float]:
    """A lesion centre near the middle of the frame (within ``spread`` of each side)."""
    return (
        cv.w / 2 + cv.rng.uniform(-spread, spread) * cv.w,
        cv.h / 2 + cv.rng.uniform(-spread, spread) * cv.h,
    )
