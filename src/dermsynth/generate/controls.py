"""Images for the control arms, made without a generator.

* :func:`classical_variants`: the classical augmentation a reviewer would try first: random
  crops, flips, rotations and a small jitter in CIE-Lab, all of which keep the skin tone (the
  Lab jitter moves L*, a* and b* by a couple of units at most, well inside one Fitzpatrick type).
* :func:`tone_shift`: the skin-tone counterfactual of fairness work: an image of the training
  group moved in CIE-Lab so that its healthy skin has the target group's lightness and colour
  (and so its individual typology angle, ITA); the lesion moves with it.

Both are deterministic for a random seed, and their outputs are ordinary images: the study
writes them as PNGs, so the frozen-feature cache treats them like any other image.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# Classical augmentation: how far each transform goes.
CROP_SCALE = (0.6, 1.0)
ROTATION_DEGREES = 20.0
LAB_JITTER = {"L": 2.0, "a": 1.5, "b": 1.5}  # standard deviations, in Lab units


def _rng(random_seed: int) -> np.random.Generator:
    return np.random.default_rng(random_seed)


def _jitter_lab(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from skimage.color import lab2rgb, rgb2lab

    lab = rgb2lab(rgb)
    for channel, sd in enumerate(LAB_JITTER.values()):
        lab[..., channel] += rng.normal(0.0, sd)
    out = lab2rgb(lab)
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


def classical_variant(image: Image.Image, random_seed: int) -> Image.Image:
    """One classical augmentation of ``image`` (same size): rotate, crop, flip, Lab jitter."""
    from torchvision.transforms import v2

    rng = _rng(random_seed)
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    size = image.size[::-1]  # (height, width)
    geometric = v2.Compose(
        [
            # Rotate about the centre, then crop inside the rotated frame: no black corners.
            v2.RandomRotation(ROTATION_DEGREES),
            v2.CenterCrop([round(s * 0.65) for s in size]),
            v2.RandomResizedCrop(size, scale=CROP_SCALE, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
        ]
    )
    tensor = v2.functional.pil_to_tensor(image.convert("RGB"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
        moved = geometric(tensor)
    rgb = moved.permute(1, 2, 0).numpy()
    return Image.fromarray(_jitter_lab(rgb, rng))


def classical_variants(image: Image.Image, n: int, random_seed: int) -> list[Image.Image]:
    """``n`` classical augmentations of ``image``, variant ``i`` from seed ``(random_seed, i)``."""
    seeds = np.random.SeedSequence(random_seed).spawn(n)
    return [classical_variant(image, int(s.generate_state(1)[0])) for s in seeds]


def healthy_skin_lab(rgb: np.ndarray) -> tuple[float, float, float]:
    """Median CIE-Lab (L*, a*, b*) of an image's healthy-skin pixels (the tone scorer's)."""
    from skimage.color import rgb2lab

    from dermsynth.select.tone import skin_pixels

    pixels, _ = skin_pixels(rgb)
    lab = rgb2lab(np.asarray(rgb))[pixels]
    if not len(lab):
        lab = rgb2lab(np.asarray(rgb)).reshape(-1, 3)
    med = np.median(lab, axis=0)
    return float(med[0]), float(med[1]), float(med[2])


def tone_shift(rgb: np.ndarray, target: tuple[float, float, float]) -> np.ndarray:
    """``rgb`` moved in CIE-Lab so that its healthy skin's median is ``target`` (L*, a*, b*)."""
    from skimage.color import lab2rgb, rgb2lab

    source = np.array(healthy_skin_lab(rgb))
    lab = rgb2lab(np.asarray(rgb)) + (np.array(target) - source)
    lab[..., 0] = np.clip(lab[..., 0], 0.0, 100.0)
    out = lab2rgb(lab)
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)
