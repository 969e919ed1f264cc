"""Download a manifest's image URLs into a folder: concurrent, retried, resumable, validated.

Each answer is streamed in chunks into an anonymous temporary file in the destination folder,
so memory stays flat whatever the size of the answer. The image is validated from that file
(it must decode completely and meet the minimum size) and only then written to
``<out_dir>/<image_id>.jpg`` through a temporary file and a rename: a killed run never leaves a
half file under the final name, and the temporary files it leaves are removed by the next run.
A second run skips every file that is there and valid.

Every download has a size cap (refused from ``Content-Length`` before reading, or stopped once
passed when the header is missing) and a wall-clock deadline for the whole transfer, retries
included, checked between chunks: a server that trickles bytes is cut off at the deadline.

Transport is urllib3 (the engine under ``requests``; ``preload_content=False`` and ``read1``
are its ``stream=True`` and ``iter_content``). urllib3 follows redirects; every retry
(refused connection, timeout, 429 / 5xx answer, transfer cut mid-body) is decided here with a
:class:`urllib3.util.Retry` policy, so that each backoff can be weighed against the deadline.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import IO

import pandas as pd
import urllib3
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    InvalidHeader,
    LocationParseError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
    SSLError,
)
from urllib3.response import BaseHTTPResponse
from urllib3.util import Retry, Timeout, parse_url

from dermsynth import __version__
from dermsynth.data.images import DEFAULT_MAX_PIXELS, BadImageError, load_rgb, to_rgb
from dermsynth.errors import DermsynthError
from dermsynth.io import PARTIAL_SUFFIX, FolderLock, atomic_open, is_partial

REPORT_COLUMNS: tuple[str, ...] = (
    "image_id",
    "url",
    "path",
    "status",
    "reason",
    "attempts",
    "bytes",
    "seconds",
)
# Transient answers worth another try; any other 4xx is final.
RETRY_STATUSES: frozenset[int] = frozenset({429, *range(500, 600)})
# A server's Retry-After is obeyed up to this long: a worker waits, it does not sleep for hours.
MAX_RETRY_AFTER_S = 30
MAX_BACKOFF_S = 30.0
MAX_REDIRECTS = 10
JPEG_QUALITY = 95
DEFAULT_MAX_BYTES = 50_000_000
DEFAULT_DEADLINE_S = 120.0
# Each read returns what has arrived, up to this much: the deadline is checked that often.
CHUNK_BYTES = 64 * 1024
# One request as urllib3 sends it: redirects followed, every retry left to _download.
ONE_REQUEST = Retry(total=None, connect=0, read=0, status=0, other=0, redirect=MAX_REDIRECTS)


@dataclass
class _Row:
    image_id: str
    url: str
    path: str
    status: str
    reason: str = ""
    attempts: int = 0
    bytes: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class _Limits:
    retries: int
    timeout: float
    max_bytes: int
    deadline: float


class _Failed(Exception):
    """A download that will not succeed in this run; ``reason`` goes into the report."""

    def __init__(self, reason: str, attempts: int = 0, received: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts
        self.received = received


class _Again(Exception):
    """One request failed in a way worth another try (the retry policy decides)."""

    def __init__(
        self,
        reason: str,
        *,
        error: Exception | None = None,
        response: BaseHTTPResponse | None = None,
        received: int = 0,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error
        self.response = response
        self.received = received


class _Clock:
    """The wall-clock budget of one download."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def passed(self) -> bool:
        return self.left() <= 0

    def reason(self) -> str:
        return f"deadline of {self.seconds:g} s passed"


