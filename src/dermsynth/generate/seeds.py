"""Seed images: which rows are seeds, and their square crops and inpainting masks.

Crop: a square centred on the pathology (the seed's ``crop_box`` ``x0,y0,x1,y1`` in pixels of
the original image if given, else the image centre), resized to the backend's resolution.
Mask (white = redraw, black = keep, the diffusers convention): the seed's own ``mask_path`` if
given (same size as the seed image, cropped like it), else generated: the lesion region (the
box, or a central ellipse) is kept and the border around it is redrawn, as the paper did in the
DALL-E editor to remove background artefacts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from dermsynth.config import MaskConfig
from dermsynth.data.images import BadImageError, load_rgb
from dermsynth.data.manifest import load_manifest
from dermsynth.errors import DermsynthError
from dermsynth.io import atomic_write_bytes


@dataclass
class PreparedSeed:
    """A seed ready for a backend: its crop, mask and prompt."""

    image_id: str
    label: str
    fst: int
    prompt: str
    crop: Image.Image
    mask: Image.Image
    crop_path: Path
    mask_path: Path


def load_seeds(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Seed rows of a manifest: ``split == "seed"`` in a plan, else every row."""
    manifest = load_manifest(path)
    if "split" in manifest.columns:
        seeds = manifest[manifest["split"] == "seed"]
        if seeds.empty:
            raise DermsynthError(
                f"{path}: a plan with no seed rows (split == 'seed'); draw seeds with "
                "`dermsynth data plan --augment CONDITION`"
            )
    else:
        seeds = manifest
    return seeds.reset_index(drop=True)


def parse_box(text: str, size: tuple[int, int], *, where: str) -> tuple[int, int, int, int] | None:
    """``"x0,y0,x1,y1"`` -> a box inside an image of ``size``; empty -> None."""
    text = (text or "").strip()
    if not text:
        return None
    parts = text.replace(";", ",").split(",")
    try:
        x0, y0, x1, y1 = (round(float(p)) for p in parts)
    except ValueError:
        raise DermsynthError(
            f"{where}: crop_box must be 'x0,y0,x1,y1' in pixels, got {text!r}"
        ) from None
    width, height = size
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise DermsynthError(
            f"{where}: crop_box {text!r} is not inside the {width}x{height} image "
            "(need 0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height)"
        )
    return x0, y0, x1, y1


def square_around(
    box: tuple[int, int, int, int] | None, size: tuple[int, int], crop_scale: float
) -> tuple[int, int, int, int]:
    """The square crop: centred on the box (or the image), shifted to stay inside."""
    width, height = size
    shorter = min(width, height)
    if box is None:
        side = shorter
        cx, cy = width / 2, height / 2
    else:
        x0, y0, x1, y1 = box
        side = min(shorter, max(1, round(max(x1 - x0, y1 - y0) * crop_scale)))
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return left, top, left + side, top + side


def generated_mask(
    resolution: int,
    params: MaskConfig,
    lesion: tuple[float, float, float, float] | None = None,
) -> Image.Image:
    """White border to redraw around a black kept region (the lesion box, or the centre)."""
    mask = Image.new("L", (resolution, resolution), 255)
    if lesion is None:
        margin = resolution * (1 - params.keep) / 2
        lesion = (margin, margin, resolution - margin, resolution - margin)
    draw = ImageDraw.Draw(mask)
    if params.shape == "ellipse":
        draw.ellipse(lesion, fill=0)
    else:
        draw.rectangle(lesion, fill=0)
    if params.feather > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(params.feather))
    return mask


def _png_bytes(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def prepare_seed(
    row: dict,
    resolution: int,
    params: MaskConfig,
    out_dir: str | os.PathLike[str],
) -> PreparedSeed:
    """Crop, resize and mask one seed; save both PNGs under ``out_dir`` for inspection.

    ``row`` is a row of the resolved prompt table joined with the seed's ``path``.
    """
    image_id = str(row["image_id"])
    where = f"seed {image_id!r}"
    if not str(row.get("path", "")).strip():
        raise BadImageError(f"{where}: the seed manifest gives no image path")
    image = load_rgb(row["path"])
    box = parse_box(str(row.get("crop_box", "") or ""), image.size, where=where)
    square = square_around(box, image.size, params.crop_scale)
    side = square[2] - square[0]
    crop = image.crop(square).resize((resolution, resolution), Image.Resampling.LANCZOS)

    mask_file = str(row.get("mask_path", "") or "").strip()
    if mask_file:
        try:
            with Image.open(mask_file) as handle:
                user_mask = handle.convert("L")
        except FileNotFoundError:
            raise BadImageError(f"{where}: mask file {mask_file} not found") from None
        except OSError as exc:
            raise BadImageError(
                f"{where}: mask {mask_file} is not a readable image ({exc})"
            ) from None
        if user_mask.size != image.size:
            raise DermsynthError(
                f"{where}: mask {mask_file} is {user_mask.size[0]}x{user_mask.size[1]} px but the "
                f"seed image is {image.size[0]}x{image.size[1]} px; a mask must match its image"
            )
        mask = user_mask.crop(square).resize((resolution, resolution), Image.Resampling.NEAREST)
    else:
        lesion = None
        if box is not None:
            scale = resolution / side
            lesion = (
                (box[0] - square[0]) * scale,
                (box[1] - square[1]) * scale,
                (box[2] - square[0]) * scale,
                (box[3] - square[1]) * scale,
            )
        mask = generated_mask(resolution, params, lesion)

    out = Path(out_dir)
    crop_path = out / f"{image_id}_crop.png"
    mask_path = out / f"{image_id}_mask.png"
    atomic_write_bytes(crop_path, _png_bytes(crop))
    atomic_write_bytes(mask_path, _png_bytes(mask))
    return PreparedSeed(
        image_id=image_id,
        label=str(row["label"]),
        fst=int(row["fst"]),
        prompt=str(row["prompt"]),
        crop=crop,
        mask=mask,
        crop_path=crop_path,
        mask_path=mask_path,
    )
