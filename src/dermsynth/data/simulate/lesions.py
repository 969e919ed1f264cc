"""The seven morphologies, one per condition of the paper's Table 1 (see the package docstring)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from dermsynth.data.simulate.canvas import (
    Canvas,
    blob,
    centre,
    dome,
    edge_alpha,
    random_harmonics,
    walk,
)
from dermsynth.data.simulate.tone import (
    BLOOD_CRUST,
    FIBRIN,
    GRANULATION,
    KERATIN,
    PUS,
    SERUM_CRUST,
    erythema,
    hyperpigment,
    lerp3,
    scale_colour,
    violaceous,
)


def _halo(cv: Canvas, cx: float, cy: float, r: float, s: float) -> None:
    """Diffuse inflammation around a lesion; a hyperpigmented halo on dark skin."""
    win = cv.window(cx, cy, 2.2 * r)
    if win is None:
        return
    sl, xs, ys = win
    d = blob(xs, ys, 1.6 * r, 1.6 * r, 0.0)
    alpha = np.exp(-2.2 * d * d) * np.float32(s)
    cv.tint(sl, alpha * np.float32(1 - 0.5 * cv.t), erythema(cv.t, 0.7), lesion=False)
    cv.tint(sl, alpha * np.float32(cv.t), hyperpigment(cv.t, 0.5), lesion=False)


def _basal_cell_carcinoma(cv: Canvas) -> None:
    rng, t = cv.rng, cv.t
    cx, cy = centre(cv)
    r = cv.S * rng.uniform(0.09, 0.2)
    pigmented = rng.random() < 0.08 + 0.65 * t  # pigmented BCC is common on dark skin
    ulcerated = rng.random() < 0.45
    _halo(cv, cx, cy, r, 0.5)
    win = cv.window(cx, cy, 1.3 * r)
    if win is None:
        return
    sl, xs, ys = win
    d = blob(
        xs, ys, r * rng.uniform(0.85, 1.15), r, rng.uniform(0, math.pi), random_harmonics(rng, 0.12)
    )
    body = edge_alpha(d, 0.18)
    skin = (float(cv.L[sl].mean()), float(cv.A[sl].mean()), float(cv.B[sl].mean()))
    if pigmented:
        colour = (max(18.0, skin[0] - 22.0), 6.0, 4.0 + 4.0 * (1 - t))
    else:
        # Pearly, translucent pink on light skin; melanin turns it greyer on dark skin.
        colour = (skin[0] + 7.0 - 4.0 * t, skin[1] + 6.0 * (1 - 0.6 * t), skin[2] - 5.0)
    cv.paint(sl, body * np.float32(0.8), colour)
    # Rolled border: a raised, paler, shinier rim.
    rim = np.exp(-(((d - 0.82) / 0.12) ** 2)).astype(np.float32)
    cv.tint(sl, rim * body, (6.0 - 2.0 * t, -3.0, -4.0))
    height: np.ndarray = (dome(d) * 0.6 + rim * 0.6) * np.float32(r * 0.25)
    if ulcerated:
        core = edge_alpha(d / 0.38, 0.4)
        height = height - core * np.float32(r * 0.2)
        cv.paint(sl, core * np.float32(0.85), BLOOD_CRUST if rng.random() < 0.6 else GRANULATION)
    cv.shade(sl, height, 1.6)
    # Telangiectasia: fine branching vessels over the surface, faint on dark skin.
    paths = [
        walk(
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


def _papule(cv: Canvas, cx: float, cy: float, r: float, pus: bool, hyper: float) -> None:
    t = cv.t
    win = cv.window(cx, cy, 2.6 * r)
    if win is None:
        return
    sl, xs, ys = win
    d = np.sqrt(xs * xs + ys * ys) / np.float32(r)
    halo = np.exp(-0.55 * d * d).astype(np.float32)
    cv.tint(sl, halo, erythema(t, 0.9 * (1 - hyper)))
    cv.tint(sl, halo, hyperpigment(t, 0.7 * hyper))
    cv.shade(sl, dome(d * 0.9) * np.float32(r * 0.6), 3.0)
    if pus:
        core = edge_alpha(d / 0.5, 0.5)
        cv.paint(sl, core * np.float32(0.8), lerp3(PUS, (74.0, 6.0, 28.0), t, 1.0))
        cv.shade(sl, dome(d / 0.5) * np.float32(r * 0.3), 3.0)


def _folliculitis(cv: Canvas) -> None:
    rng, t = cv.rng, cv.t
    cx, cy = centre(cv, 0.08)
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
        walk(rng, x, y, heading + rng.normal(0, 0.4), 4, cv.S * rng.uniform(0.008, 0.02), 0.1)
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


def _nematode_infection(cv: Canvas) -> None:
    rng, t = cv.rng, cv.t
    paths = []
    for _ in range(1 if rng.random() < 0.7 else 2):
        x, y = centre(cv, 0.2)
        n = int(rng.integers(40, 90))
        step = cv.S * rng.uniform(0.01, 0.016)
        paths.append(
            walk(
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
    cv.tint(full, halo * np.float32(0.45), erythema(t, 0.6), lesion=False)
    cv.tint(full, track, erythema(t, 1.15))
    cv.tint(full, track * np.float32(t), hyperpigment(t, 0.35))
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
            cv.paint(sl, edge_alpha(d, 0.5) * np.float32(0.5), (cv.L[sl].mean() + 8, 8.0, 14.0))
            cv.shade(sl, dome(d) * np.float32(width * 0.3), 1.5)


def _neutrophilic_dermatoses(cv: Canvas) -> None:
    rng, t = cv.rng, cv.t
    cx, cy = centre(cv)
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
            d = blob(
                xs,
                ys,
                r * rng.uniform(0.8, 1.2),
                r,
                rng.uniform(0, 3.1),
                random_harmonics(rng, 0.15),
            )
            body = edge_alpha(d, 0.55)
            cv.tint(sl, body, erythema(t, rng.uniform(1.0, 1.35)))
            cv.tint(sl, body * np.float32(0.5 * t), violaceous(t, 0.8))
            cv.shade(sl, dome(d * 0.95) * np.float32(r * 0.35), 1.4)
            cv.highlight(x, y, r * 0.8, 0.55)
            if rng.random() < 0.5:
                for _ in range(int(rng.integers(3, 12))):
                    vx, vy = x + rng.normal(0, r * 0.4), y + rng.normal(0, r * 0.4)
                    w2 = cv.window(vx, vy, r * 0.12)
                    if w2 is None:
                        continue
                    s2, x2, y2 = w2
                    dd = np.sqrt(x2 * x2 + y2 * y2) / np.float32(r * 0.07)
                    cv.tint(s2, edge_alpha(dd, 0.6) * np.float32(0.7), (7.0, -5.0, 4.0))
    else:
        # Pyoderma gangrenosum: ulcer with an undermined violaceous border.
        r = cv.S * rng.uniform(0.1, 0.22)
        _halo(cv, cx, cy, r, 0.8)
        win = cv.window(cx, cy, 1.5 * r)
        if win is None:
            return
        sl, xs, ys = win
        d = blob(
            xs, ys, r * rng.uniform(0.8, 1.25), r, rng.uniform(0, 3.1), random_harmonics(rng, 0.25)
        )
        border = np.exp(-(((d - 1.0) / 0.16) ** 2)).astype(np.float32)
        cv.tint(sl, border, violaceous(t, 1.2))
        base = edge_alpha(d / 0.9, 0.15)
        mix = np.clip(cv.noise(10, base.shape) * np.float32(0.5) + np.float32(0.5), 0, 1)
        cv.paint(sl, base * mix * np.float32(0.9), GRANULATION)
        cv.paint(sl, base * (1 - mix) * np.float32(0.85), FIBRIN)
        cv.shade(sl, (border - base) * np.float32(r * 0.2), 1.3)


def _prurigo_nodularis(cv: Canvas) -> None:
    rng, t = cv.rng, cv.t
    cx, cy = centre(cv, 0.06)
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
        d = blob(
            xs, ys, r, r * rng.uniform(0.8, 1.1), rng.uniform(0, 3.1), random_harmonics(rng, 0.1)
        )
        body = edge_alpha(d, 0.35)
        if t > 0.5 and rng.random() < 0.4:
            # A pale rim around the nodule, seen on dark skin.
            ring = np.exp(-(((d - 1.25) / 0.2) ** 2)).astype(np.float32)
            cv.tint(sl, ring * np.float32(0.6), (6.0, -1.0, -1.0))
        cv.tint(sl, body, hyperpigment(t, rng.uniform(0.8, 1.25)))
        cv.tint(sl, body, erythema(t, 0.35 * (1 - t)))
        cv.shade(sl, dome(d) * np.float32(r * 0.6), 1.6)
        cv.highlight(x, y, r, 0.5)
        if rng.random() < 0.6:
            # Excoriated top: a small crust.
            dc = np.sqrt((xs - np.float32(rng.normal(0, r * 0.2))) ** 2 + ys**2) / np.float32(
                r * 0.35
            )
            cv.paint(
                sl,
                edge_alpha(dc, 0.6) * np.float32(0.85),
                BLOOD_CRUST if rng.random() < 0.7 else SERUM_CRUST,
            )
        if rng.random() < 0.3:
            scratches.append(walk(rng, x, y, rng.uniform(0, 6.3), 5, r * 0.5, 0.05))
    if scratches:
        mask = cv.strokes(scratches, max(1.0, cv.S / 350), blur=0.5)
        cv.paint((slice(None), slice(None)), mask * np.float32(0.75), (32.0, 18.0, 12.0))


def _psoriasis(cv: Canvas) -> None:
    rng, t = cv.rng, cv.t
    cx, cy = centre(cv)
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
        d = blob(
            xs, ys, r * rng.uniform(0.7, 1.3), r, rng.uniform(0, 3.1), random_harmonics(rng, 0.3)
        )
        np.maximum(plaques[sl], edge_alpha(d, 0.07), out=plaques[sl])  # well demarcated
        np.maximum(inner[sl], edge_alpha(d / 0.88, 0.35), out=inner[sl])
    # Silvery scale: thick flakes, thinner towards the red rim, split by fine cracks.
    flakes = cv.noise(cv.S / 9) * np.float32(0.7) + cv.noise(cv.S / 3.5) * np.float32(0.45)
    cracks = np.clip((np.abs(cv.noise(cv.S / 11)) - 0.06) / 0.2, 0, 1)
    coverage = np.float32(rng.uniform(-0.25, 0.2))
    scale_alpha = (
        plaques * inner * np.clip(0.6 + flakes * np.float32(0.6) + coverage, 0, 1) * cracks
    )
    scale_alpha *= np.float32(rng.uniform(0.75, 0.95))
    cv.tint(full, plaques, erythema(t, 1.0))
    cv.tint(full, plaques * np.float32(0.6 * t), violaceous(t, 0.6))
    cv.paint(full, scale_alpha, scale_colour(t))
    cv.shade(
        full, (plaques * np.float32(0.6) + scale_alpha) * np.float32(max(1.0, cv.S * 0.005)), 1.3
    )


def _squamous_cell_carcinoma(cv: Canvas) -> None:
    rng, t = cv.rng, cv.t
    cx, cy = centre(cv)
    r = cv.S * rng.uniform(0.1, 0.22)
    _halo(cv, cx, cy, r, 0.7)
    win = cv.window(cx, cy, 1.4 * r)
    if win is None:
        return
    sl, xs, ys = win
    d = blob(xs, ys, r * rng.uniform(0.8, 1.2), r, rng.uniform(0, 3.1), random_harmonics(rng, 0.25))
    body = edge_alpha(d, 0.2)
    cv.tint(sl, body, erythema(t, 0.9))
    cv.tint(sl, body * np.float32(t), hyperpigment(t, 0.5))
    fine = cv.noise(max(8.0, r / 1.5), body.shape)
    rough = np.clip(
        cv.noise(max(6.0, r / 5), body.shape) * np.float32(0.3)
        + fine * np.float32(0.15)
        + np.float32(0.7),
        0,
        1,
    )
    keratin = body * rough * edge_alpha(d / 0.85, 0.4) * np.float32(rng.uniform(0.55, 0.9))
    cv.paint(sl, keratin, KERATIN)
    height = dome(d) * np.float32(r * 0.45) + keratin * fine * np.float32(max(1.0, r * 0.04))
    if rng.random() < 0.6:
        core = edge_alpha(d / rng.uniform(0.3, 0.5), 0.35)
        cv.paint(sl, core * np.float32(0.9), BLOOD_CRUST if rng.random() < 0.65 else GRANULATION)
        height = height - core * np.float32(r * 0.2)
    cv.shade(sl, height, 1.5)


MORPHOLOGIES: dict[str, Callable[[Canvas], None]] = {
    "basal cell carcinoma": _basal_cell_carcinoma,
    "folliculitis": _folliculitis,
    "nematode infection": _nematode_infection,
    "neutrophilic dermatoses": _neutrophilic_dermatoses,
    "prurigo nodularis": _prurigo_nodularis,
    "psoriasis": _psoriasis,
    "squamous cell carcinoma": _squamous_cell_carcinoma,
}
