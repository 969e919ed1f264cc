"""Download a manifest's image URLs into a folder: concurrent, retried, resumable, validated.

Each image lands in ``<out_dir>/<image_id>.jpg`` only after it decoded completely and met the
minimum size; it is written through a temporary file and a rename, so an interrupted run never
leaves a half file behind. A second run skips every file that is there and valid.

Transport is urllib3 (the engine under ``requests``), used directly because its
``preload_content`` reads the body inside the retried call: a transfer cut mid-body is retried
with the same backoff as a refused connection, a timeout or a 503.
"""

from __future__ import annotations

import io
import numbers
import os
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import astuple, dataclass
from pathlib import Path

import pandas as pd
import urllib3
from tqdm import tqdm
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    LocationParseError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util import Retry, Timeout, parse_url

from dermsynth import __version__
from dermsynth.data.images import BadImageError, load_rgb, open_image, to_rgb
from dermsynth.errors import DermsynthError
from dermsynth.io import atomic_write_bytes

REPORT_COLUMNS: tuple[str, ...] = (
    "image_id",
    "url",
    "path",
    "status",
    "reason",
    "attempts",
    "bytes",
)
# Transient answers worth another try; any other 4xx is final.
RETRY_STATUSES: frozenset[int] = frozenset({429, *range(500, 600)})
# A server's Retry-After is obeyed up to this long: a worker waits, it does not sleep for hours.
MAX_RETRY_AFTER_S = 30.0
MAX_BACKOFF_S = 30.0
MAX_REDIRECTS = 10
JPEG_QUALITY = 95


@dataclass
class _Row:
    image_id: str
    url: str
    path: str
    status: str
    reason: str = ""
    attempts: int = 0
    bytes: int = 0


