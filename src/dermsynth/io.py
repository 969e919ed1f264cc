"""Files every stage writes: atomic writes, the sweep of what a killed writer left, folder locks.

Every writer goes through a temporary file in the destination folder (``.<name>.<random>.tmp``),
flushed (and fsynced unless told otherwise), then renamed over the target (``os.replace`` is
atomic on POSIX and Windows): a reader never sees a half-written file. A writer killed before
the rename leaves its temporary file behind; :func:`clear_partials` removes those, and every
resumable command calls it on its folder once it holds the folder's :class:`FolderLock`, when no
other writer can be mid-write there. Files are created with the permissions the umask allows,
as ``open`` would create them.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import io
import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd

from dermsynth.errors import DermsynthError

PARTIAL_SUFFIX = ".tmp"
LOCK_FILE = ".dermsynth.lock"


@functools.cache
def _umask() -> int:
    # os.umask can only be read by setting it; done once, before any thread writes files.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temporary(target: Path) -> tuple[int, str]:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=PARTIAL_SUFFIX)
    # mkstemp creates 0600; a finished file gets what the user's umask allows, as open() would.
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str], mode: str = "w", *, fsync: bool = True, **kwargs: Any
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` in one step.

    ``fsync=False`` skips the flush to disk: for cache entries, where an entry lost in a crash
    is recomputed and thousands of fsyncs would dominate the run.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes only ('w' or 'wb'), got {mode!r}")
    target = Path(path)
    fd, tmp = _temporary(target)
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb", fsync=fsync) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_csv(path: str | os.PathLike[str], frame: pd.DataFrame) -> None:
    """Write a DataFrame as CSV (no index, ``\\n`` line endings) atomically."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        frame.to_csv(handle, index=False, lineterminator="\n")


def atomic_save(
    path: str | os.PathLike[str], save: Callable[[IO[bytes]], None], *, fsync: bool = True
) -> None:
    """Atomically write what ``save(handle)`` writes (e.g. ``torch.save``, ``np.save``)."""
    buffer = io.BytesIO()
    save(buffer)
    atomic_write_bytes(path, buffer.getvalue(), fsync=fsync)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary folder beside ``path``, swapped in as ``path`` when the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp-dir"))
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}{PARTIAL_SUFFIX}-dir"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def is_partial(path: Path) -> bool:
    """True for what an interrupted atomic writer leaves: ``.<name>...tmp`` or ``...tmp-dir``."""
    name = path.name
    return name.startswith(".") and (name.endswith(PARTIAL_SUFFIX) or name.endswith(".tmp-dir"))


def clear_partials(folder: str | os.PathLike[str]) -> int:
    """Remove the temporary files and folders interrupted writers left under ``folder``.

    Call it only while holding ``folder``'s :class:`FolderLock` (or a lock of a folder above
    it), so that no live writer's temporary file is taken. Returns how many were removed.
    """
    root = Path(folder)
    if not root.is_dir():
        return 0
    removed = 0
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in [d for d in dirnames if is_partial(base / d)]:
            shutil.rmtree(base / name, ignore_errors=True)
            dirnames.remove(name)
            removed += 1
        for name in filenames:
            if is_partial(base / name):
                with contextlib.suppress(FileNotFoundError):
                    (base / name).unlink()
                removed += 1
    return removed


class FolderLock:
    """One writer per folder: an exclusive ``flock`` on ``<folder>/.dermsynth.lock``.

    The lock file names its holder (process id, host, command, start time), so a refused second
    writer can say who holds the folder. The kernel releases the lock when its holder dies, so a
    lock left by a killed process is simply taken over. Where ``fcntl`` is missing (Windows)
    the lock is advisory only and never refuses.
    """

    def __init__(self, folder: str | os.PathLike[str], what: str = "this folder") -> None:
        self.folder = Path(folder)
        self.what = what
        self._handle: IO[str] | None = None

    @property
    def path(self) -> Path:
        """The lock file."""
        return self.folder / LOCK_FILE

    def holder(self) -> dict[str, Any]:
        """What the lock file says of its holder (empty if unreadable)."""
        try:
            return dict(json.loads(self.path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return {}

    def acquire(self) -> FolderLock:
        """Take the lock or raise a :class:`DermsynthError` naming the process that holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            self._handle = handle
            return self
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise DermsynthError(self._refusal()) from None
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:300],
                    "since": datetime.datetime.now().isoformat(timespec="seconds"),
                }
            )
        )
        handle.flush()
        self._handle = handle
        return self

    def _refusal(self) -> str:
        info = self.holder()
        who = f"process {info.get('pid', '?')} on {info.get('host', '?')}"
        if info.get("command"):
            who += f" (`{info['command']}`"
            who += f", since {info['since']})" if info.get("since") else ")"
        return (
            f"{self.folder} is in use by another dermsynth {who}; wait for it to finish or stop "
            f"it, then run again ({self.what} takes one writer at a time)"
        )

    def release(self) -> None:
        """Let the folder go (the lock file stays; it is empty of meaning once unlocked)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
