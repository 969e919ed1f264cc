"""Benchmark: peak resident memory of ``fetch_images`` for one large answer.

A loopback HTTP server in a thread answers with a valid JPEG followed by ``--mb`` megabytes of
padding, sent in 64 KiB chunks from one buffer (the server itself holds no copy of the answer).
Peak RSS (``getrusage``) is read after the imports and the server start, and again after the
download; the difference is what the download added. Run it against another checkout to
compare (``PYTHONPATH=<other>/src``): a version without ``max_bytes`` is called without it.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_fetch_memory.py --mb 300
"""

from __future__ import annotations

import argparse
import inspect
import io
import resource
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
from PIL import Image

from dermsynth.data.fetch import fetch_images

CHUNK = bytes(64 * 1024)


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), (180, 120, 90)).save(buffer, "JPEG")
    return buffer.getvalue()


def _serve(head: bytes, chunks: int) -> ThreadingHTTPServer:
    """A server whose every answer is ``head`` and ``chunks`` chunks of zeros."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(head) + chunks * len(CHUNK)))
            self.end_headers()
            self.wfile.write(head)
            for _ in range(chunks):
                self.wfile.write(CHUNK)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def _peak_mb() -> float:
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e6


def main() -> None:
    """Download one ``--mb`` MB answer and print the peak RSS it added."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=300, help="Size of the answer, in MB.")
    args = parser.parse_args()
    head = _jpeg()
    chunks = args.mb * 1_000_000 // len(CHUNK)
    size = len(head) + chunks * len(CHUNK)
    httpd = _serve(head, chunks)
    url = f"http://127.0.0.1:{httpd.server_address[1]}/large.jpg"
    options: dict[str, object] = {"progress": False, "retries": 0}
    if "max_bytes" in inspect.signature(fetch_images).parameters:
        options["max_bytes"] = size  # the default cap would refuse the answer
    with tempfile.TemporaryDirectory() as tmp:
        before = _peak_mb()
        start = time.perf_counter()
        report = fetch_images(pd.DataFrame({"image_id": ["a"], "url": [url]}), tmp, **options)
        seconds = time.perf_counter() - start
        after = _peak_mb()
        stored = (Path(tmp) / "a.jpg").stat().st_size
    httpd.shutdown()
    print(
        f"answer {size / 1e6:.1f} MB: status {report.at[0, 'status']}, stored {stored / 1e6:.1f} "
        f"MB in {seconds:.2f} s; peak RSS {before:.0f} MB before, {after:.0f} MB after "
        f"(+{after - before:.0f} MB)"
    )


if __name__ == "__main__":
    main()
