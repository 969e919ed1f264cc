"""Similarity of a candidate to its own seed: neither a copy nor a drift.

An embedder turns images into vectors; the similarity is their cosine. Two kinds:

* ``lab`` (default): the image at 16 x 16 pixels in CIE-Lab, centred on mid-gray
  (L* - 50, a*, b*) and flattened. Deterministic, cheap, meaningful without any weights: it
  sees the layout and the colours, so a copy scores ~1 and an unrelated picture far less.
* ``backbone:NAME`` (e.g. ``backbone:resnet50``): the pooled features of a torchvision (or
  timm) backbone from :mod:`dermsynth.train.backbones`, with ``weights`` ``imagenet`` (needs
  the file or a network), ``none`` (a fixed random network: only good for plumbing) or a
  state-dict file.

Flags and score, with thresholds ``copy`` and ``drift`` (defaults for ``lab``: 0.995 and 0.5):
``similarity >= copy`` is a ``copy`` (score 0: it adds nothing the seed does not have);
``similarity < drift`` is a ``drift`` (score ``max(0, similarity) / drift``: it no longer shows
the seed's case); in between the score is 1 and the flag empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from dermsynth.errors import DermsynthError

LAB_SIDE = 16
DEFAULT_THRESHOLDS: dict[str, tuple[float, float]] = {
    # (copy, drift) per embedder kind; backbone features are smoother than raw pixels.
    "lab": (0.995, 0.5),
    "backbone": (0.98, 0.3),
}


class Embedder(Protocol):
    """Anything mapping RGB uint8 arrays to one vector each (rows of a 2-D array)."""

    name: str

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray: ...


@dataclass
class LabEmbedder:
    """Images at ``side`` x ``side`` in CIE-Lab, centred on mid-gray, flattened."""

    side: int = LAB_SIDE
    name: str = "lab"

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        from PIL import Image
        from skimage.color import rgb2lab

        rows = []
        for rgb in images:
            small = Image.fromarray(np.asarray(rgb, dtype=np.uint8)).resize(
                (self.side, self.side), Image.Resampling.BOX
            )
            lab = rgb2lab(np.asarray(small)) - np.array([50.0, 0.0, 0.0])
            rows.append(lab.reshape(-1))
        return np.stack(rows) if rows else np.zeros((0, self.side * self.side * 3))


@dataclass
class BackboneEmbedder:
    """Pooled trunk features of a backbone of :mod:`dermsynth.train.backbones`."""

    backbone: str = "resnet50"
    weights: str = "imagenet"
    image_size: int | None = None
    device: str = "cpu"
    batch_size: int = 16
    name: str = "backbone"
    _trunk: Any = None
    _transform: Any = None

    def _load(self) -> None:
        import torch
        import torchvision.transforms as T

        from dermsynth.train.backbones import build_backbone

        built = build_backbone(self.backbone, self.weights, 2, frozen=True)
        info = built.info
        size = self.image_size or info.input_size
        resize = max(size, round(size * info.resize / info.input_size))
        self._transform = T.Compose(
            [
                T.Resize(resize),
                T.CenterCrop(size),
                T.ToTensor(),
                T.Normalize(info.mean, info.std),
            ]
        )
        trunk = built.trunk.eval().to(torch.device(self.device))
        self._trunk = trunk

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch
        from PIL import Image

        if self._trunk is None:
            self._load()
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = torch.stack(
                    [
                        self._transform(Image.fromarray(np.asarray(rgb, dtype=np.uint8)))
                        for rgb in images[start : start + self.batch_size]
                    ]
                ).to(self.device)
                feats = self._trunk(batch)
                out.append(feats.reshape(feats.shape[0], -1).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 1))


def make_embedder(
    spec: str, *, weights: str = "imagenet", device: str = "cpu", image_size: int | None = None
) -> Embedder:
    """``lab`` or ``backbone:NAME`` (weights ``imagenet``, ``none`` or a file)."""
    spec = spec.strip()
    if spec == "lab":
        return LabEmbedder()
    if spec.startswith("backbone:") and spec.split(":", 1)[1]:
        from dermsynth.train.backbones import backbone_info

        name = spec.split(":", 1)[1]
        backbone_info(name)  # unknown names are refused here, with suggestions
        return BackboneEmbedder(
            backbone=name, weights=weights, device=device, image_size=image_size
        )
    raise DermsynthError(
        f"unknown embedder {spec!r}; use lab or backbone:NAME (e.g. backbone:resnet50)"
    )


def default_thresholds(embedder: Embedder) -> tuple[float, float]:
    """(copy, drift) thresholds of an embedder's kind."""
    return DEFAULT_THRESHOLDS.get(embedder.name, DEFAULT_THRESHOLDS["backbone"])


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two equally shaped 2-D arrays (0 for a zero vector)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sims = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    return np.clip(sims, -1.0, 1.0)


def similarity_scores(sims: np.ndarray, copy: float, drift: float) -> tuple[np.ndarray, list[str]]:
    """Score and flag (``copy`` / ``drift`` / empty) of each similarity."""
    if not drift < copy:
        raise DermsynthError(f"similarity thresholds: drift ({drift}) must be below copy ({copy})")
    sims = np.asarray(sims, dtype=np.float64)
    scores = np.ones_like(sims)
    flags = [""] * len(sims)
    for i, s in enumerate(sims):
        if s >= copy:
            scores[i], flags[i] = 0.0, "copy"
        elif s < drift:
            scores[i], flags[i] = max(0.0, s) / drift if drift > 0 else 0.0, "drift"
    return scores, flags