def _size(n: int) -> str:
    """A byte count as people read it (decimal units, as disks and servers state them)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n} bytes"


def _check_options(
    workers: int, retries: int, min_size: int, max_bytes: int, seconds: dict[str, float]
) -> None:
    def whole(name: str, value: object, low: int) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise DermsynthError(f"{name} must be a whole number >= {low}, got {value!r}")

    whole("workers", workers, 1)
    whole("retries", retries, 0)
    whole("min_size", min_size, 1)
    whole("max_bytes", max_bytes, 1)
    for name, value in seconds.items():
        positive = name != "backoff"
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
            raise DermsynthError(f"{name} must be a number of seconds, got {value!r}")
        if value < 0 or (positive and value == 0):
            raise DermsynthError(
                f"{name} must be {'> 0' if positive else '>= 0'} seconds, got {value!r}"
            )


def _prepare_rows(manifest: pd.DataFrame, url_column: str) -> list[tuple[str, str]]:
    """``(image_id, url)`` per row, after checking that every id can be a file name."""
    for column in ("image_id", url_column):
        if column not in manifest.columns:
            found = ", ".join(map(str, manifest.columns[:20]))
            raise DermsynthError(
                f"the manifest has no {column!r} column to download from; columns found: {found}"
            )
    ids = manifest["image_id"].astype(str).str.strip().tolist()
    urls = [u.strip() if isinstance(u, str) else "" for u in manifest[url_column].tolist()]
    seen: dict[str, int] = {}
    for row, image_id in enumerate(ids, start=1):
        if (
            not image_id
            or image_id in (".", "..")
            or Path(image_id).name != image_id
            or "\\" in image_id
        ):
            raise DermsynthError(
                f"row {row}: image_id {image_id!r} cannot be a file name (it becomes "
                f"<out>/<image_id>.jpg); ids must be non-empty and hold no path separators"
            )
        if image_id in seen:
            raise DermsynthError(
                f"rows {seen[image_id]} and {row}: duplicate image_id {image_id!r}; both would "
                "be written to the same file"
            )
        seen[image_id] = row
    return list(zip(ids, urls, strict=True))


def _prepare_folder(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise DermsynthError(
            f"{out_dir} is a file, not a folder; give a folder for the images (--out)"
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DermsynthError(
            f"cannot create the image folder {out_dir}: {exc.strerror or exc}"
        ) from None


def _clear_partials(out_dir: Path) -> None:
    """Remove the temporary files a killed run left (only at the top: sub-folders are not ours)."""
    for path in out_dir.iterdir():
        if is_partial(path) and path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _pool(workers: int) -> urllib3.PoolManager:
    """One thread-safe connection pool for all workers."""
    return urllib3.PoolManager(
        num_pools=max(10, workers),
        maxsize=workers,
        retries=ONE_REQUEST,
        headers={"User-Agent": f"dermsynth/{__version__} (image fetch)"},
    )


def _policy(retries: int, backoff: float) -> Retry:
    """How many tries each kind of failure gets, and how long to wait between them."""
    return Retry(
        total=None,
        connect=retries,
        read=retries,
        status=retries,
        other=retries,
        backoff_factor=backoff,
        backoff_jitter=backoff,
        backoff_max=MAX_BACKOFF_S,
        respect_retry_after_header=True,
        retry_after_max=MAX_RETRY_AFTER_S,
    )


def _network_reason(error: BaseException | None, timeout: float) -> str:
    """One short, readable cause for a failed request."""
    # NewConnectionError subclasses ConnectTimeoutError in urllib3: test the narrower first.
    if isinstance(error, NameResolutionError):
        return f"host not found ({error.conn.host})" if error.conn else "host not found"
    if isinstance(error, NewConnectionError):
        return f"cannot connect ({str(error).rsplit(': ', 1)[-1]})"
    if isinstance(error, ReadTimeoutError):
        return f"timed out: no data for {timeout:g} s"
    if isinstance(error, ConnectTimeoutError):
        return f"timed out connecting ({timeout:g} s)"
    if isinstance(error, ProtocolError):
        detail = str(error.args[0]).removeprefix("Connection broken: ")
        return f"connection broken mid-transfer ({detail})"
    if isinstance(error, SSLError):
        return f"TLS error ({error})"
    return f"{type(error).__name__}: {error}"


def _check_url(url: str) -> None:
    try:
        scheme = parse_url(url).scheme
    except LocationParseError:
        raise _Failed(f"not a valid URL ({url!r})") from None
    if scheme not in ("http", "https"):
        raise _Failed(f"not an http(s) URL ({url!r})")


def _receive(response: BaseHTTPResponse, sink: IO[bytes], clock: _Clock, limits: _Limits) -> int:
    """Stream a 200 answer's body into ``sink``; return its size in bytes."""
    if response.status != 200:
        phrase = f" {response.reason}" if response.reason else ""
        if response.status in RETRY_STATUSES:
            raise _Again(f"HTTP {response.status}{phrase}", response=response)
        raise _Failed(f"HTTP {response.status}{phrase}")
    cap = limits.max_bytes
    announced = response.length_remaining
    if announced is not None and announced > cap:
        raise _Failed(f"larger than the {_size(cap)} cap (the server announced {_size(announced)})")
    received = 0
    try:
        while chunk := response.read1(CHUNK_BYTES):
            received += len(chunk)
            if received > cap:
                raise _Failed(
                    f"larger than the {_size(cap)} cap (stopped after {_size(received)}; "
                    f"the server announced {_size(announced) if announced else 'no size'})",
                    received=received,
                )
            sink.write(chunk)
            if clock.passed():
                raise _Failed(clock.reason(), received=received)
    except HTTPError as exc:  # a transfer cut or stalled mid-body: worth another try
        raise _Again(_network_reason(exc, limits.timeout), error=exc, received=received) from None
    return received


