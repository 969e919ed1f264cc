"""Atomic writes, the sweep of a killed writer's leftovers, and one writer per folder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from dermsynth.errors import DermsynthError
from dermsynth.io import (
    LOCK_FILE,
    FolderLock,
    atomic_folder,
    atomic_write_csv,
    atomic_write_text,
    clear_partials,
)

HOLD = """
import sys, time
from dermsynth.io import FolderLock
lock = FolderLock(sys.argv[1], "a test folder").acquire()
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _holder(folder: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_clear_partials_removes_only_what_interrupted_writers_leave(tmp_path: Path) -> None:
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "a" / ".last.pt.k2j3.tmp").write_bytes(b"half")
    (tmp_path / "cache" / "ab").mkdir(parents=True)
    (tmp_path / "cache" / "ab" / ".ab12.npy.x9.tmp").write_bytes(b"half")
    (tmp_path / ".model.abc.tmp-dir").mkdir()
    (tmp_path / ".model.abc.tmp-dir" / "weights").write_bytes(b"half")
    kept = [tmp_path / "runs" / "a" / "last.pt", tmp_path / "notes.tmp", tmp_path / ".hidden"]
    for path in kept:
        path.write_text("keep")
    assert clear_partials(tmp_path) == 3
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert left == [".hidden", "notes.tmp", "runs/a/last.pt"]


def test_atomic_writes_honour_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_csv(tmp_path / "b.csv", pd.DataFrame({"a": [1]}))
    finally:
        os.umask(old)
    for name in ("a.txt", "b.csv"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644


def test_atomic_folder_swaps_in_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with atomic_folder(target) as tmp:
        (tmp / "a").write_text("1")
    assert (target / "a").read_text() == "1"
    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        (tmp / "a").write_text("2")
        raise RuntimeError("killed")
    assert (target / "a").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_second_writer_is_refused_naming_the_holder(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    proc = _holder(folder, 30)
    try:
        with pytest.raises(
            DermsynthError, match=rf"in use by another dermsynth process {proc.pid}"
        ):
            FolderLock(folder, "a study folder").acquire()
    finally:
        proc.kill()
        proc.wait()
    # The holder died: its lock is taken over at once, and the file now names this process.
    with FolderLock(folder) as lock:
        assert lock.holder()["pid"] == os.getpid()
    assert (folder / LOCK_FILE).exists()


def test_the_lock_is_free_again_after_its_holder_finishes(tmp_path: Path) -> None:
    proc = _holder(tmp_path, 0.2)
    proc.wait()
    started = time.monotonic()
    with FolderLock(tmp_path):
        pass
    assert time.monotonic() - started < 5
