"""The training augmentation's one warp: the recipe's geometry and parameter ranges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from dermsynth.config import ClassifierConfig
from dermsynth.train.augment import (
    CROP_RATIO,
    FLIP_P,
    AugmentedImages,
    AugmentParams,
    apply_params,
    draw_params,
)
from dermsynth.train.backbones import IMAGENET_MEAN, IMAGENET_STD, backbone_info
from dermsynth.train.datasets import TransformSpec, train_transform

SPEC = TransformSpec(224, 256, IMAGENET_MEAN, IMAGENET_STD, 15.0, (0.8, 1.0))


def smooth_image(height: int, width: int) -> np.ndarray:
    """Skin-like smooth gradients: interpolation differences stay small, geometry shows."""
    yy, xx = np.mgrid[0:height, 0:width]
    channels = [
        128 + 100 * np.sin(xx / 23.0 + yy / 41.0),
        128 + 100 * np.cos(yy / 17.0),
        xx * 255 // width,
    ]
    return np.stack(channels, -1).clip(1, 255).astype(np.uint8)  # no black of its own


def recipe(image: np.ndarray, p: AugmentParams) -> torch.Tensor:
    """The recipe step by step with the same draw: PIL crop-resize, rotation, flip, crop."""
    out = TF.resized_crop(
        Image.fromarray(image),
        p.top,
        p.left,
        p.height,
        p.width,
        [SPEC.resize, SPEC.resize],
        InterpolationMode.BILINEAR,
        antialias=True,
    )
    out = TF.rotate(out, p.angle, InterpolationMode.NEAREST, fill=0)  # RandomRotation's default
    if p.flip:
        out = TF.hflip(out)
    return TF.pil_to_tensor(TF.center_crop(out, [SPEC.image_size] * 2))


@pytest.mark.parametrize("shape", [(256, 341), (256, 256), (300, 256)])
def test_one_warp_is_the_recipes_geometry(shape: tuple[int, int]) -> None:
    image = smooth_image(*shape)
    torch.manual_seed(7)
    draws = [draw_params(torch.from_numpy(image).permute(2, 0, 1), SPEC) for _ in range(12)]
    # the widest angles are the ones that bring fill in: make sure one of them is tested
    draws.append(AugmentParams(0, 0, shape[0], shape[1], -15.0, True))
    for p in draws:
        ours = torch.from_numpy(apply_params(image, p, SPEC)).permute(2, 0, 1)
        reference = recipe(image, p)
        assert ours.shape == reference.shape == (3, 224, 224) and ours.dtype == torch.uint8
        diff = (ours.int() - reference.int()).abs()
        # one bilinear resampling instead of bilinear + nearest: under a level on average
        assert diff.float().mean() < 1.0 and int(diff.max()) <= 8
        # the rotation's fill lands on exactly the same pixels
        assert torch.equal(ours.sum(0) == 0, reference.sum(0) == 0)
    widest = draws[-1]
    assert (recipe(image, widest).sum(0) == 0).any()  # the test above saw fill


def test_draws_use_the_recipes_own_ranges() -> None:
    spec = TransformSpec.build(ClassifierConfig(), backbone_info("vgg16"))
    crop, rotation, _, flip, centre, *_ = train_transform(spec).transforms
    assert isinstance(crop, T.RandomResizedCrop) and crop.scale == spec.crop_scale == (0.8, 1.0)
    assert crop.ratio == CROP_RATIO and isinstance(flip, T.RandomHorizontalFlip)
    assert rotation.degrees == [-spec.rotation, spec.rotation] == [-15.0, 15.0]
    assert flip.p == FLIP_P and centre.size == (spec.image_size, spec.image_size) == (224, 224)
    image = torch.zeros((3, 288, 288), dtype=torch.uint8)
    torch.manual_seed(0)
    draws = [draw_params(image, spec) for _ in range(2000)]
    area = np.array([d.height * d.width for d in draws]) / (288 * 288)
    aspect = np.array([d.width / d.height for d in draws])
    angles = np.array([d.angle for d in draws])
    flips = np.array([d.flip for d in draws])
    assert 0.79 <= area.min() < 0.82 and 0.98 < area.max() <= 1.0
    # a crop of at least 80% of a square spans aspect 0.8 to 1.25 (inside the ratio's 3/4-4/3)
    assert 0.79 <= aspect.min() < 0.85 and 1.18 < aspect.max() <= 1.26
    assert angles.min() < -14.5 and angles.max() > 14.5 and np.abs(angles).max() <= 15
    assert 0.45 < flips.mean() < 0.55
    boxes = [(d.top + d.height, d.left + d.width) for d in draws]
    assert min(d.top for d in draws) >= 0 and min(d.left for d in draws) >= 0
    assert max(b[0] for b in boxes) <= 288 and max(b[1] for b in boxes) <= 288


def test_training_items_are_seeded_uint8_views_of_the_cache(tmp_path: Path) -> None:
    entries = []
    for k, shape in enumerate([(256, 341), (300, 256)]):
        entries.append(tmp_path / f"{k}.npy")
        np.save(entries[-1], smooth_image(*shape))
    dataset = AugmentedImages(entries, [0, 1], SPEC)

    def draw() -> list[torch.Tensor]:
        torch.manual_seed(3)
        return [dataset[i][0] for i in range(2)] + [dataset[0][0]]

    first, again = draw(), draw()
    assert all(x.shape == (3, 224, 224) and x.dtype == torch.uint8 for x in first)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))  # seeded
    assert not torch.equal(first[0], first[2])  # a new draw each time an item is read
    assert dataset[1][1] == 1 and len(dataset) == 2