def _attempt(
    pool: urllib3.PoolManager, url: str, sink: IO[bytes], clock: _Clock, limits: _Limits
) -> tuple[int, str]:
    """One request (redirects followed): ``(bytes, content type)``, or raise why not."""
    sink.seek(0)
    sink.truncate()
    # No single wait may outlast the deadline (urllib3 refuses a timeout of 0 or less).
    wait = max(min(limits.timeout, clock.left()), 0.01)
    try:
        response = pool.request(
            "GET", url, preload_content=False, timeout=Timeout(connect=wait, read=wait)
        )
    except MaxRetryError as exc:
        if isinstance(exc.reason, ResponseError):  # too many redirects
            raise _Failed(str(exc.reason)) from None
        raise _Again(_network_reason(exc.reason, limits.timeout), error=exc.reason) from None
    except HTTPError as exc:  # not retryable at all, e.g. a malformed URL or header
        raise _Failed(_network_reason(exc, limits.timeout)) from None
    complete = False
    try:
        received = _receive(response, sink, clock, limits)
        complete = True
    finally:
        if not complete:
            response.close()  # what is left unread makes the connection unusable
        response.release_conn()
    return received, response.headers.get("Content-Type", "")


def _next_try(retry: Retry, url: str, again: _Again, clock: _Clock, attempts: int) -> Retry:
    """The policy after this failure, having waited for the next try; or raise :class:`_Failed`."""
    if clock.passed():
        raise _Failed(clock.reason(), attempts, again.received)
    try:
        retry = retry.increment("GET", url, response=again.response, error=again.error)
    except MaxRetryError:
        raise _Failed(again.reason, attempts, again.received) from None
    wait = retry.get_backoff_time()
    if again.response is not None and again.response.status in Retry.RETRY_AFTER_STATUS_CODES:
        with contextlib.suppress(InvalidHeader):
            wait = retry.get_retry_after(again.response) or wait
    if wait >= clock.left():
        note = f"the {clock.seconds:g} s deadline leaves no time to try again"
        raise _Failed(f"{again.reason}; {note}", attempts, again.received)
    time.sleep(wait)
    return retry


def _download(
    pool: urllib3.PoolManager, policy: Retry, url: str, sink: IO[bytes], limits: _Limits
) -> tuple[int, str, int]:
    """``(bytes, content type, attempts)`` of a 200 answer streamed into ``sink``."""
    _check_url(url)
    clock = _Clock(limits.deadline)
    retry = policy
    attempts = 0
    while True:
        attempts += 1
        try:
            received, content_type = _attempt(pool, url, sink, clock, limits)
        except _Failed as exc:
            raise _Failed(exc.reason, attempts, exc.received) from None
        except _Again as again:
            retry = _next_try(retry, url, again, clock, attempts)
        else:
            return received, content_type, attempts


