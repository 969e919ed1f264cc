"""WebDataset tar shards: images with one JSON record each, written a shard at a time.

A shard ``shard-000042.tar`` holds samples ``<key>.png`` + ``<key>.json`` (the image and its
record) in order, and is written whole to a temporary file and renamed: a reader never sees
half a shard. Its sidecar ``shard-000042.tar.json`` lists the keys, the byte count and the
SHA-256 of the tar, written after it: a shard counts only when both exist and agree, so a
shard cut short by a crash, a full disk or an interrupted copy is detected (:func:`is_whole`)
and written again. Any WebDataset reader reads the tars (``webdataset.WebDataset``); the
sidecars are for resuming and for checking a copy.

Keys are the images' ids with characters WebDataset reads as separators (``.`` and ``/``)
replaced; the record keeps the id as given.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dermsynth.errors import DermsynthError
from dermsynth.io import atomic_open, atomic_write_json

SHARD_NAME = "shard-{:06d}.tar"
SIDECAR_SUFFIX = ".json"
SHARD_FORMAT = 1
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# A fixed member time: the same images and records give the same bytes (and SHA-256).
_MTIME = 0.0


@dataclass(frozen=True)
class Sample:
    """One image of a shard: its key, encoded bytes, their extension and its record."""

    key: str
    image: bytes
    ext: str
    record: dict[str, Any]


def sample_key(image_id: str) -> str:
    """A WebDataset key for an image id (no dots or slashes: WebDataset splits keys there)."""
    key = _KEY_UNSAFE.sub("_", str(image_id))
    return key if key and not key.startswith("_") else f"x{key}"


def shard_path(folder: Path, index: int) -> Path:
    """The tar of shard ``index`` in ``folder``."""
    return folder / SHARD_NAME.format(index)


def sidecar_path(tar: Path) -> Path:
    """The sidecar of a shard's tar."""
    return tar.with_name(tar.name + SIDECAR_SUFFIX)


def _webdataset() -> Any:
    try:
        import webdataset
    except ImportError:
        raise DermsynthError(
            "WebDataset shards need the webdataset package: pip install 'dermsynth[share]'"
        ) from None
    return webdataset


class _Counting:
    """A write-only stream that hashes and counts what passes through it."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return int(self.handle.write(data))

    def flush(self) -> None:
        self.handle.flush()


def write_shard(
    tar: Path, samples: Iterable[Sample], *, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write one shard and then its sidecar (both atomically; ``extra`` joins the sidecar);
    returns the sidecar's record."""
    wds = _webdataset()
    keys: list[str] = []
    with atomic_open(tar, "wb") as handle:
        stream = _Counting(handle)
        with wds.TarWriter(stream, encoder=False, mtime=_MTIME) as writer:
            for sample in samples:
                if sample.key in keys:
                    raise DermsynthError(f"{tar}: two images share the key {sample.key!r}")
                record = json.dumps(sample.record, sort_keys=True, default=str).encode()
                writer.write({"__key__": sample.key, sample.ext: sample.image, "json": record})
                keys.append(sample.key)
    info = {
        "format": SHARD_FORMAT,
        "shard": tar.name,
        "samples": len(keys),
        "bytes": stream.size,
        "sha256": stream.sha.hexdigest(),
        "keys": keys,
        **(extra or {}),
    }
    atomic_write_json(sidecar_path(tar), info)
    return info


def read_sidecar(tar: Path) -> dict[str, Any] | None:
    """A shard's sidecar record; None when it is missing or unreadable."""
    try:
        info = json.loads(sidecar_path(tar).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("keys"), list) else None


def is_whole(tar: Path, *, checksum: bool = False) -> bool:
    """True when the shard and its sidecar agree (size; with ``checksum`` also the SHA-256)."""
    info = read_sidecar(tar)
    if info is None or not tar.is_file() or tar.stat().st_size != info.get("bytes"):
        return False
    if not checksum:
        return True
    sha = hashlib.sha256()
    with open(tar, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            sha.update(block)
    return sha.hexdigest() == info.get("sha256")


def remove_shard(tar: Path) -> None:
    """Remove a shard and its sidecar (a damaged shard, before it is written again)."""
    sidecar_path(tar).unlink(missing_ok=True)
    tar.unlink(missing_ok=True)


def shards_in(folder: Path) -> list[Path]:
    """The tars of ``folder`` in order, whole or not."""
    return sorted(folder.glob("shard-*.tar")) if folder.is_dir() else []


def read_samples(tars: Iterable[Path]) -> Iterator[tuple[str, bytes, dict[str, Any]]]:
    """(key, image bytes, record) of every sample of ``tars``, in order, through WebDataset."""
    wds = _webdataset()
    urls = [str(t) for t in tars]
    if not urls:
        return
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        ext = next(k for k in sample if k not in ("__key__", "__url__", "json", "__local_path__"))
        yield sample["__key__"], sample[ext], json.loads(sample["json"])


def check_folder(folder: Path) -> list[Path]:
    """Damaged shards of a folder (cut short, no sidecar, or a sidecar without its tar)."""
    bad = [t for t in shards_in(folder) if not is_whole(t)]
    bad += [
        s.with_name(s.name.removesuffix(SIDECAR_SUFFIX))
        for s in folder.glob(f"shard-*.tar{SIDECAR_SUFFIX}")
        if not s.with_name(s.name.removesuffix(SIDECAR_SUFFIX)).exists()
    ]
    return bad


def count_files(folder: Path) -> int:
    """Files under ``folder``."""
    return sum(len(files) for _, _, files in os.walk(folder))
