"""Keyed rows of fixed width (frozen features), in shards: few files, memory-mapped reads.

Layout of a store folder::

    <folder>/shards/w00/.dermsynth.lock     one writer per slot (a FolderLock)
    <folder>/shards/w00/00000.npy           the rows of one shard, (n, dim), in .npy format
    <folder>/shards/w00/00000.keys.json     the shard's keys, one per row, and its shape

A writer takes the first slot whose lock is free, so several processes (Ray workers, parallel
runs) write side by side, each into its own files; a store has as many slots as writers ever ran
at once. A writer buffers rows and writes a shard at a time, the data first and the keys second,
each atomically: a killed writer loses at most the rows of its unfinished shard, and the next
writer of the slot continues the slot's last shard (rewriting it with the old rows first, so a
row never moves). A shard counts only when its keys file reads and its data file has exactly the
size its header promises; a truncated or orphaned shard is left out by readers and removed by
the next writer, and its rows are computed again. A key written twice (two writers computed it at
once) reads from the first shard that has it, in slot and shard order.

The file count grows with shards (two files per up to 16 MiB of rows), not with rows.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermsynth.errors import DermsynthError
from dermsynth.io import FolderLock, atomic_save, atomic_write_json, clear_partials

SHARDS = "shards"
KEYS_SUFFIX = ".keys.json"
DATA_SUFFIX = ".npy"
STORE_FORMAT = 1
SHARD_BYTES = 16 * 2**20  # a shard's target size: few files, little lost when a writer dies
MIN_SHARD_ROWS, MAX_SHARD_ROWS = 1024, 16384


def default_shard_rows(dim: int, itemsize: int = 2) -> int:
    """Rows per shard for rows of ``dim`` values: about 16 MiB, 1,024 to 16,384 rows."""
    return int(min(MAX_SHARD_ROWS, max(MIN_SHARD_ROWS, SHARD_BYTES // max(1, dim * itemsize))))


def data_file(keys_file: Path) -> Path:
    """The data file of a shard, from its keys file."""
    return keys_file.with_name(keys_file.name.removesuffix(KEYS_SUFFIX) + DATA_SUFFIX)


def keys_file(data: Path) -> Path:
    """The keys file of a shard, from its data file."""
    return data.with_name(data.name.removesuffix(DATA_SUFFIX) + KEYS_SUFFIX)


def whole_rows(path: Path, dim: int, dtype: np.dtype[Any]) -> int | None:
    """Rows of a shard's data file; None when it is missing, cut short, padded or of another
    width or type (the header's promise and the file's size must agree)."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, stored = read(handle)
            offset = handle.tell()
            size = os.fstat(handle.fileno()).st_size
    except (OSError, ValueError, EOFError):
        return None
    if fortran or stored != dtype or len(shape) != 2 or shape[1] != dim:
        return None
    return int(shape[0]) if size == offset + shape[0] * dim * dtype.itemsize else None


# Parsed keys files, by path, while their size and mtime stay the same: a study reads the same
# index before every run, and the keys are most of its cost.
_KEYS_CACHE: dict[Path, tuple[tuple[int, int], list[str]]] = {}


def read_keys(path: Path, dim: int) -> list[str] | None:
    """The keys of a shard; None when the file is missing, unreadable or of another store."""
    import json

    try:
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = _KEYS_CACHE.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    keys = record.get("keys") if isinstance(record, dict) else None
    if not isinstance(keys, list) or record.get("dim") != dim or record.get("rows") != len(keys):
        return None
    _KEYS_CACHE[path] = (stamp, keys)
    return keys


def _shard_number(path: Path) -> int:
    name = path.name.removesuffix(KEYS_SUFFIX).removesuffix(DATA_SUFFIX)
    return int(name) if name.isdigit() else -1


@dataclass
class Snapshot:
    """The whole shards of a store at one moment, and the global row of every key."""

    paths: list[Path]  # data files, in slot and shard order
    starts: np.ndarray  # global row of each shard's first row
    counts: np.ndarray  # rows of each shard
    index: pd.Index  # every key once
    rows: np.ndarray  # global row of each key of ``index``
    dim: int
    dtype: np.dtype[Any]

    def __len__(self) -> int:
        return len(self.index)

    def locate(self, keys: Sequence[str]) -> np.ndarray:
        """Global rows of ``keys`` (int64); -1 where a key is not stored."""
        if not len(keys):
            return np.zeros(0, dtype=np.int64)
        found = self.index.get_indexer(pd.Index(list(keys), dtype=object))
        out = np.full(len(found), -1, dtype=np.int64)
        out[found >= 0] = self.rows[found[found >= 0]]
        return out

    def reader(self) -> ShardReader:
        """Memory-mapped reads of this snapshot's rows."""
        return ShardReader(list(self.paths), self.starts, self.counts, self.dim, self.dtype)