def _open_download(handle: IO[bytes], source: str, min_size: int) -> Image.Image:
    """Decode a downloaded file fully, reading it in blocks, or raise :class:`BadImageError`.

    The checks and messages of :func:`dermsynth.data.images.open_image`, which takes bytes:
    here the body stays on disk, so a large answer costs no memory.
    """
    if handle.seek(0, os.SEEK_END) == 0:
        raise BadImageError(source, "empty file (0 bytes)")
    try:
        handle.seek(0)
        with Image.open(handle) as probe:
            probe.verify()
        handle.seek(0)
        image = Image.open(handle)
        width, height = image.size
        if width * height > DEFAULT_MAX_PIXELS:
            raise BadImageError(
                source,
                f"image is {width}x{height} px, over the {DEFAULT_MAX_PIXELS:,}-pixel limit "
                "(a decompression bomb, or a scan far larger than a photo)",
            )
        if min(width, height) < min_size:
            raise BadImageError(
                source,
                f"image is {width}x{height} px, smaller than the {min_size} px minimum side",
            )
        image.load()
    except (BadImageError, MemoryError):
        raise
    except UnidentifiedImageError:
        raise BadImageError(source, "not a readable image (not a known image format)") from None
    except Exception as exc:  # Pillow's plugins raise many types on malformed input
        raise BadImageError(source, f"not a readable image ({type(exc).__name__}: {exc})") from None
    return image


def _store(sink: IO[bytes], target: Path, source: str, min_size: int) -> None:
    """Write the validated download as ``target``: an RGB JPEG as it came, else re-encoded."""
    image = _open_download(sink, source, min_size)
    if image.format in ("JPEG", "MPO") and image.mode == "RGB":
        sink.seek(0)
        with atomic_open(target, "wb") as handle:
            shutil.copyfileobj(sink, handle, CHUNK_BYTES)
        return
    try:
        rgb = to_rgb(image)
    except (OSError, ValueError) as exc:
        raise BadImageError(
            source, f"cannot convert {image.mode} pixels to RGB ({type(exc).__name__}: {exc})"
        ) from None
    with atomic_open(target, "wb") as handle:
        rgb.save(handle, "JPEG", quality=JPEG_QUALITY)


def _is_valid(path: Path, min_size: int) -> bool | None:
    """True: a usable image is there; False: an unusable one is; None: nothing is."""
    if not path.exists():
        return None
    try:
        load_rgb(path, min_size=min_size)
    except BadImageError:
        return False
    return True


@dataclass(frozen=True)
class _Job:
    """What every worker shares: the connection pool, the retry policy and the limits."""

    pool: urllib3.PoolManager
    policy: Retry
    limits: _Limits
    min_size: int
    out_dir: Path


def _fetch_into(job: _Job, sink: IO[bytes], row: _Row, target: Path) -> None:
    """Download ``row.url`` through ``sink`` and store it as ``target``, filling in ``row``."""
    start = time.monotonic()
    try:
        row.bytes, content_type, row.attempts = _download(
            job.pool, job.policy, row.url, sink, job.limits
        )
    except _Failed as exc:
        row.reason, row.attempts, row.bytes = exc.reason, exc.attempts, exc.received
        return
    finally:
        row.seconds = round(time.monotonic() - start, 3)
    try:
        _store(sink, target, row.url, job.min_size)
    except BadImageError as exc:
        # A dead link often answers 200 with an HTML page: say so, it explains the failure.
        sent = (
            f"; the server sent {content_type}"
            if content_type and "image/" not in content_type
            else ""
        )
        row.reason = f"{exc.reason}{sent}"
        return
    row.status, row.path = "fetched", str(target)


