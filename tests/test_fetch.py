"""``data fetch`` against a real HTTP server on loopback that serves good and faulty answers."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermsynth.data.fetch import REPORT_COLUMNS, fetch_images
from dermsynth.errors import DermsynthError
from dermsynth.io import LOCK_FILE, FolderLock

TIMEOUT = 1.0
SLOW_S = 2.5
RETRIES = 1
FAST = {
    "retries": RETRIES,
    "timeout": TIMEOUT,
    "backoff": 0.01,
    "workers": 4,
    "min_size": 32,
    "progress": False,
}


def _encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _noise(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    bands = len(mode) if mode != "L" else 1
    shape = (size[1], size[0], bands) if bands > 1 else (size[1], size[0])
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)


GOOD_JPEG = _encode(_noise("RGB", (120, 90), 0), "JPEG", quality=90)
ALPHA_PNG = _encode(Image.new("RGBA", (80, 70), (200, 30, 30, 0)), "PNG")
GRAY_JPEG = _encode(_noise("L", (70, 70), 1), "JPEG")
CMYK_JPEG = _encode(Image.new("CMYK", (64, 96), (0, 200, 200, 0)), "JPEG")
TINY_JPEG = _encode(_noise("RGB", (16, 16), 2), "JPEG")
FLAKY_JPEG = _encode(_noise("RGB", (64, 64), 3), "JPEG")
BIG_JPEG = _encode(_noise("RGB", (400, 300), 4), "JPEG")
# Padding after a JPEG's end marker: the decoder ignores it, so the answer stays a valid image.
ZEROS = bytes(64 * 1024)
LARGE_SIZE = len(GOOD_JPEG) + 640 * len(ZEROS)  # about 42 MB
ENDLESS_SIZE = 8_000_000
HUGE_ANNOUNCED = 300_000_000
TRICKLE_EVERY_S = 0.05


@dataclass
class FaultServer:
    """Counts requests per path; see ``_Handler.do_GET`` for what each path answers."""

    base: str = ""
    hits: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def count(self, name: str) -> int:
        with self.lock:
            return self.hits[f"/{name}"]


class _Handler(BaseHTTPRequestHandler):
    server_state: FaultServer

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def _send(
        self,
        status: int,
        body: bytes,
        ctype: str = "image/jpeg",
        length: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        state = self.server_state
        with state.lock:
            state.hits[self.path] += 1
            hits = state.hits[self.path]
        # The client may have given up (the slow answer): nothing to do then.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._answer(self.path, hits)

    def _answer(self, path: str, hits: int) -> None:
        if path == "/good.jpg":
            self._send(200, GOOD_JPEG)
        elif path == "/alpha.png":
            self._send(200, ALPHA_PNG, "image/png")
        elif path == "/gray.jpg":
            self._send(200, GRAY_JPEG)
        elif path == "/cmyk.jpg":
            self._send(200, CMYK_JPEG)
        elif path == "/big.jpg":
            self._send(200, BIG_JPEG)
        elif path == "/slow.jpg":
            time.sleep(SLOW_S)
            self._send(200, GOOD_JPEG)
        elif path == "/truncated.jpg":  # the file itself is cut: a correct, short answer
            self._send(200, BIG_JPEG[: len(BIG_JPEG) // 2])
        elif path == "/cut.jpg":  # the transfer is cut: fewer bytes than announced
            self._send(200, BIG_JPEG[:500], length=len(BIG_JPEG))
            self.close_connection = True
        elif path == "/page.html":
            self._send(200, b"<html><body>Moved to our new site</body></html>", "text/html")
        elif path == "/tiny.jpg":
            self._send(200, TINY_JPEG)
        elif path == "/flaky.jpg":
            if hits == 1:
                self._send(503, b"busy", "text/plain", headers={"Retry-After": "0"})
            else:
                self._send(200, FLAKY_JPEG)
        elif path == "/busy.jpg":
            self._send(503, b"busy", "text/plain")
        elif path == "/later.jpg":
            self._send(503, b"busy", "text/plain", headers={"Retry-After": "20"})
        else:
            self._answer_large(path)

    def _head(self, length: int | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        if length is not None:  # without it, the body ends when the connection closes
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _answer_large(self, path: str) -> None:
        """Large and slow answers, sent from memory in chunks."""
        if path == "/large.jpg":  # a valid image of about 42 MB
            self._head(LARGE_SIZE)
            self.wfile.write(GOOD_JPEG)
            for _ in range((LARGE_SIZE - len(GOOD_JPEG)) // len(ZEROS)):
                self.wfile.write(ZEROS)
        elif path == "/huge.jpg":  # announces 300 MB, sends one small image
            self._head(HUGE_ANNOUNCED)
            self.wfile.write(GOOD_JPEG)
        elif path == "/endless.jpg":  # no Content-Length: 8 MB until the connection closes
            self._head(None)
            self.wfile.write(GOOD_JPEG)
            for _ in range(ENDLESS_SIZE // len(ZEROS)):
                self.wfile.write(ZEROS)
        elif path == "/trickle.jpg":  # one byte every 50 ms, never a pause long enough to time out
            self._head(len(BIG_JPEG))
            for i in range(int(5 / TRICKLE_EVERY_S)):
                self.wfile.write(BIG_JPEG[i : i + 1])
                time.sleep(TRICKLE_EVERY_S)
        else:
            self._send(404, b"not found", "text/plain")


@pytest.fixture
def server() -> Iterator[FaultServer]:
    state = FaultServer()
    handler = type("Handler", (_Handler,), {"server_state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# image_id -> path on the server (None: an empty url)
CASES: dict[str, str | None] = {
    "good": "good.jpg",
    "alpha": "alpha.png",
    "gray": "gray.jpg",
    "cmyk": "cmyk.jpg",
    "flaky": "flaky.jpg",
    "missing": "missing.jpg",
    "slow": "slow.jpg",
    "truncated": "truncated.jpg",
    "cut": "cut.jpg",
    "html": "page.html",
    "tiny": "tiny.jpg",
    "busy": "busy.jpg",
    "nourl": None,
}
GOOD_IDS = {"good", "alpha", "gray", "cmyk", "flaky"}


def _manifest(server: FaultServer, cases: dict[str, str | None] = CASES) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": list(cases),
            "url": [server.url(p) if p else "" for p in cases.values()],
        }
    )


def _f17k_csv(
    path: Path, server: FaultServer, cases: dict[str, str | None], *, url: bool = True
) -> Path:
    """A table in the Fitzpatrick 17k schema (the loader recognises it by its columns)."""
    frame = pd.DataFrame(
        {
            "md5hash": list(cases),
            "fitzpatrick_scale": ["2"] * len(cases),
            "fitzpatrick_centaur": ["2"] * len(cases),
            "label": ["psoriasis"] * len(cases),
            "nine_partition_label": ["inflammatory"] * len(cases),
            "three_partition_label": ["non-neoplastic"] * len(cases),
            "qc": [""] * len(cases),
            "url": [server.url(p) if p else "" for p in cases.values()],
            "url_alphanum": ["x"] * len(cases),
        }
    )
    if not url:
        frame = frame.drop(columns=["url"])
    frame.to_csv(path, index=False)
    return path


def _rgb_jpeg(path: Path) -> Image.Image:
    with Image.open(path) as image:
        assert (image.format, image.mode) == ("JPEG", "RGB"), path
        image.load()
        return image.copy()


def test_fault_server_report_files_and_resume(server: FaultServer, tmp_path: Path) -> None:
    out = tmp_path / "images"
    manifest = _manifest(server)
    manifest.loc[len(manifest)] = ["refused", f"http://127.0.0.1:{_closed_port()}/x.jpg"]
    manifest.loc[len(manifest)] = ["ftp", "ftp://example.org/x.jpg"]

    report = fetch_images(manifest, out, **FAST)

    assert list(report.columns) == list(REPORT_COLUMNS)
    assert report["image_id"].tolist() == manifest["image_id"].tolist()  # the manifest's order
    rows = report.set_index("image_id")
    status = rows["status"].to_dict()
    assert {i for i, s in status.items() if s == "fetched"} == GOOD_IDS
    assert {i for i, s in status.items() if s == "skipped"} == set()

    def reason(image_id: str) -> str:
        return str(rows.at[image_id, "reason"])

    for image_id in GOOD_IDS:
        assert reason(image_id) == "", image_id
        assert rows.at[image_id, "path"] == str(out / f"{image_id}.jpg")
        assert rows.at[image_id, "bytes"] > 0
    assert rows.at["good", "attempts"] == 1
    assert rows.at["flaky", "attempts"] == 2 and server.count("flaky.jpg") == 2  # 503, then 200
    assert reason("missing") == "HTTP 404 Not Found"
    assert rows.at["missing", "attempts"] == 1 and server.count("missing.jpg") == 1  # never retried
    assert reason("slow").startswith("timed out") and f"{TIMEOUT:g} s" in reason("slow")
    assert rows.at["slow", "attempts"] == RETRIES + 1
    assert "not a readable image" in reason("truncated") and "truncated" in reason("truncated")
    assert "connection broken" in reason("cut")
    assert server.count("cut.jpg") == RETRIES + 1  # a cut transfer is retried
    assert "not a readable image" in reason("html") and "text/html" in reason("html")
    assert reason("tiny") == "image is 16x16 px, smaller than the 32 px minimum side"
    assert reason("busy") == "HTTP 503 Service Unavailable"
    assert server.count("busy.jpg") == RETRIES + 1
    assert reason("nourl") == "no url" and rows.at["nourl", "attempts"] == 0
    assert reason("refused").startswith("cannot connect")
    assert reason("ftp").startswith("not an http(s) URL")
    for image_id, row in rows.iterrows():
        if row["status"] == "failed":
            assert row["path"] == "", image_id

    # Files: only the good ones, all RGB JPEGs, no temporary files left behind.
    stored = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE)
    assert stored == sorted(f"{i}.jpg" for i in GOOD_IDS)
    for image_id in GOOD_IDS:
        _rgb_jpeg(out / f"{image_id}.jpg")
    assert (out / "good.jpg").read_bytes() == GOOD_JPEG  # an RGB JPEG is stored as it came
    assert _rgb_jpeg(out / "alpha.jpg").getpixel((5, 5)) >= (250, 250, 250)  # alpha onto white
    cmyk = _rgb_jpeg(out / "cmyk.jpg").getpixel((10, 10))
    assert cmyk[0] > 200 and cmyk[1] < 100 and cmyk[2] < 100  # cyan-free, magenta+yellow: red

    # Second run: every good image skipped without a single request for it.
    before = Counter(server.hits)
    again = fetch_images(manifest, out, **FAST)
    again_rows = again.set_index("image_id")
    for image_id in GOOD_IDS:
        assert again_rows.at[image_id, "status"] == "skipped", image_id
        assert again_rows.at[image_id, "attempts"] == 0
        assert again_rows.at[image_id, "bytes"] == 0
        assert server.hits[f"/{CASES[image_id]}"] == before[f"/{CASES[image_id]}"], image_id
    assert (again["status"] == "failed").sum() == len(manifest) - len(GOOD_IDS)


def test_damaged_file_is_downloaded_again(server: FaultServer, tmp_path: Path) -> None:
    out = tmp_path / "images"
    out.mkdir()
    (out / "good.jpg").write_bytes(GOOD_JPEG[:300])  # a previous run's truncated copy
    (out / "tiny.jpg").write_bytes(TINY_JPEG)  # valid but under the minimum size
    report = fetch_images(_manifest(server, {"good": "good.jpg", "tiny": "tiny.jpg"}), out, **FAST)
    rows = report.set_index("image_id")
    assert rows.at["good", "status"] == "fetched"
    assert rows.at["good", "reason"] == "replaced an unusable file"
    assert (out / "good.jpg").read_bytes() == GOOD_JPEG
    assert rows.at["tiny", "status"] == "failed"
    assert rows.at["tiny", "reason"] == (
        "image is 16x16 px, smaller than the 32 px minimum side"
        f" (the unusable file at {out / 'tiny.jpg'} is left as it was)"
    )
    assert server.count("good.jpg") == 1


def test_url_column_and_non_string_urls(server: FaultServer, tmp_path: Path) -> None:
    manifest = pd.DataFrame({"image_id": ["a", "b"], "link": [server.url("good.jpg"), np.nan]})
    report = fetch_images(manifest, tmp_path / "out", url_column="link", **FAST)
    assert report["status"].tolist() == ["fetched", "failed"]
    assert report["reason"].tolist() == ["", "no url"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"workers": 0}, "workers must be a whole number >= 1, got 0"),
        ({"workers": 2.5}, "workers must be a whole number >= 1, got 2.5"),
        ({"retries": -1}, "retries must be a whole number >= 0, got -1"),
        ({"min_size": 0}, "min_size must be a whole number >= 1, got 0"),
        ({"timeout": 0}, "timeout must be > 0 seconds, got 0"),
        ({"timeout": float("nan")}, "timeout must be a number of seconds, got nan"),
        ({"backoff": -1.0}, "backoff must be >= 0 seconds, got -1.0"),
        ({"max_bytes": 0}, "max_bytes must be a whole number >= 1, got 0"),
        ({"max_bytes": 1e6}, "max_bytes must be a whole number >= 1, got 1000000.0"),
        ({"deadline": 0}, "deadline must be > 0 seconds, got 0"),
        (
            {"url_column": "link"},
            "the manifest has no 'link' column to download from; columns found: image_id, url",
        ),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, options: dict[str, object], message: str) -> None:
    manifest = pd.DataFrame({"image_id": ["a"], "url": ["http://127.0.0.1:9/a.jpg"]})
    with pytest.raises(DermsynthError) as info:
        fetch_images(manifest, tmp_path / "out", progress=False, **options)  # type: ignore[arg-type]
    assert str(info.value) == message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (["ok", "../escape"], "row 2: image_id '../escape' cannot be a file name"),
        (["a/b"], "row 1: image_id 'a/b' cannot be a file name"),
        ([".."], "row 1: image_id '..' cannot be a file name"),
        (
            ["x", "y", "x"],
            "rows 1 and 3: duplicate image_id 'x'; both would be written to the same file",
        ),
    ],
)
def test_bad_image_ids_are_refused(tmp_path: Path, ids: list[str], message: str) -> None:
    manifest = pd.DataFrame({"image_id": ids, "url": ["http://127.0.0.1:9/a.jpg"] * len(ids)})
    with pytest.raises(DermsynthError, match="^" + message.replace(".", r"\.").replace("(", r"\(")):
        fetch_images(manifest, tmp_path / "out", progress=False)


def test_out_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "images"
    target.write_text("not a folder")
    manifest = pd.DataFrame({"image_id": ["a"], "url": ["http://127.0.0.1:9/a.jpg"]})
    with pytest.raises(DermsynthError) as info:
        fetch_images(manifest, target, progress=False)
    assert (
        str(info.value) == f"{target} is a file, not a folder; give a folder for the images (--out)"
    )


def test_cli_fetch_then_resume(run_cli, server: FaultServer, tmp_path: Path) -> None:
    cases = {"good": "good.jpg", "gray": "gray.jpg", "missing": "missing.jpg"}
    csv = _f17k_csv(tmp_path / "f17k.csv", server, cases)
    out = tmp_path / "images"
    args = ("data", "fetch", "--csv", csv, "--out", out, "--retries", "0", "--timeout", "5")

    first = run_cli(*args)
    assert first.code == 0, first.stderr
    assert "fetched 2, skipped 0 (already there), failed 1" in first.stdout
    report = pd.read_csv(out / "fetch_report.csv", keep_default_na=False)
    assert list(report.columns) == list(REPORT_COLUMNS)
    assert report.set_index("image_id").at["missing", "reason"] == "HTTP 404 Not Found"
    assert "HTTP 404 Not Found" in first.stderr  # failure reasons are summarised

    hits = server.count("good.jpg") + server.count("gray.jpg")
    second = run_cli(*args, "--report", tmp_path / "again.csv")
    assert second.code == 0, second.stderr
    assert "fetched 0, skipped 2 (already there), failed 1" in second.stdout
    assert server.count("good.jpg") + server.count("gray.jpg") == hits


def test_cli_without_url_column(run_cli, server: FaultServer, tmp_path: Path) -> None:
    csv = _f17k_csv(tmp_path / "f17k.csv", server, {"good": "good.jpg"}, url=False)
    result = run_cli("data", "fetch", "--csv", csv, "--out", tmp_path / "images")
    assert result.code == 2
    assert result.stderr == f"error: {csv}: no 'url' column to download from (--url-column)\n"


def test_cli_out_is_a_file(run_cli, server: FaultServer, tmp_path: Path) -> None:
    csv = _f17k_csv(tmp_path / "f17k.csv", server, {"good": "good.jpg"})
    target = tmp_path / "images"
    target.write_text("")
    result = run_cli("data", "fetch", "--csv", csv, "--out", target)
    assert result.code == 2
    assert (
        result.stderr
        == f"error: {target} is a file, not a folder; give a folder for the images (--out)\n"
    )


def test_cli_rejects_zero_workers(run_cli, server: FaultServer, tmp_path: Path) -> None:
    csv = _f17k_csv(tmp_path / "f17k.csv", server, {"good": "good.jpg"})
    result = run_cli("data", "fetch", "--csv", csv, "--out", tmp_path / "o", "--workers", "0")
    assert result.code == 2
    assert result.stderr.startswith("error: Invalid value for '--workers'")
    assert len(result.stderr.strip().splitlines()) == 1


def _images(folder: Path) -> list[str]:
    """Everything in the folder but its lock file: images and any temporary file."""
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK_FILE)


def test_size_cap_from_header_and_from_stream(server: FaultServer, tmp_path: Path) -> None:
    out = tmp_path / "images"
    cases = {"huge": "huge.jpg", "endless": "endless.jpg", "good": "good.jpg"}
    options = {**FAST, "retries": 0}

    # The default cap (50 MB) refuses the 300 MB announcement before reading the body.
    report = fetch_images(_manifest(server, cases), out, **options).set_index("image_id")
    assert report.at["huge", "status"] == "failed"
    assert report.at["huge", "reason"] == "larger than the 50 MB cap (the server announced 300 MB)"
    assert report.at["huge", "bytes"] == 0 and report.at["huge", "attempts"] == 1
    assert report.at["endless", "status"] == "fetched"  # 8 MB without a size: under the cap
    assert report.at["endless", "bytes"] == len(GOOD_JPEG) + ENDLESS_SIZE // len(ZEROS) * len(ZEROS)

    # A 1 MB cap stops the answer without a Content-Length once 1 MB has passed.
    (out / "endless.jpg").unlink()
    capped = fetch_images(_manifest(server, cases), out, **options, max_bytes=1_000_000)
    rows = capped.set_index("image_id")
    assert rows.at["endless", "status"] == "failed"
    assert rows.at["endless", "reason"].startswith(
        "larger than the 1 MB cap (stopped after 1."
    ) and rows.at["endless", "reason"].endswith("MB; the server announced no size)")
    assert 1_000_000 < rows.at["endless", "bytes"] <= 1_000_000 + 64 * 1024
    assert rows.at["endless", "attempts"] == 1 and server.count("endless.jpg") == 2
    assert rows.at["good", "status"] == "skipped"
    assert _images(out) == ["good.jpg"]  # nothing of the refused answers was kept


def test_deadline_cuts_off_a_trickling_server(server: FaultServer, tmp_path: Path) -> None:
    out = tmp_path / "images"
    cases = {"trickle": "trickle.jpg", "later": "later.jpg", "good": "good.jpg"}
    deadline = 1.0

    start = time.monotonic()
    report = fetch_images(_manifest(server, cases), out, **FAST, deadline=deadline)
    took = time.monotonic() - start

    rows = report.set_index("image_id")
    # Each byte comes well within the 1 s read timeout: only the deadline stops this one.
    assert rows.at["trickle", "status"] == "failed"
    assert rows.at["trickle", "reason"] == "deadline of 1 s passed"
    assert rows.at["trickle", "attempts"] == 1
    assert deadline <= rows.at["trickle", "seconds"] < deadline + 1.0
    assert 0 < rows.at["trickle", "bytes"] < 2 * deadline / TRICKLE_EVERY_S
    # A 20 s Retry-After cannot be waited for within the deadline: the worker is let go now.
    assert rows.at["later", "reason"] == (
        "HTTP 503 Service Unavailable; the 1 s deadline leaves no time to try again"
    )
    assert rows.at["later", "attempts"] == 1 and rows.at["later", "seconds"] < deadline
    assert rows.at["good", "status"] == "fetched" and rows.at["good", "seconds"] < deadline
    assert took < deadline + 2.0  # unchecked, the trickle alone would take 5 s
    assert _images(out) == ["good.jpg"]  # no half image under its final name


def test_large_answer_streams_through_disk(server: FaultServer, tmp_path: Path) -> None:
    out = tmp_path / "images"
    tracemalloc.start()
    try:
        report = fetch_images(_manifest(server, {"large": "large.jpg"}), out, **FAST)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    row = report.iloc[0]
    assert row["status"] == "fetched", row["reason"]
    assert row["bytes"] == LARGE_SIZE
    stored = out / "large.jpg"
    assert stored.stat().st_size == LARGE_SIZE
    with stored.open("rb") as handle:
        assert handle.read(len(GOOD_JPEG)) == GOOD_JPEG
    # Holding the answer in memory would need its 42 MB at least once.
    assert peak < LARGE_SIZE / 10, (
        f"peak {peak / 1e6:.1f} MB for a {LARGE_SIZE / 1e6:.0f} MB answer"
    )


def test_killed_run_leftovers_are_removed_and_one_run_at_a_time(
    server: FaultServer, tmp_path: Path
) -> None:
    out = tmp_path / "images"
    out.mkdir()
    # What a run killed while writing good.jpg leaves: a temporary file beside it.
    (out / ".good.jpg.k1ll3d.tmp").write_bytes(GOOD_JPEG[:300])
    (out / "notes").mkdir()
    (out / "notes" / ".draft.txt.x.tmp").write_text("not ours")  # sub-folders are left alone
    manifest = _manifest(server, {"good": "good.jpg"})

    with FolderLock(out, "an image folder"), pytest.raises(DermsynthError, match="is in use"):
        fetch_images(manifest, out, **FAST)
    assert (out / ".good.jpg.k1ll3d.tmp").exists()  # the refused run touched nothing

    report = fetch_images(manifest, out, **FAST)
    assert report["status"].tolist() == ["fetched"]
    assert _images(out) == ["good.jpg", "notes"]
    assert (out / "notes" / ".draft.txt.x.tmp").exists()


def test_cli_cap_and_deadline(run_cli, server: FaultServer, tmp_path: Path) -> None:
    cases = {"good": "good.jpg", "endless": "endless.jpg", "trickle": "trickle.jpg"}
    csv = _f17k_csv(tmp_path / "f17k.csv", server, cases)
    out = tmp_path / "images"
    result = run_cli(
        *("data", "fetch", "--csv", csv, "--out", out, "--retries", "0", "--timeout", "5"),
        *("--max-bytes", "500000", "--deadline", "1"),
    )
    assert result.code == 0, result.stderr
    assert "fetched 1, skipped 0 (already there), failed 2" in result.stdout
    report = pd.read_csv(out / "fetch_report.csv", keep_default_na=False).set_index("image_id")
    assert list(report.reset_index().columns) == list(REPORT_COLUMNS)
    assert {"bytes", "seconds"} <= set(REPORT_COLUMNS)
    assert report.at["endless", "reason"].startswith("larger than the 500 kB cap")
    assert report.at["trickle", "reason"] == "deadline of 1 s passed"
    assert 1.0 <= report.at["trickle", "seconds"] < 2.0
    assert report.at["good", "bytes"] == len(GOOD_JPEG)
    assert "deadline of 1 s passed" in result.stderr
