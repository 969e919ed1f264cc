"""The recipe's training augmentation as one resampling of each image.

The recipe runs RandomResizedCrop(256, 0.8-1.0) -> RandomRotation(15) -> ColorJitter() ->
RandomHorizontalFlip -> CenterCrop(224) as PIL operations: two resamplings of a 256 x 256
intermediate whose border the centre crop throws away (~1.4 ms an image, most of the training
input pipeline's cost). Here the parameters are drawn with torchvision's own ``get_params`` (so
the distribution is the recipe's) and crop box, resize, rotation, flip and centre crop are
composed into one affine map, applied once to the cached uint8 image by OpenCV's bilinear
``warpAffine`` straight to the 224 x 224 output (~0.2 ms). Pixels the rotation brings in from
outside the crop box are 0, as the recipe's rotation fills them. ``ColorJitter()`` with no
arguments changes nothing and is left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import transforms as T

from dermsynth.train.datasets import TransformSpec

# RandomResizedCrop's aspect-ratio range (torchvision's default, which the recipe keeps)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
FLIP_P = 0.5  # RandomHorizontalFlip's default


class AugmentParams(NamedTuple):
    """One image's draw: the crop box (pixels of the source), rotation (degrees), flip."""

    top: int
    left: int
    height: int
    width: int
    angle: float
    flip: bool


def draw_params(image: torch.Tensor, spec: TransformSpec) -> AugmentParams:
    """One (C, H, W) image's augmentation, drawn from torch's RNG with the recipe's transforms'
    own ``get_params`` and ranges."""
    top, left, height, width = T.RandomResizedCrop.get_params(image, spec.crop_scale, CROP_RATIO)
    angle = T.RandomRotation.get_params([-spec.rotation, spec.rotation])
    flip = bool(torch.rand(1).item() < FLIP_P)
    return AugmentParams(top, left, height, width, angle, flip)


def crop_box_affine(params: AugmentParams, spec: TransformSpec) -> np.ndarray:
    """(2, 3) map from an output pixel (x, y, 1) to the crop box's own pixels (indices).

    The output's (x, y) is (x + o, y + o) of the resize x resize frame (CenterCrop's offset o);
    before the flip x' = resize - 1 - x; before the rotation (counter-clockwise by the angle
    about the centre, PIL's convention) the crop frame's point; and the resize x resize frame
    covers the crop box (pixel centres: (c + 0.5) * extent / resize - 0.5).
    """
    resize = spec.resize
    offset = int(round((resize - spec.image_size) / 2.0))
    centre = (resize - 1) / 2.0
    theta = math.radians(params.angle)
    cos, sin = math.cos(theta), math.sin(theta)
    sign, shift = (-1.0, resize - 1.0) if params.flip else (1.0, 0.0)
    dx, dy = sign * offset + shift - centre, offset - centre
    crop = np.array(
        [
            [cos * sign, -sin, cos * dx - sin * dy + centre],
            [sin * sign, cos, sin * dx + cos * dy + centre],
        ]
    )
    scale = np.array([[params.width], [params.height]]) / resize
    crop *= scale
    crop[:, 2] += 0.5 * scale[:, 0] - 0.5
    return crop


def apply_params(image: np.ndarray, params: AugmentParams, spec: TransformSpec) -> np.ndarray:
    """The recipe's crop, resize, rotation, flip and centre crop of an (H, W, 3) uint8 image
    in one bilinear resampling: an (image_size, image_size, 3) uint8 array."""
    box = image[params.top : params.top + params.height, params.left : params.left + params.width]
    # one replicated pixel around the box: the recipe samples up to half a pixel beyond it
    box = cv2.copyMakeBorder(box, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
    matrix = crop_box_affine(params, spec)
    matrix[:, 2] += 1.0
    size = (spec.image_size, spec.image_size)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    out = cv2.warpAffine(box, matrix, size, flags=flags, borderMode=cv2.BORDER_CONSTANT)
    # the recipe's rotation fills with 0 what falls outside the crop frame (nearest rounding)
    outside = _outside(params, spec)
    if outside is not None:
        out[outside] = 0
    return out


def _outside(params: AugmentParams, spec: TransformSpec) -> np.ndarray | None:
    """Output pixels whose point in the resize x resize crop frame rounds outside it; None
    when the angle is too small for any (the centre crop's corners stay inside)."""
    resize = spec.resize
    offset = int(round((resize - spec.image_size) / 2.0))
    centre = (resize - 1) / 2.0
    theta = math.radians(params.angle)
    cos, sin = math.cos(theta), math.sin(theta)
    half = resize / 2.0  # |c| < half <=> -0.5 <= c + centre < resize - 0.5
    axis = np.arange(spec.image_size, dtype=np.float32) + offset - centre
    corner = float(np.abs(axis).max())
    if corner * (abs(cos) + abs(sin)) < half:
        return None
    x, y = axis[None, :], axis[:, None]
    if params.flip:
        x = -x
    return (np.abs(cos * x - sin * y) >= half) | (np.abs(sin * x + cos * y) >= half)


class AugmentedImages(Dataset[tuple[torch.Tensor, int]]):
    """Cached uint8 images with the recipe's augmentation: uint8 (C, H, W) tensors, scaled and
    normalized once per batch by the model (:func:`~dermsynth.train.datasets.normalize_batch`)."""

    def __init__(self, entries: Sequence[Path], targets: Sequence[int], spec: TransformSpec):
        self.entries = list(entries)
        self.targets = list(targets)
        self.spec = spec

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = np.load(self.entries[index], allow_pickle=False)
        params = draw_params(torch.from_numpy(image).permute(2, 0, 1), self.spec)
        out = apply_params(image, params, self.spec)
        return torch.from_numpy(out).permute(2, 0, 1), self.targets[index]