def _fetch_one(job: _Job, image_id: str, url: str) -> _Row:
    target = job.out_dir / f"{image_id}.jpg"
    existing = _is_valid(target, job.min_size)
    if existing:
        return _Row(image_id, url, str(target), "skipped")
    if not url:
        return _Row(image_id, url, "", "failed", "no url")
    row = _Row(image_id, url, "", "failed")
    try:
        # Anonymous where the system allows (nothing is left if the run is killed); named as a
        # partial file elsewhere, so that the next run removes it.
        with tempfile.TemporaryFile(
            dir=job.out_dir, prefix=f".{target.name}.", suffix=PARTIAL_SUFFIX
        ) as sink:
            _fetch_into(job, sink, row, target)
    except OSError as exc:
        row.status, row.path = "failed", ""
        row.reason = f"cannot write {target}: {exc.strerror or exc}"
    if existing is False:
        # The unusable file is left for the user to look at; the report says it is there.
        row.reason = (
            "replaced an unusable file"
            if row.status == "fetched"
            else f"{row.reason} (the unusable file at {target} is left as it was)"
        )
    return row


def _run(job: _Job, rows: list[tuple[str, str]], workers: int, progress: bool) -> list[_Row]:
    results: list[_Row | None] = [None] * len(rows)
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dermsynth-fetch")
    try:
        futures = {
            executor.submit(_fetch_one, job, image_id, url): i
            for i, (image_id, url) in enumerate(rows)
        }
        failed = 0
        with tqdm(
            total=len(rows), desc="fetch", unit="img", file=sys.stderr, disable=not progress
        ) as bar:
            for future in as_completed(futures):
                row = future.result()
                results[futures[future]] = row
                if row.status == "failed":
                    failed += 1
                    bar.set_postfix(failed=failed, refresh=False)
                bar.update()
    finally:
        # On Ctrl-C, drop what has not started; what is on disk is kept and the next run resumes.
        executor.shutdown(wait=True, cancel_futures=True)
        job.pool.clear()
    return [r for r in results if r is not None]


def fetch_images(
    manifest: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    *,
    url_column: str = "url",
    workers: int = 8,
    retries: int = 3,
    timeout: float = 30.0,
    min_size: int = 64,
    backoff: float = 0.5,
    max_bytes: int = DEFAULT_MAX_BYTES,
    deadline: float = DEFAULT_DEADLINE_S,
    progress: bool = True,
) -> pd.DataFrame:
    """Download each row's ``url_column`` into ``out_dir/<image_id>.jpg``; return a report.

    The report has one row per manifest row, in its order, with columns ``image_id``, ``url``,
    ``path`` (the stored file, empty when failed), ``status`` (``fetched``, ``skipped``: a valid
    file was already there, or ``failed``), ``reason`` (why it failed), ``attempts`` (requests
    made, redirects not counted), ``bytes`` (body bytes received from the last request; 0 when
    skipped or answered with an error status) and ``seconds`` (wall time of the download).
    Connection errors, timeouts, broken transfers, 429 and 5xx answers are retried ``retries``
    times with exponential backoff (``backoff`` seconds, doubled each time, plus jitter; a short
    ``Retry-After`` is obeyed); other HTTP errors are not. ``timeout`` bounds the connection
    and every wait for data; ``deadline`` bounds each image's whole download, retries and
    waits included; a body over ``max_bytes`` is refused (from its ``Content-Length``, or once
    that many bytes came). A body that does not decode completely, or whose shorter side is
    under ``min_size`` pixels, is reported and never stored. The folder takes one run at a time.
    """
    seconds = {"timeout": timeout, "backoff": backoff, "deadline": deadline}
    _check_options(workers, retries, min_size, max_bytes, seconds)
    rows = _prepare_rows(manifest, url_column)
    out = Path(out_dir)
    _prepare_folder(out)
    limits = _Limits(retries, float(timeout), int(max_bytes), float(deadline))
    job = _Job(_pool(workers), _policy(retries, backoff), limits, min_size, out)
    with FolderLock(out, "an image folder"):
        _clear_partials(out)
        results = _run(job, rows, workers, progress)
    return pd.DataFrame([astuple(r) for r in results], columns=list(REPORT_COLUMNS))
