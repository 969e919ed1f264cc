"""Reading images safely, and a resized-image cache that training reuses.

Every image is validated on the way in: it must decode, gray / palette / CMYK / alpha images
are converted to RGB, and images smaller than a minimum side are refused. A corrupt file raises
:class:`BadImageError` naming the file; it is never used.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dermsynth.errors import DermsynthError
from dermsynth.io import atomic_write_bytes

DEFAULT_MIN_SIZE = 32


class BadImageError(DermsynthError):
    """An image file that cannot be used (missing, corrupt, not an image, too small)."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparent pixels are composited onto white."""
    image = ImageOps.exif_transpose(image) or image
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def decode_image(data: bytes, *, source: str = "<bytes>", min_size: int = DEFAULT_MIN_SIZE) -> Image.Image:
    """Decode bytes fully into an RGB image, or raise :class:`BadImageError` saying why."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadImageError(f"{source}: not a readable image ({type(exc).__name__}: {exc})") from None
    if min(image.size) < min_size:
        raise BadImageError(
            f"{source}: image is {image.size[0]}x{image.size[1]} px, smaller than the "
            f"{min_size} px minimum side"
        )
    return to_rgb(image)


def load_rgb(path: str | os.PathLike[str], *, min_size: int = DEFAULT_MIN_SIZE) -> Image.Image:
    """Read an image file as validated RGB."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadImageError(f"{path}: image file not found") from None
    except OSError as exc:
        raise BadImageError(f"{path}: cannot read ({exc})") from None
    return decode_image(data, source=str(path), min_size=min_size)


def resize_shorter_side(image: Image.Image, shorter_side: int) -> Image.Image:
    """Resize so the shorter side is ``shorter_side`` (never upscale)."""
    width, height = image.size
    short = min(width, height)
    if short <= shorter_side:
        return image
    scale = shorter_side / short
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


class ImageCache:
    """Resized RGB copies of images (uint8), keyed by file content and target size.

    Training decodes a full-size JPEG once; later epochs, runs and studies read the small
    copy. The key is the SHA-1 of the file's bytes, so a changed file is never served stale.
    """

    def __init__(self, root: str | os.PathLike[str], shorter_side: int = 256) -> None:
        if shorter_side < 1:
            raise ValueError(f"shorter_side must be >= 1, got {shorter_side}")
        self.root = Path(root)
        self.shorter_side = int(shorter_side)

    def key(self, data: bytes) -> str:
        """Cache key of an image's bytes at this cache's size."""
        return f"{hashlib.sha1(data).hexdigest()}_s{self.shorter_side}"

    def _entry(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get_array(self, path: str | os.PathLike[str]) -> np.ndarray:
        """The resized image as an HxWx3 uint8 array (computed and stored on first use)."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BadImageError(f"{path}: image file not found") from None
        entry = self._entry(self.key(data))
        if entry.exists():
            try:
                return np.load(entry, allow_pickle=False)
            except (OSError, ValueError):
                entry.unlink(missing_ok=True)  # a damaged entry is rebuilt, never trusted
        image = resize_shorter_side(decode_image(data, source=str(path)), self.shorter_side)
        array = np.asarray(image, dtype=np.uint8)
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        atomic_write_bytes(entry, buffer.getvalue())
        return array

    def get(self, path: str | os.PathLike[str]) -> Image.Image:
        """The resized image as a PIL RGB image."""
        return Image.fromarray(self.get_array(path), mode="RGB")
