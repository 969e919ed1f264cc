"""Image validation (every mode to RGB, bad files named) and the resized-image cache."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermsynth.data import images
from dermsynth.data.images import (
    BadImageError,
    ImageCache,
    decode_image,
    load_rgb,
    open_image,
    resize_shorter_side,
    to_rgb,
)
from dermsynth.errors import DermsynthError


def _encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- conversion to RGB -------------------------------------------------------------------


def test_cmyk_jpeg_becomes_rgb() -> None:
    data = _encode(Image.new("CMYK", (64, 48), (0, 200, 200, 0)), "JPEG")
    assert open_image(data).mode == "CMYK"
    image = decode_image(data)
    assert image.mode == "RGB" and image.size == (64, 48)
    red, green, blue = image.getpixel((10, 10))
    assert red > 200 and green < 100 and blue < 100  # no cyan, much magenta and yellow


def test_cmyk_with_a_broken_icc_profile_still_converts() -> None:
    data = _encode(Image.new("CMYK", (40, 40), (0, 0, 0, 0)), "JPEG", icc_profile=b"not a profile")
    image = decode_image(data)
    assert image.mode == "RGB"
    assert min(image.getpixel((5, 5))) > 240  # no ink: white


def test_gray_becomes_rgb_with_equal_channels() -> None:
    gray = Image.fromarray(np.tile(np.arange(0, 250, 5, dtype=np.uint8), (50, 1)))
    image = decode_image(_encode(gray, "PNG"))
    array = np.asarray(image)
    assert image.mode == "RGB" and array.shape == (50, 50, 3)
    assert (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all()
    assert array[0, 10, 0] == 50


def test_sixteen_bit_gray_is_scaled_not_clipped() -> None:
    values = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    image = decode_image(_encode(Image.fromarray(values), "PNG"))
    row = np.asarray(image)[0, :, 0]
    assert row[0] == 0 and row[-1] == 255
    assert 120 <= row[32] <= 136  # mid-gray stays mid-gray


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_pixels_go_onto_white(mode: str) -> None:
    rgba = Image.new("RGBA", (40, 40), (200, 30, 30, 0))
    rgba.paste((200, 30, 30, 255), (0, 0, 20, 40))  # left half opaque red
    image = decode_image(_encode(rgba.convert(mode), "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((35, 20)) == (255, 255, 255)
    left = image.getpixel((5, 20))
    if mode == "RGBA":
        assert left == (200, 30, 30)
    else:
        assert left[0] == left[1] == left[2] < 255  # opaque gray stays gray


def test_palette_with_transparency_goes_onto_white() -> None:
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([0, 0, 255] + [0, 0, 0] * 255)
    image = decode_image(_encode(palette, "PNG", transparency=0))
    assert image.getpixel((3, 3)) == (255, 255, 255)


def test_exif_rotation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image = decode_image(_encode(_noise((80, 40)), "JPEG", exif=exif.tobytes()))
    assert image.size == (40, 80)


def test_rgb_passes_through() -> None:
    source = _noise((50, 40))
    assert to_rgb(source).mode == "RGB"
    assert np.array_equal(np.asarray(decode_image(_encode(source, "PNG"))), np.asarray(source))


# --- bad files are refused, and named -----------------------------------------------------


def _truncated_jpeg() -> bytes:
    data = _encode(_noise((300, 200)), "JPEG")
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file (0 bytes)"),
        (b"<html><body>404</body></html>", "not a readable image (not a known image format)"),
        (np.random.default_rng(1).bytes(5000), "not a readable image (not a known image format)"),
        (_truncated_jpeg(), "not a readable image (OSError: image file is truncated"),
        (
            _encode(_noise((20, 100)), "PNG"),
            "image is 20x100 px, smaller than the 32 px minimum side",
        ),
    ],
    ids=["empty", "html", "random", "truncated", "small"],
)
def test_bad_files_are_refused_naming_the_file(tmp_path: Path, data: bytes, reason: str) -> None:
    path = _write(tmp_path / "lesion.jpg", data)
    with pytest.raises(BadImageError) as info:
        load_rgb(path)
    assert str(info.value).startswith(f"{path}: {reason}")
    assert info.value.reason.startswith(reason)
    assert isinstance(info.value, DermsynthError)


def test_corrupt_png_body_is_refused(tmp_path: Path) -> None:
    data = bytearray(_encode(_noise((64, 64)), "PNG"))
    data[200:260] = bytes(60)  # damage compressed pixel data: the CRC no longer matches
    path = _write(tmp_path / "damaged.png", bytes(data))
    with pytest.raises(BadImageError, match=f"^{path}: not a readable image"):
        load_rgb(path)


def test_missing_file_and_folder_are_named(tmp_path: Path) -> None:
    with pytest.raises(BadImageError) as info:
        load_rgb(tmp_path / "absent.jpg")
    assert str(info.value) == f"{tmp_path / 'absent.jpg'}: image file not found"
    with pytest.raises(BadImageError) as info:
        load_rgb(tmp_path)
    assert str(info.value) == f"{tmp_path}: is a folder, not an image file"


def test_pixel_limit_stops_a_bomb_before_decoding() -> None:
    data = _encode(_noise((100, 80)), "JPEG")
    with pytest.raises(BadImageError) as info:
        decode_image(data, source="bomb.jpg", max_pixels=5000)
    assert str(info.value) == (
        "bomb.jpg: image is 100x80 px, over the 5,000-pixel limit "
        "(a decompression bomb, or a scan far larger than a photo)"
    )


def test_minimum_size_is_a_parameter() -> None:
    data = _encode(_noise((70, 50)), "JPEG")
    assert decode_image(data, min_size=50).size == (70, 50)
    with pytest.raises(BadImageError, match="smaller than the 64 px minimum side"):
        decode_image(data, min_size=64)


def test_resize_shorter_side_never_upscales() -> None:
    assert resize_shorter_side(_noise((400, 300)), 256).size == (341, 256)
    assert resize_shorter_side(_noise((300, 600)), 256).size == (256, 512)
    small = _noise((100, 80))
    assert resize_shorter_side(small, 256) is small


# --- the resized-image cache --------------------------------------------------------------


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    return _write(tmp_path / "photo.jpg", _encode(_noise((400, 300)), "JPEG"))


def test_cache_returns_the_same_array_twice_without_decoding_again(
    tmp_path: Path, photo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ImageCache(tmp_path / "cache")
    first = cache.get_array(photo)
    assert first.dtype == np.uint8 and first.shape == (256, 341, 3)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached image was decoded again")

    monkeypatch.setattr(images, "decode_image", no_decoding)
    second = cache.get_array(photo)
    assert np.array_equal(first, second)
    image = cache.get(photo)
    assert image.mode == "RGB" and image.size == (341, 256)


def test_cache_is_keyed_by_content(tmp_path: Path, photo: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    before = cache.get_array(photo)
    photo.write_bytes(_encode(_noise((400, 300), seed=7), "JPEG"))  # same name, new pixels
    after = cache.get_array(photo)
    assert after.shape == before.shape and not np.array_equal(before, after)
    twin = _write(tmp_path / "copy.jpg", photo.read_bytes())  # same bytes, another name
    assert np.array_equal(cache.get_array(twin), after)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 2


def test_cache_key_includes_the_size(tmp_path: Path, photo: Path) -> None:
    small = ImageCache(tmp_path / "cache", shorter_side=64).get_array(photo)
    large = ImageCache(tmp_path / "cache", shorter_side=128).get_array(photo)
    assert small.shape == (64, 85, 3) and large.shape == (128, 171, 3)


@pytest.mark.parametrize(
    "damage",
    [
        b"",
        b"garbage, not an array",
        "wrong shape",
    ],
    ids=["empty", "garbage", "wrong-shape"],
)
def test_cache_survives_a_damaged_entry(tmp_path: Path, photo: Path, damage: bytes | str) -> None:
    cache = ImageCache(tmp_path / "cache")
    good = cache.get_array(photo)
    (entry,) = (tmp_path / "cache").rglob("*.npy")
    if damage == "wrong shape":
        np.save(entry, np.zeros((4, 4), dtype=np.float32))
    else:
        entry.write_bytes(damage)  # type: ignore[arg-type]
    assert np.array_equal(cache.get_array(photo), good)
    assert np.array_equal(np.load(entry), good)  # rebuilt in place


def test_cache_refuses_a_bad_image_naming_it(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.jpg", _truncated_jpeg())
    with pytest.raises(BadImageError, match=f"^{path}: not a readable image"):
        ImageCache(tmp_path / "cache").get_array(path)
    assert not list((tmp_path / "cache").rglob("*.npy"))


def test_cache_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(DermsynthError, match=r"shorter_side must be a whole number >= 1, got 0$"):
        ImageCache(tmp_path / "cache", shorter_side=0)
    (tmp_path / "file").write_text("")
    with pytest.raises(DermsynthError) as info:
        ImageCache(tmp_path / "file")
    assert (
        str(info.value) == f"image cache {tmp_path / 'file'} is a file; give a folder for the cache"
    )


def test_bad_image_error_takes_a_whole_message_too() -> None:
    whole = BadImageError("image 'a1': mask m.png not found")
    assert str(whole) == whole.reason == "image 'a1': mask m.png not found"
    assert whole.source == ""
    parts = BadImageError("a.jpg", "empty file (0 bytes)")
    assert (str(parts), parts.source, parts.reason) == (
        "a.jpg: empty file (0 bytes)",
        "a.jpg",
        "empty file (0 bytes)",
    )
