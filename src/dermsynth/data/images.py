"""Reading images safely, and a resized-image cache that training reuses.

Every image is validated on the way in: it must decode completely, gray / palette / CMYK /
16-bit / alpha images are converted to RGB, and images smaller than a minimum side (or larger
than a pixel limit, the decompression-bomb guard) are refused. A corrupt file raises
:class:`BadImageError` naming the file; it is never used.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from dermsynth.errors import DermsynthError
from dermsynth.io import atomic_write_bytes

DEFAULT_MIN_SIZE = 32
# Pillow's own decompression-bomb threshold (about 89 megapixels): far above any clinical photo.
DEFAULT_MAX_PIXELS = 89_478_485

# Bump when the resizing method changes, so that old cache entries are not served.
_CACHE_VERSION = "v1"

_SRGB = ImageCms.createProfile("sRGB")


class BadImageError(DermsynthError):
    """An image file that cannot be used (missing, corrupt, not an image, too small).

    Raised as ``BadImageError(source, reason)`` or with one whole message. ``reason`` is the
    message without the file name, for reports that list the file in a column of its own.
    """

    def __init__(self, source: str, reason: str | None = None) -> None:
        if reason is None:
            source, reason = "", source
        super().__init__(f"{source}: {reason}" if source else reason)
        self.source = source
        self.reason = reason


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    """CMYK to RGB through the embedded ICC profile where there is one (Photoshop files)."""
    profile = image.info.get("icc_profile")
    if profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            # Pillow's annotation admits None for every call; it is None only with inPlace=True
            return cast(
                Image.Image, ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGB")
            )
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: Pillow's plain conversion is still a usable image
    return image.convert("RGB")


def _wide_gray_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit or float gray to 8-bit RGB; Pillow's own conversion clips instead of scaling."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16") or values.max(initial=0) > 255:
        values = values / 257.0
    gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([gray] * 3, axis=-1))


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB (EXIF rotation applied); transparency goes onto white."""
    image = ImageOps.exif_transpose(image) or image
    if image.mode == "RGB":
        return image
    if image.mode == "CMYK":
        return _cmyk_to_rgb(image)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return _wide_gray_to_rgb(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def open_image(
    data: bytes,
    *,
    source: str = "<bytes>",
    min_size: int = DEFAULT_MIN_SIZE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Decode bytes fully, in their stored mode and format, or raise :class:`BadImageError`.

    The size checks come before the pixels are decoded, so a decompression bomb costs nothing.
    """
    if not data:
        raise BadImageError(source, "empty file (0 bytes)")
    # Pillow's format plugins raise many exception types on malformed input (struct.error,
    # IndexError, SyntaxError, ...): any of them means "this file is not usable".
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadImageError(source, "not a readable image (not a known image format)") from None
    except MemoryError:
        raise
    except Exception as exc:
        raise BadImageError(source, f"not a readable image ({type(exc).__name__}: {exc})") from None
    width, height = image.size
    if width * height > max_pixels:
        raise BadImageError(
            source,
            f"image is {width}x{height} px, over the {max_pixels:,}-pixel limit "
            "(a decompression bomb, or a scan far larger than a photo)",
        )
    if min(width, height) < min_size:
        raise BadImageError(
            source, f"image is {width}x{height} px, smaller than the {min_size} px minimum side"
        )
    try:
        image.load()
    except MemoryError:
        raise
    except Exception as exc:
        # A truncated JPEG lands here: Pillow refuses it unless told to pad it with gray.
        raise BadImageError(source, f"not a readable image ({type(exc).__name__}: {exc})") from None
    return image


def decode_image(
    data: bytes,
    *,
    source: str = "<bytes>",
    min_size: int = DEFAULT_MIN_SIZE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Decode bytes fully into an RGB image, or raise :class:`BadImageError` saying why."""
    image = open_image(data, source=source, min_size=min_size, max_pixels=max_pixels)
    try:
        return to_rgb(image)
    except (OSError, ValueError) as exc:
        raise BadImageError(
            source, f"cannot convert {image.mode} pixels to RGB ({type(exc).__name__}: {exc})"
        ) from None


def content_hash(path: str | os.PathLike[str]) -> str:
    """SHA-1 of a file's bytes. Remembered per (path, size, mtime) within a process, so a study
    whose runs all read the same images hashes each file once; a rewritten file is hashed anew."""
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise BadImageError(str(path), "image file not found") from None
    except OSError as exc:
        raise BadImageError(str(path), f"cannot read ({exc.strerror or exc})") from None
    if not path.is_file():
        raise BadImageError(str(path), "is a folder, not an image file")
    return _sha1_cached(os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=1 << 17)
def _sha1_cached(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha1(_read(Path(path))).hexdigest()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BadImageError(str(path), "image file not found") from None
    except IsADirectoryError:
        raise BadImageError(str(path), "is a folder, not an image file") from None
    except OSError as exc:
        raise BadImageError(str(path), f"cannot read ({exc.strerror or exc})") from None


def load_rgb(
    path: str | os.PathLike[str],
    *,
    min_size: int = DEFAULT_MIN_SIZE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Read an image file as validated RGB."""
    path = Path(path)
    return decode_image(_read(path), source=str(path), min_size=min_size, max_pixels=max_pixels)


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
    Entries are written atomically, so processes may share one cache folder.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        shorter_side: int = 256,
        *,
        min_size: int = DEFAULT_MIN_SIZE,
    ) -> None:
        if isinstance(shorter_side, bool) or not isinstance(shorter_side, int) or shorter_side < 1:
            raise DermsynthError(
                f"cache shorter_side must be a whole number >= 1, got {shorter_side!r}"
            )
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise DermsynthError(f"image cache {root} is a file; give a folder for the cache")
        self.root = root
        self.shorter_side = shorter_side
        self.min_size = min_size

    def _key(self, digest: str) -> str:
        return f"{digest}_s{self.shorter_side}_{_CACHE_VERSION}"

    def entry_for(self, digest: str) -> Path:
        """Where the resized copy of the image with content hash ``digest`` is (or will be)."""
        key = self._key(digest)
        return self.root / key[:2] / f"{key}.npy"

    def _load_entry(self, entry: Path, *, mmap: bool = False) -> np.ndarray | None:
        """A stored array, or None where it is missing or damaged (then rebuilt, never trusted).

        ``mmap``: only the header is read and the size checked, not the pixels."""
        try:
            array = np.load(entry, allow_pickle=False, mmap_mode="r" if mmap else None)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError):
            entry.unlink(missing_ok=True)
            return None
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            entry.unlink(missing_ok=True)
            return None
        return array

    def _build(self, path: Path, entry: Path) -> np.ndarray:
        image = decode_image(_read(path), source=str(path), min_size=self.min_size)
        array = np.array(resize_shorter_side(image, self.shorter_side), dtype=np.uint8)
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        atomic_write_bytes(entry, buffer.getvalue())
        return array

    def ensure(self, path: str | os.PathLike[str]) -> tuple[str, Path]:
        """Content hash and cache entry of an image, decoding it only when the entry is
        missing or damaged (a present entry is checked by its header, not read)."""
        path = Path(path)
        digest = content_hash(path)
        entry = self.entry_for(digest)
        if self._load_entry(entry, mmap=True) is None:
            self._build(path, entry)
        return digest, entry

    def get_array(self, path: str | os.PathLike[str]) -> np.ndarray:
        """The resized image as an HxWx3 uint8 array (computed and stored on first use)."""
        path = Path(path)
        entry = self.entry_for(content_hash(path))
        array = self._load_entry(entry)
        return array if array is not None else self._build(path, entry)

    def get(self, path: str | os.PathLike[str]) -> Image.Image:
        """The resized image as a PIL RGB image."""
        return Image.fromarray(self.get_array(path))
