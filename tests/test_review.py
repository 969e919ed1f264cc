"""The review page: its API (decisions saved atomically, 4xx for bad requests, no traversal) and
the page itself in a real headless Chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from dermsynth.config import SelectionConfig
from dermsynth.errors import DermsynthError
from dermsynth.select.selection import select_candidates
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
    from fastapi.testclient import TestClient

    from dermsynth.select.review_app import create_app

    with TestClient(create_app(run_dir)) as test_client:
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


@pytest.fixture
def server(run_dir: Path) -> Iterator[str]:
    import uvicorn

    from dermsynth.select.review_app import create_app

    port = _free_port()
    config = uvicorn.Config(create_app(run_dir), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "the review server did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_review_page_in_a_browser(server: str, run_dir: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server + "/")
            page.wait_for_selector(".cand[data-id='s_light_c00']")
            assert page.locator(".cand").count() == 10
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