@dataclass
class ShardReader:
    """Gathers rows by global row number from memory-mapped shards (each opened on first use)."""

    paths: list[Path]
    starts: np.ndarray  # global row of each shard's first row
    counts: np.ndarray  # rows of each shard as the snapshot saw it
    dim: int
    dtype: np.dtype[Any]
    _maps: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def _map(self, shard: int) -> np.ndarray:
        if shard not in self._maps:
            # A writer may have extended the shard since: its first rows stay where they were.
            self._maps[shard] = np.load(self.paths[shard], mmap_mode="r", allow_pickle=False)
        return self._maps[shard]

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """The rows at global positions ``rows`` (any shape), as an array of shape
        ``rows.shape + (dim,)``."""
        flat = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((len(flat), self.dim), dtype=self.dtype)
        shard = np.searchsorted(self.starts, flat, side="right") - 1
        for s in np.unique(shard):
            pick = shard == s
            out[pick] = self._map(int(s))[flat[pick] - self.starts[s]]
        return out.reshape((*np.shape(rows), self.dim))

    @property
    def total(self) -> int:
        """Rows this reader can address."""
        return int(self.starts[-1] + self.counts[-1]) if len(self.paths) else 0

    def joined(self, other: ShardReader) -> tuple[ShardReader, int]:
        """One reader over both readers' shards, and the offset of ``other``'s rows in it."""
        if other is self:
            return self, 0
        offset = self.total
        maps = {**self._maps, **{k + len(self.paths): v for k, v in other._maps.items()}}
        return (
            ShardReader(
                self.paths + other.paths,
                np.concatenate([self.starts, other.starts + offset]).astype(np.int64),
                np.concatenate([self.counts, other.counts]).astype(np.int64),
                self.dim,
                self.dtype,
                maps,
            ),
            offset,
        )


class ShardStore:
    """A folder of keyed rows in shards (see the module doc)."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        dim: int,
        *,
        dtype: str = "float16",
        shard_rows: int | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.dim = int(dim)
        self.dtype = np.dtype(dtype)
        self.shard_rows = shard_rows or default_shard_rows(self.dim, self.dtype.itemsize)

    @property
    def root(self) -> Path:
        """The folder of the writers' slots."""
        return self.folder / SHARDS

    def slots(self) -> list[Path]:
        """Every writer slot, in order."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and p.name.startswith("w"))

    def shards(self, slot: Path) -> list[tuple[Path, list[str] | None, int | None]]:
        """(keys file, keys, whole rows of its data) of every shard of a slot, in order."""
        found = sorted(slot.glob(f"*{KEYS_SUFFIX}"), key=_shard_number)
        return [
            (k, read_keys(k, self.dim), whole_rows(data_file(k), self.dim, self.dtype))
            for k in found
            if _shard_number(k) >= 0
        ]

    def snapshot(self) -> Snapshot:
        """The whole shards now; damaged ones are left out (a writer removes them)."""
        paths: list[Path] = []
        starts: list[int] = []
        counts: list[int] = []
        keys: list[str] = []
        for slot in self.slots():
            for path, shard_keys, rows in self.shards(slot):
                # Keys are read before the data, and a writer writes data before keys: a shard
                # being extended has at least as many data rows as the keys we read.
                if shard_keys is None or rows is None or rows < len(shard_keys):
                    continue
                paths.append(data_file(path))
                starts.append(len(keys))
                counts.append(len(shard_keys))
                keys.extend(shard_keys)
        index = pd.Index(keys, dtype=object)
        first = ~index.duplicated(keep="first")
        return Snapshot(
            paths,
            np.asarray(starts, dtype=np.int64),
            np.asarray(counts, dtype=np.int64),
            index[first],
            np.flatnonzero(first).astype(np.int64),
            self.dim,
            self.dtype,
        )

    def count_files(self) -> int:
        """Files the store holds (shards, keys and lock files)."""
        return sum(1 for p in self.folder.rglob("*") if p.is_file()) if self.folder.is_dir() else 0

    def repair(self, skip: Path | None = None) -> int:
        """Remove the damaged shards and partial files of every slot no writer holds; returns
        how many shards were removed."""
        removed = 0
        for slot in self.slots():
            if slot == skip:
                continue
            lock = FolderLock(slot, "a feature-store shard writer")
            try:
                lock.acquire()
            except DermsynthError:
                continue  # a live writer: its files are whole or temporary
            try:
                removed += len(self._clean(slot))
            finally:
                lock.release()
        return removed

    def _clean(self, slot: Path) -> list[tuple[Path, list[str], int]]:
        """Under the slot's lock: drop partial files and damaged shards; the whole ones stay."""
        clear_partials(slot)
        whole = []
        for path, keys, rows in self.shards(slot):
            if keys is None or rows is None or rows < len(keys):
                path.unlink(missing_ok=True)
                data_file(path).unlink(missing_ok=True)
                continue
            whole.append((path, keys, rows))
        for data in slot.glob(f"*{DATA_SUFFIX}"):
            if not keys_file(data).exists():  # killed between the data and its keys
                data.unlink(missing_ok=True)
        return whole

    @contextlib.contextmanager
    def writer(self) -> Iterator[ShardWriter]:
        """A writer holding the first free slot; what it buffered is written when the block
        ends (also when it raises: every added row is whole)."""
        slot, lock = self._take_slot()
        try:
            self.repair(skip=slot)
            writer = ShardWriter(self, slot, self._clean(slot))
            try:
                yield writer
            finally:
                writer.flush()
        finally:
            lock.release()

    def _take_slot(self) -> tuple[Path, FolderLock]:
        for i in itertools.count():
            slot = self.root / f"w{i:02d}"
            lock = FolderLock(slot, "a feature-store shard writer")
            try:
                lock.acquire()
            except DermsynthError:
                continue
            return slot, lock
        raise AssertionError("unreachable")  # pragma: no cover


