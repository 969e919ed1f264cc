"""The review server on a study: every image shown, the page's "trains" the study's own rule,
one server per folder, and a server that answers only this machine, within limits, and never
repeats what it was sent."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

import dermsynth
from dermsynth.io import FolderLock
from dermsynth.select.selection import training_selection
from test_review import (
    BASE,
    STUDY_SEEDS,
    _free_port,
    live_server,
    make_study_selection,
    review_client,
)

pytest.importorskip("fastapi", reason="the review page needs the 'review' extra (fastapi, uvicorn)")

SRC = Path(dermsynth.__file__).resolve().parents[1]
MARK = "<b>MARK-7f3a</b>"


@pytest.fixture
def study_selection(tmp_path: Path) -> Path:
    return make_study_selection(tmp_path)


def _state(client) -> dict:  # type: ignore[no-untyped-def]
    reply = client.get("/api/state")
    assert reply.status_code == 200
    return reply.json()


def _assert_every_image_served(client, state: dict) -> int:  # type: ignore[no-untyped-def]
    urls = []
    for seed in state["seeds"]:
        urls += [seed["seed_image"], seed["contact_sheet"]]
        urls += [c["image"] for c in seed["candidates"]]
    assert None not in urls, urls
    for url in urls:
        reply = client.get(url)
        assert reply.status_code == 200, url
        assert reply.headers["content-type"] == "image/png" and reply.content[:4] == b"\x89PNG"
    return len(urls)


def test_a_study_selection_folder_shows_every_image(study_selection: Path) -> None:
    with review_client(study_selection) as client:
        state = _state(client)
        assert [s["seed_id"] for s in state["seeds"]] == list(STUDY_SEEDS)
        assert _assert_every_image_served(client, state) == 2 * (5 + 2)
        # Served from the study folder: the candidates' URLs point into generation/.
        first = state["seeds"][0]["candidates"][0]["image"]
        assert first == "/files/generation/train_1-2/psoriasis/images/seedA_c00.png"


def test_a_plain_generate_folder_shows_every_image(tmp_path: Path) -> None:
    from dermsynth.config import SelectionConfig
    from dermsynth.select.selection import select_candidates
    from test_select_cli import make_candidate_run

    paths = make_candidate_run(tmp_path)
    select_candidates(
        paths["manifest"], paths["run"] / "selected.csv", options=SelectionConfig(k=2)
    )
    with review_client(paths["run"]) as client:
        assert _assert_every_image_served(client, _state(client)) == 2 * (5 + 2)


def test_nothing_outside_the_study_is_served(study_selection: Path) -> None:
    study = study_selection.parents[2]
    outside = study.parent / "secret.png"
    manifest = study_selection / "selected.csv"
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    frame.loc[frame["image_id"] == "seedA_c01", "path"] = str(outside)
    frame.loc[frame["image_id"] == "seedA_c02", "path"] = "../../../../secret.png"
    frame.to_csv(manifest, index=False)
    (study / "link.png").symlink_to(outside)
    with review_client(study_selection) as client:
        images = {c["image_id"]: c["image"] for c in _state(client)["seeds"][0]["candidates"]}
        assert images["seedA_c01"] is None and images["seedA_c02"] is None
        assert images["seedA_c00"] is not None
        # (A plain '/files/../' never reaches the route: the client resolves it first.)
        for path in ("/files/..%2Fsecret.png", "/files/%2e%2e/secret.png", "/files/link.png"):
            assert client.get(path).status_code == 403, path
        # Inside the root but not an image: not served either.
        assert client.get("/files/study.json").status_code == 404


def _trains(state: dict) -> dict[str, bool]:
    return {c["image_id"]: c["trains"] for s in state["seeds"] for c in s["candidates"]}


def _notes(state: dict) -> dict[str, list[str]]:
    return {s["seed_id"]: s["notes"] for s in state["seeds"]}


def _study_trains(folder: Path, k: int) -> set[str]:
    frame = pd.read_csv(folder / "selected.csv", dtype=str, keep_default_na=False)
    return set(training_selection(frame, k)["image_id"])


def test_trains_is_what_the_study_trains_on(study_selection: Path) -> None:
    with review_client(study_selection) as client:
        state = _state(client)
        assert state["k"] == 2 and not any(_notes(state).values())
        assert {i for i, t in _trains(state).items() if t} == _study_trains(study_selection, 2)

        reply = client.post("/api/decision", json={"image_id": "seedA_c00", "decision": "reject"})
        assert reply.json()["trains"] is False and reply.json()["reviewed"] == "rejected"
        state = _state(client)
        assert _trains(state)["seedA_c02"] and not _trains(state)["seedA_c00"]
        assert _notes(state)["seedA"] == ["#3 trains in place of rejected #1"]
        seed_a = {c["image_id"]: c for c in state["seeds"][0]["candidates"]}
        assert seed_a["seedA_c02"]["in_place_of"] == "rejected #1"
        assert {i for i, t in _trains(state).items() if t} == _study_trains(study_selection, 2)

        # An accepted #4 goes ahead of the rest; the excluded #5 never trains, accepted or not.
        client.post("/api/decision", json={"image_id": "seedA_c03", "decision": "accept"})
        client.post("/api/decision", json={"image_id": "seedA_c04", "decision": "accept"})
        state = _state(client)
        trained = {i for i, t in _trains(state).items() if t}
        assert {i for i in trained if i.startswith("seedA")} == {"seedA_c03", "seedA_c01"}
        assert _notes(state)["seedA"] == ["accepted #4 trains in place of rejected #1"]
        assert trained == _study_trains(study_selection, 2)

        # Reject every usable candidate of seedB: nothing left to take their place.
        for c in range(4):
            client.post("/api/decision", json={"image_id": f"seedB_c0{c}", "decision": "reject"})
        state = _state(client)
        assert state["seeds"][1]["n_train"] == 0
        assert _notes(state)["seedB"] == [
            "rejected #1 does not train and no candidate is left to replace it",
            "rejected #2 does not train and no candidate is left to replace it",
        ]


def test_k_comes_from_selection_json_else_the_selected_count(tmp_path: Path) -> None:
    folder = make_study_selection(tmp_path, k=None)
    with review_client(folder) as client:
        assert _state(client)["k"] == 2
    (folder / "selection.json").write_text(json.dumps({"manifest": "selected.csv", "k": 3}))
    with review_client(folder) as client:
        state = _state(client)
        assert state["k"] == 3 and [s["n_train"] for s in state["seeds"]] == [3, 3]
        assert _notes(state)["seedA"] == ["#3 trains"]


ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}


def _serve_cli(folder: Path, port: int | str) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from dermsynth.cli import main; main()",
        "review",
        str(folder),
        "--port",
        str(port),
    ]


def _refused(folder: Path, port: int | str) -> subprocess.CompletedProcess[str]:
    """`dermsynth review` expected to stop at once (a server that starts instead times out)."""
    return subprocess.run(
        _serve_cli(folder, port), env=ENV, capture_output=True, text=True, timeout=30
    )


def _wait_until_serving(process: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/state", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"the first review server did not start: {process.communicate(timeout=5)}")


def test_a_second_review_server_on_the_folder_is_refused(study_selection: Path) -> None:
    port = _free_port()
    first = subprocess.Popen(
        _serve_cli(study_selection, port),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until_serving(first, port)
        second = _refused(study_selection, _free_port())
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in second.stderr
        assert f"in use by another dermsynth process {first.pid}" in lines[0]
        assert "a review page" in lines[0]
        assert first.poll() is None  # the first one still serves
    finally:
        first.terminate()
        first.wait(timeout=15)
    with FolderLock(study_selection):  # free again once the server stopped
        pass


def test_review_command_refused_while_the_folder_is_locked(study_selection: Path) -> None:
    with FolderLock(study_selection, "a review page"):
        res = _refused(study_selection, _free_port())
    assert res.returncode == 2 and f"process {os.getpid()}" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("port", ["0", "70000", "-5"])
def test_review_command_refuses_a_bad_port(study_selection: Path, port: str) -> None:
    res = _refused(study_selection, port)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == f"error: --port {port}: a port must be 1..65535 (default 8765)"


def test_review_command_refuses_a_port_in_use(study_selection: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = _refused(study_selection, port)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert f"port {port} on 127.0.0.1 is in use" in res.stderr
    with FolderLock(study_selection):  # the refused server let the folder go
        pass


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8765", "127.0.0.1.evil.example", "localhost.evil:80"]
)
def test_a_foreign_host_header_is_refused(study_selection: Path, host: str) -> None:
    with review_client(study_selection) as client:
        for request in (
            lambda: client.get("/api/state", headers={"host": host}),
            lambda: client.get("/", headers={"host": host}),
            lambda: client.post(
                "/api/decision",
                json={"image_id": "seedA_c00", "decision": "reject"},
                headers={"host": host},
            ),
        ):
            reply = request()
            assert reply.status_code == 400 and reply.text == "Invalid host header"
    frame = pd.read_csv(study_selection / "selected.csv", dtype=str, keep_default_na=False)
    assert (frame["reviewed"] == "").all()


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:8765", "127.0.0.1", "127.0.0.1:9000", "[::1]", "[::1]:8765"]
)
def test_this_machine_is_answered(study_selection: Path, host: str) -> None:
    with review_client(study_selection) as client:
        assert client.get("/api/state", headers={"host": host}).status_code == 200


def test_the_bound_address_is_answered(study_selection: Path) -> None:
    from fastapi.testclient import TestClient

    from dermsynth.select.review_app import create_app

    app = create_app(study_selection, host="192.168.1.20")
    with TestClient(app, base_url="http://192.168.1.20:8765") as client:
        assert client.get("/api/state").status_code == 200
        assert client.get("/api/state", headers={"host": "192.168.1.21"}).status_code == 400


def test_a_large_body_is_refused(study_selection: Path) -> None:
    with review_client(study_selection) as client:
        body = json.dumps({"image_id": "x" * 100_000, "decision": "accept"})
        reply = client.post(
            "/api/decision", content=body, headers={"content-type": "application/json"}
        )
        assert reply.status_code == 413 and "xxxx" not in reply.text


def test_a_large_body_is_refused_before_it_is_sent(study_selection: Path) -> None:
    # Only the headers go out: a server that waited for the 50 MB would never answer.
    with live_server(study_selection) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(
                b"POST /api/decision HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n{"
            )
            answer = conn.recv(4096).decode("latin-1")
    assert answer.startswith("HTTP/1.1 413"), answer


def test_errors_never_repeat_the_request(study_selection: Path) -> None:
    with review_client(study_selection) as client:
        replies = [
            client.post("/api/decision", json={"image_id": MARK, "decision": "accept"}),
            client.post("/api/decision", json={"image_id": "seedA_c00", "decision": MARK}),
            client.post(
                "/api/decision", json={"image_id": "seedA_c00", "decision": "accept", MARK: 1}
            ),
            client.post(
                "/api/decision",
                content="{" + MARK,
                headers={"content-type": "application/json"},
            ),
            client.get(f"/files/{MARK}.png"),
        ]
        assert [r.status_code for r in replies] == [404, 422, 422, 422, 404]
        for reply in replies:
            assert "MARK" not in reply.text, reply.text
        # A page elsewhere can post only "simple" bodies (text/plain): never read as JSON.
        reply = client.post(
            "/api/decision",
            content=json.dumps({"image_id": "seedA_c00", "decision": "reject"}),
            headers={"content-type": "text/plain"},
        )
        assert reply.status_code == 422
    frame = pd.read_csv(study_selection / "selected.csv", dtype=str, keep_default_na=False)
    assert (frame["reviewed"] == "").all()


def test_allowed_hosts_and_page_url() -> None:
    from dermsynth.select.review_app import allowed_hosts, page_url

    assert BASE.split("//")[1].split(":")[0] in allowed_hosts("127.0.0.1")
    assert allowed_hosts("::1") == ["localhost", "127.0.0.1", "[::1]"]
    assert page_url("::1", 8765) == "http://[::1]:8765/"
