"""The review page: its API (decisions saved atomically, 4xx for bad requests, no traversal) and
the page itself in a real headless Chromium driven by Playwright, on a plain folder of
`dermsynth select` and on a study's selection folder."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermsynth.config import SelectionConfig
from dermsynth.errors import DermsynthError
from dermsynth.select.selection import select_candidates
from dermsynth.study import layout
from test_select_cli import make_candidate_run

pytest.importorskip("fastapi", reason="the review page needs the 'review' extra (fastapi, uvicorn)")

CHROMIUM = os.environ.get("DERMSYNTH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The address the test client and the live server are reached at: one the server accepts.
BASE = "http://127.0.0.1:8765"
DIRECTION, CONDITION = "train_1-2", "psoriasis"
STUDY_SEEDS = ("seedA", "seedB")


def _png(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((24, 24, 3), value, dtype=np.uint8)).save(path)
    return path


def make_study_selection(root: Path, *, k: int | None = 2) -> Path:
    """A study folder as `dermsynth study run` leaves it, written by hand: 2 seeds x 5
    candidates under generation/, their selection (k per seed; #5 excluded) under selection/.

    Paths are stored every way a manifest may hold them: absolute (seedA's candidates,
    seedB's crop), relative to the study folder (seedA's crop, seedB's candidates) and
    relative to the manifest's folder (seedB_c00). Returns the selection folder.
    """
    study = root / "study"
    study.mkdir(parents=True)
    (study / layout.STUDY_FILE).write_text(json.dumps({"config": {}, "fingerprint": "test"}))
    generation = layout.generation_dir(study, DIRECTION, CONDITION)
    selected = layout.selection_path(study, DIRECTION, CONDITION)
    selected.parent.mkdir(parents=True)
    rows = []
    for s, seed_id in enumerate(STUDY_SEEDS):
        crop = _png(generation / "seeds" / f"{seed_id}_crop.png", 40 + s)
        _png(selected.parent / "contact_sheets" / f"{seed_id}.png", 200 + s)
        for c in range(5):
            image_id = f"{seed_id}_c{c:02d}"
            png = _png(generation / "images" / f"{image_id}.png", 60 + 10 * c + s)
            path = str(png) if s == 0 else png.relative_to(study).as_posix()
            if image_id == "seedB_c00":
                path = os.path.relpath(png, selected.parent)
            rank = "" if c == 4 else str(c + 1)
            rows.append(
                {
                    "image_id": image_id,
                    "path": path,
                    "label": CONDITION,
                    "fst": 5,
                    "origin": "synthetic",
                    "parent_id": seed_id,
                    "seed_crop": crop.relative_to(study).as_posix() if s == 0 else str(crop),
                    "score": round(0.9 - 0.1 * c, 2),
                    "excluded": c == 4,
                    "rank": rank,
                    "selected": c < 2,
                    "reviewed": "",
                    "final": c < 2,
                    "reason": "excluded: leakage" if c == 4 else f"rank {rank}",
                }
            )
    pd.DataFrame(rows).to_csv(selected, index=False)
    info: dict[str, Any] = {"manifest": selected.name}
    if k is not None:
        info["k"] = k
    (selected.parent / "selection.json").write_text(json.dumps(info))
    (root / "secret.png").write_bytes((study / rows[0]["path"]).read_bytes())
    return selected.parent


@pytest.fixture
def study_selection(tmp_path: Path) -> Path:
    return make_study_selection(tmp_path)


def review_client(folder: Path):  # type: ignore[no-untyped-def]
    """A test client of the review app over ``folder``, reached at an address it accepts."""
    from fastapi.testclient import TestClient

    from dermsynth.select.review_app import create_app

    return TestClient(create_app(folder), base_url=BASE)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    paths = make_candidate_run(tmp_path)
    select_candidates(
        paths["manifest"],
        paths["run"] / "selected.csv",
        options=SelectionConfig(k=2),
        test_csv=paths["plan"],
    )
    (tmp_path / "secret.txt").write_text("TOP-SECRET")
    return paths["run"]


@pytest.fixture
def client(run_dir: Path):  # type: ignore[no-untyped-def]
    with review_client(run_dir) as test_client:
        yield test_client


def _reviewed(run_dir: Path) -> dict[str, str]:
    frame = pd.read_csv(run_dir / "selected.csv", dtype=str, keep_default_na=False)
    return dict(zip(frame["image_id"], frame["reviewed"], strict=True))


def test_state_and_decisions_are_saved(client, run_dir: Path) -> None:  # type: ignore[no-untyped-def]
    state = client.get("/api/state").json()
    assert [s["seed_id"] for s in state["seeds"]] == ["s_light", "s_dark"]
    first = state["seeds"][0]
    assert len(first["candidates"]) == 5 and first["seed_image"].startswith("/files/")
    assert client.get(first["candidates"][0]["image"]).status_code == 200
    assert client.get(first["contact_sheet"]).status_code == 200

    reply = client.post("/api/decision", json={"image_id": "s_light_c03", "decision": "accept"})
    assert reply.status_code == 200
    assert reply.json()["reviewed"] == "accepted" and reply.json()["final"] is True
    client.post("/api/decision", json={"image_id": "s_light_c00", "decision": "reject"})
    assert _reviewed(run_dir)["s_light_c03"] == "accepted"
    assert _reviewed(run_dir)["s_light_c00"] == "rejected"
    frame = pd.read_csv(run_dir / "selected.csv").set_index("image_id")
    assert not frame.loc["s_light_c00", "final"] and frame.loc["s_light_c03", "final"]
    reply = client.post("/api/decision", json={"image_id": "s_light_c00", "decision": "reset"})
    assert reply.json()["reviewed"] == "" and reply.json()["final"] == reply.json()["selected"]
    # No temporary files left beside the manifest.
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_bad_requests_get_4xx(client) -> None:  # type: ignore[no-untyped-def]
    assert (
        client.post("/api/decision", json={"image_id": "nope", "decision": "accept"}).status_code
        == 404
    )
    assert (
        client.post(
            "/api/decision", json={"image_id": "s_light_c00", "decision": "love"}
        ).status_code
        == 422
    )
    assert client.post("/api/decision", json={"decision": "accept"}).status_code == 422
    assert (
        client.post(
            "/api/decision", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )
    assert client.get("/api/decision").status_code == 405


@pytest.mark.parametrize(
    "path",
    [
        "/files/../secret.txt",
        "/files/..%2Fsecret.txt",
        "/files/%2e%2e/secret.txt",
        "/files/images/../../secret.txt",
        "/files//etc/passwd",
        "/files/nothing.png",
    ],
)
def test_files_outside_the_run_are_refused(client, path: str) -> None:  # type: ignore[no-untyped-def]
    reply = client.get(path)
    assert reply.status_code in (403, 404)
    assert "TOP-SECRET" not in reply.text and "root:" not in reply.text


def test_symlink_out_of_the_run_is_refused(client, run_dir: Path) -> None:  # type: ignore[no-untyped-def]
    (run_dir / "link.txt").symlink_to(run_dir.parent / "secret.txt")
    assert client.get("/files/link.txt").status_code == 403


def test_missing_manifest_and_outside_manifest(tmp_path: Path) -> None:
    from dermsynth.select.review_app import manifest_path

    with pytest.raises(DermsynthError, match="no selected manifest"):
        manifest_path(tmp_path)
    with pytest.raises(DermsynthError, match="outside the run folder"):
        manifest_path(tmp_path, "../x.csv")
    with pytest.raises(DermsynthError, match="no such run folder"):
        manifest_path(tmp_path / "absent")


def test_review_command_refuses_a_folder_without_selection(run_cli, tmp_path: Path) -> None:
    res = run_cli("review", tmp_path)
    assert res.code == 2 and "no selected manifest" in res.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def live_server(folder: Path) -> Iterator[str]:
    """The review app of ``folder`` served by uvicorn on a free port (a thread); its URL."""
    import uvicorn

    from dermsynth.select.review_app import create_app

    port = _free_port()
    config = uvicorn.Config(create_app(folder), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "the review server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def server(run_dir: Path) -> Iterator[str]:
    with live_server(run_dir) as url:
        yield url


def _chromium():  # type: ignore[no-untyped-def]
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    return sync_api


ALL_IMAGES_SHOWN = """(n) => {
  const images = Array.from(document.images);
  return images.length === n && images.every(i => i.complete && i.naturalWidth > 0);
}"""


def _wait_for_images(page, n: int) -> None:  # type: ignore[no-untyped-def]
    # Lazy images load once near the viewport: a tall window holds the whole page.
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.wait_for_function(ALL_IMAGES_SHOWN, arg=n, timeout=10_000)


def test_review_page_in_a_browser(server: str, run_dir: Path) -> None:
    sync_api = _chromium()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 2400})
            page.goto(server + "/")
            page.wait_for_selector(".cand[data-id='s_light_c00']")
            assert page.locator(".cand").count() == 10
            _wait_for_images(page, 12)  # 10 candidates and 2 seeds
            # Accept two by button and by keyboard, reject one by keyboard.
            page.click(".cand[data-id='s_light_c03'] button[data-action='accept']")
            page.wait_for_selector(".cand[data-id='s_light_c03'][data-reviewed='accepted']")
            page.click(".cand[data-id='s_dark_c02'] img")
            page.keyboard.press("a")
            page.wait_for_selector(".cand[data-id='s_dark_c02'][data-reviewed='accepted']")
            page.click(".cand[data-id='s_light_c00'] img")
            page.keyboard.press("r")
            page.wait_for_selector(".cand[data-id='s_light_c00'][data-reviewed='rejected']")

            decisions = _reviewed(run_dir)
            assert decisions["s_light_c03"] == "accepted" and decisions["s_dark_c02"] == "accepted"
            assert decisions["s_light_c00"] == "rejected"

            page.reload()
            page.wait_for_selector(
                ".cand[data-id='s_light_c03'][data-reviewed='accepted'][data-final='true']"
            )
            assert (
                page.locator(".cand[data-id='s_light_c00']").get_attribute("data-final") == "false"
            )
            # A second tab sees the same decisions.
            other = browser.new_page()
            other.goto(server + "/")
            other.wait_for_selector(".cand[data-id='s_dark_c02'][data-reviewed='accepted']")
            # Traversal from the browser is refused too.
            for path in ("/files/../secret.txt", "/files/%2e%2e/secret.txt"):
                reply = page.request.get(server + path)
                assert reply.status in (403, 404), path
                assert "TOP-SECRET" not in reply.text()
        finally:
            browser.close()


def test_reselecting_keeps_review_decisions(client, run_dir: Path) -> None:  # type: ignore[no-untyped-def]
    client.post("/api/decision", json={"image_id": "s_dark_c03", "decision": "accept"})
    result = select_candidates(
        run_dir / "manifest.csv",
        run_dir / "selected.csv",
        options=SelectionConfig(k=2, contact_sheets=False),
    )
    assert any("kept 1 review decision" in n for n in result.notes)
    row = result.manifest.set_index("image_id").loc["s_dark_c03"]
    assert row["reviewed"] == "accepted" and bool(row["final"])


def test_review_page_of_a_study_in_a_browser(study_selection: Path) -> None:
    sync_api = _chromium()
    with live_server(study_selection) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 2400})
            page.goto(url + "/")
            page.wait_for_selector(".cand[data-id='seedA_c00'][data-trains='true']")
            # Every candidate and every seed image comes from generation/, outside the folder.
            _wait_for_images(page, 12)
            assert page.locator(".cand[data-trains='true']").count() == 4
            # Rejecting seedA's best pulls in its #3, and the page says so.
            page.click(".cand[data-id='seedA_c00'] img")
            page.keyboard.press("r")
            page.wait_for_selector(".cand[data-id='seedA_c02'][data-trains='true']")
            assert (
                page.locator(".cand[data-id='seedA_c00']").get_attribute("data-trains") == "false"
            )
            note = page.locator(".seed[data-seed='seedA'] .note").inner_text()
            assert note == "#3 trains in place of rejected #1"
            assert (
                "trains in place of rejected #1"
                in page.locator(".cand[data-id='seedA_c02'] .trainflag").inner_text()
            )
            assert page.locator(".seed[data-seed='seedB'] .note").count() == 0
            _wait_for_images(page, 12)
        finally:
            browser.close()
