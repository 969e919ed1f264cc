"""``colour-texture``: a fixed feature extractor with no learned weights.

It describes an image by its CIE-Lab colour layout (mean and spread on a 4 x 4 grid), Lab colour
histograms, gradient-orientation histograms and edge energy at three scales, and the band
energies of a Laplacian pyramid (spots, nodules, plaques). It needs no download, runs at
thousands of images a minute on a CPU, and carries enough signal for the recipe head to tell
lesion morphologies apart: the offline backbone of the demo and of quick studies. Absolute
colour is part of its description, so, like a network pretrained on light skin, a head trained
on one skin-type group transfers imperfectly to others.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_D65 = (0.95047, 1.0, 1.08883)
_RGB_TO_XYZ = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] (B x 3 x H x W) to CIE-Lab (D65), as skimage computes it."""
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = torch.einsum("ij,bjhw->bihw", _RGB_TO_XYZ.to(rgb), linear)
    xyz = xyz / torch.tensor(_D65, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12) ** (1 / 3), 7.787 * xyz + 16 / 116)
    lightness = 116 * f[:, 1] - 16
    a = 500 * (f[:, 0] - f[:, 1])
    b = 200 * (f[:, 1] - f[:, 2])
    return torch.stack([lightness, a, b], dim=1)


def _soft_histogram(values: torch.Tensor, low: float, high: float, bins: int) -> torch.Tensor:
    centres = torch.linspace(low, high, bins, device=values.device, dtype=values.dtype)
    width = (high - low) / (bins - 1)
    flat = values.flatten(1).unsqueeze(-1)
    weights = (1 - (flat - centres).abs() / width).clamp_min(0)
    return weights.mean(dim=1)


FEATURE_DIM = 249
VERSION = 1  # bump when the features change: cached features are keyed by it


class ColourTexture(nn.Module):
    """Colour layout, colour histograms, gradient-orientation and blob statistics of an image."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = (x * self.std + self.mean).clamp(0, 1)
        lab = rgb_to_lab(rgb)
        scaled = lab / torch.tensor([100.0, 50.0, 50.0], device=x.device, dtype=x.dtype).view(
            1, 3, 1, 1
        )
        small = F.adaptive_avg_pool2d(lab, 32)  # histograms need colour, not every pixel
        # Each block is scaled to a spread of about one on skin photographs, so the recipe head
        # (a plain Linear layer first) sees inputs of comparable size.
        layout = F.adaptive_avg_pool2d(scaled, 4)
        parts = [
            (layout - layout.mean(dim=(2, 3), keepdim=True)).flatten(1) * 15,
            layout.mean(dim=(2, 3)) * 5,
            (F.adaptive_avg_pool2d(scaled**2, 4) - layout**2).clamp_min(0).sqrt().flatten(1) * 30,
            _soft_histogram(small[:, 0], 0, 100, 16) * 4,
            _soft_histogram(small[:, 1], -10, 50, 16) * 4,
            _soft_histogram(small[:, 2], -10, 50, 16) * 4,
        ]
        lightness = scaled[:, :1]
        for scale in (1, 2, 4):
            level = F.avg_pool2d(lightness, scale) if scale > 1 else lightness
            gx = level[..., :, 1:] - level[..., :, :-1]
            gy = level[..., 1:, :] - level[..., :-1, :]
            gx, gy = gx[..., :-1, :], gy[..., :, :-1]
            magnitude = (gx**2 + gy**2).sqrt()
            angle = torch.atan2(gy, gx) % torch.pi
            bins = (angle / torch.pi * 8).long().clamp(max=7)
            hist = torch.zeros(x.shape[0], 8, device=x.device, dtype=x.dtype)
            hist.scatter_add_(1, bins.flatten(1), magnitude.flatten(1))
            hist = hist / (magnitude.flatten(1).sum(1, keepdim=True) + 1e-6)
            parts += [
                hist * 5,
                magnitude.flatten(1).mean(1, keepdim=True) * 100,
                F.adaptive_avg_pool2d(magnitude, 4).flatten(1) * 100,
            ]
        # Blob and spot responses: differences between levels of a Laplacian pyramid.
        level = scaled
        for _ in range(3):
            coarse = F.avg_pool2d(level, 2)
            band = level - F.interpolate(coarse, scale_factor=2, mode="nearest")
            parts += [
                band.clamp_min(0).flatten(2).mean(2) * 400,
                (-band).clamp_min(0).flatten(2).mean(2) * 400,
                band.flatten(2).std(2) * 400,
            ]
            level = coarse
        return torch.cat(parts, dim=1)