class _Failed(Exception):
    """A download that will not succeed in this run; ``reason`` goes into the report."""

    def __init__(self, reason: str, attempts: int, received: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts
        self.received = received


def _check_options(
    workers: int, retries: int, timeout: float, min_size: int, backoff: float
) -> None:
    def whole(name: str, value: object, low: int) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise DermsynthError(f"{name} must be a whole number >= {low}, got {value!r}")

    whole("workers", workers, 1)
    whole("retries", retries, 0)
    whole("min_size", min_size, 1)
    for name, value, positive in (("timeout", timeout, True), ("backoff", backoff, False)):
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


def _pool(workers: int, retries: int, timeout: float, backoff: float) -> urllib3.PoolManager:
    """One thread-safe connection pool for all workers, with the retry policy built in."""
    retry = Retry(
        total=None,
        connect=retries,
        read=retries,
        status=retries,
        other=retries,
        redirect=MAX_REDIRECTS,
        allowed_methods=frozenset({"GET"}),
        status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff,
        backoff_jitter=backoff,
        backoff_max=MAX_BACKOFF_S,
        respect_retry_after_header=True,
        retry_after_max=MAX_RETRY_AFTER_S,
        raise_on_status=False,  # the last 503 comes back as a response, reported as such
    )
    return urllib3.PoolManager(
        num_pools=max(10, workers),
        maxsize=workers,
        retries=retry,
        timeout=Timeout(connect=timeout, read=timeout),
        headers={"User-Agent": f"dermsynth/{__version__} (image fetch)"},
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


def _download(
    pool: urllib3.PoolManager, url: str, retries: int, timeout: float
) -> tuple[bytes, str, int]:
    """``(body, content type, attempts)`` of a 200 answer, or raise :class:`_Failed`."""
    try:
        scheme = parse_url(url).scheme
    except LocationParseError:
        raise _Failed(f"not a valid URL ({url!r})", 0) from None
    if scheme not in ("http", "https"):
        raise _Failed(f"not an http(s) URL ({url!r})", 0)
    try:
        response = pool.request("GET", url, preload_content=True)
    except MaxRetryError as exc:
        # One kind of failure used up its retries: retries + 1 requests (more only when kinds
        # mixed, e.g. a refused connection and then timeouts, which urllib3 does not report).
        raise _Failed(_network_reason(exc.reason, timeout), retries + 1) from None
    except HTTPError as exc:  # not retryable at all, e.g. a malformed URL or header
        raise _Failed(_network_reason(exc, timeout), 1) from None
    history = response.retries.history if response.retries else ()
    attempts = 1 + sum(1 for step in history if step.redirect_location is None)
    body = response.data or b""
    if response.status != 200:
        phrase = f" {response.reason}" if response.reason else ""
        raise _Failed(f"HTTP {response.status}{phrase}", attempts, len(body))
    return body, response.headers.get("Content-Type", ""), attempts


def _jpeg_bytes(body: bytes, source: str, min_size: int) -> bytes:
    """The bytes to store: an RGB JPEG as it came; anything else re-encoded as RGB JPEG."""
    image = open_image(body, source=source, min_size=min_size)
    if image.format in ("JPEG", "MPO") and image.mode == "RGB":
        return body
    buffer = io.BytesIO()
    to_rgb(image).save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _is_valid(path: Path, min_size: int) -> bool | None:
    """True: a usable image is there; False: an unusable one is; None: nothing is."""
    if not path.exists():
        return None
    try:
        load_rgb(path, min_size=min_size)
    except BadImageError:
        return False
    return True


def _fetch_one(
    pool: urllib3.PoolManager,
    image_id: str,
    url: str,
    out_dir: Path,
    retries: int,
    timeout: float,
    min_size: int,
) -> _Row:
    target = out_dir / f"{image_id}.jpg"
    existing = _is_valid(target, min_size)
    if existing:
        return _Row(image_id, url, str(target), "skipped")
    if not url:
        return _Row(image_id, url, "", "failed", "no url")
    # The unusable file is left for the user to look at; the report says it is there.
    kept = f" (the unusable file at {target} is left as it was)" if existing is False else ""
    try:
        body, content_type, attempts = _download(pool, url, retries, timeout)
    except _Failed as exc:
        reason = exc.reason + kept
        return _Row(image_id, url, "", "failed", reason, exc.attempts, exc.received)
    try:
        data = _jpeg_bytes(body, url, min_size)
    except BadImageError as exc:
        # A dead link often answers 200 with an HTML page: say so, it explains the failure.
        sent = (
            f"; the server sent {content_type}"
            if content_type and "image/" not in content_type
            else ""
        )
        reason = f"{exc.reason}{sent}{kept}"
        return _Row(image_id, url, "", "failed", reason, attempts, len(body))
    try:
        atomic_write_bytes(target, data)
    except OSError as exc:
        reason = f"cannot write {target}: {exc.strerror or exc}"
        return _Row(image_id, url, "", "failed", reason, attempts, len(body))
    note = "replaced an unusable file" if existing is False else ""
    return _Row(image_id, url, str(target), "fetched", note, attempts, len(body))


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
    progress: bool = True,
) -> pd.DataFrame:
    """Download each row's ``url_column`` into ``out_dir/<image_id>.jpg``; return a report.

    The report has one row per manifest row, in its order, with columns ``image_id``, ``url``,
    ``path`` (the stored file, empty when failed), ``status`` (``fetched``, ``skipped``: a valid
    file was already there, or ``failed``), ``reason`` (why it failed), ``attempts`` (requests
    made, redirects not counted) and ``bytes`` (bytes received; 0 when skipped). Connection
    errors, timeouts, broken transfers, 429 and 5xx answers are retried ``retries`` times with
    exponential backoff (``backoff`` seconds, doubled each time, plus jitter; a short
    ``Retry-After`` is obeyed); other HTTP errors are not. ``timeout`` bounds the connection
    and every wait for data. A body that does not decode completely, or whose shorter side is
    under ``min_size`` pixels, is reported and never stored.
    """
    _check_options(workers, retries, timeout, min_size, backoff)
    rows = _prepare_rows(manifest, url_column)
    out = Path(out_dir)
    _prepare_folder(out)
    results: list[_Row | None] = [None] * len(rows)
    pool = _pool(workers, retries, timeout, backoff)
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dermsynth-fetch")
    try:
        futures = {
            executor.submit(_fetch_one, pool, image_id, url, out, retries, timeout, min_size): i
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
        pool.clear()
    return pd.DataFrame(
        [astuple(r) for r in results if r is not None], columns=list(REPORT_COLUMNS)
    )