class ShardWriter:
    """Rows into the shards of one slot, a shard at a time (use :meth:`ShardStore.writer`)."""

    def __init__(
        self, store: ShardStore, slot: Path, whole: list[tuple[Path, list[str], int]]
    ) -> None:
        self.store = store
        self.slot = slot
        self.buffer = np.empty((store.shard_rows, store.dim), dtype=store.dtype)
        self.keys: list[str] = []
        self.flushed = 0  # rows of the current shard already on disk
        self.written = 0  # rows this writer added
        self.seen: set[str] = set()
        self.number = 0
        if whole:
            last, keys, _ = whole[-1]
            self.number = _shard_number(last)
            if len(keys) < store.shard_rows:  # continue the slot's last shard
                rows = np.load(data_file(last), mmap_mode="r", allow_pickle=False)
                self.buffer[: len(keys)] = rows[: len(keys)]
                self.keys = list(keys)
                self.flushed = len(keys)
            else:
                self.number += 1

    def add(self, key: str, row: np.ndarray) -> None:
        """Add one row (written when its shard fills or the writer closes)."""
        if key in self.seen:
            return
        if np.shape(row) != (self.store.dim,):
            raise ValueError(f"row of shape {np.shape(row)} for a store of width {self.store.dim}")
        self.seen.add(key)
        self.buffer[len(self.keys)] = row
        self.keys.append(key)
        self.written += 1
        if len(self.keys) == self.store.shard_rows:
            self.flush()
            self.number += 1
            self.keys, self.flushed = [], 0

    def flush(self) -> None:
        """Write the current shard (data, then keys) if it has rows not yet on disk."""
        if len(self.keys) == self.flushed:
            return
        name = f"{self.number:05d}"
        rows = self.buffer[: len(self.keys)]
        atomic_save(self.slot / f"{name}{DATA_SUFFIX}", lambda h: np.save(h, rows))
        atomic_write_json(
            self.slot / f"{name}{KEYS_SUFFIX}",
            {
                "format": STORE_FORMAT,
                "rows": len(self.keys),
                "dim": self.store.dim,
                "dtype": self.store.dtype.name,
                "keys": self.keys,
            },
        )
        self.flushed = len(self.keys)


class StoredRows:
    """An (items, views, dim) array read from shards on demand: only the row numbers are held
    in memory. Indexing it (``features[idx, views]``) reads those rows."""

    def __init__(self, reader: ShardReader, rows: np.ndarray) -> None:
        self.reader = reader
        self.rows = np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        """(items, views, dim)."""
        return (*self.rows.shape, self.reader.dim)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The stored type (float16 for features)."""
        return self.reader.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.reader.gather(self.rows[key])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self.reader.gather(self.rows)
        return out if dtype is None else out.astype(dtype)

    @staticmethod
    def concat(parts: Sequence[StoredRows]) -> StoredRows:
        """The items of ``parts`` one after another (their views must agree)."""
        reader, rows = parts[0].reader, [parts[0].rows]
        for part in parts[1:]:
            reader, offset = reader.joined(part.reader)
            rows.append(part.rows + offset)
        return StoredRows(reader, np.concatenate(rows))
