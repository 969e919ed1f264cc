"""The openai backend, driven by the official client against a fake images-edit server."""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermsynth.data.manifest import load_manifest

pytest.importorskip("openai")


def _parts(body: bytes, content_type: str) -> dict[str, bytes]:
    boundary = content_type.split("boundary=")[1].strip('"').encode()
    fields = {}
    for chunk in body.split(b"--" + boundary):
        head, _, content = chunk.partition(b"\r\n\r\n")
        if b'name="' not in head:
            continue
        name = head.split(b'name="')[1].split(b'"')[0].decode()
        fields[name] = content.removesuffix(b"\r\n")
    return fields


class FakeImages(BaseHTTPRequestHandler):
    """POST /v1/images/edits: 429 once, refuses prompts with 'refuse', 500s on 'broken'."""

    requests: list[dict] = []
    rate_limited = False

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def _reply(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers["content-length"]))
        fields = _parts(body, self.headers["content-type"])
        prompt = fields["prompt"].decode()
        type(self).requests.append(
            {
                "path": self.path,
                "auth": self.headers.get("authorization"),
                **{k: v for k, v in fields.items() if k not in ("image", "mask")},
                "mask": fields.get("mask"),
                "image": fields.get("image"),
            }
        )
        if not type(self).rate_limited:
            type(self).rate_limited = True
            self._reply(
                429,
                {"error": {"message": "Rate limit reached", "type": "requests"}},
                {"retry-after": "0"},
            )
            return
        if "broken" in prompt:
            self._reply(
                500,
                {"error": {"message": "server error", "type": "server_error"}},
                {"retry-after": "0"},
            )
            return
        if "refuse" in prompt:
            self._reply(
                400,
                {
                    "error": {
                        "message": "Your request was rejected as a result of our safety system.",
                        "type": "invalid_request_error",
                        "code": "content_policy_violation",
                    }
                },
            )
            return
        side = int(fields["size"].decode().split("x")[0])
        buffer = io.BytesIO()
        Image.new("RGB", (side, side), (200, 150, 120)).save(buffer, format="PNG")
        item = {"b64_json": base64.b64encode(buffer.getvalue()).decode()}
        self._reply(200, {"created": 0, "data": [item] * int(fields["n"])})


@pytest.fixture
def fake_openai(monkeypatch):
    FakeImages.requests = []
    FakeImages.rate_limited = False
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeImages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}/v1")
    yield FakeImages
    server.shutdown()
    server.server_close()


def _seeds_and_prompts(tmp_path):
    rows, prompts = [], []
    for i, (fst, prompt) in enumerate([(5, ""), (6, "please refuse this"), (1, "broken request")]):
        path = tmp_path / f"s{i}.png"
        Image.fromarray((np.random.default_rng(i).random((60, 80, 3)) * 255).astype("uint8")).save(
            path
        )
        rows.append({"image_id": f"s{i}", "path": str(path), "label": "psoriasis", "fst": fst})
        prompts.append({"image_id": f"s{i}", "prompt": prompt})
    pd.DataFrame(rows).to_csv(tmp_path / "seeds.csv", index=False)
    pd.DataFrame(prompts).to_csv(tmp_path / "prompts.csv", index=False)
    return tmp_path / "seeds.csv", tmp_path / "prompts.csv"


def test_openai_edits_with_retry_refusal_and_server_error(tmp_path, run_cli, fake_openai):
    seeds, prompts = _seeds_and_prompts(tmp_path)
    out = tmp_path / "run"
    result = run_cli(
        "generate",
        "--seeds",
        seeds,
        "--prompts",
        prompts,
        "--backend",
        "openai",
        "--n",
        "2",
        "--resolution",
        "256",
        "--retries",
        "2",
        "--out",
        out,
        "--no-progress",
    )
    assert result.code == 0, result.stderr
    assert "made 2 image(s)" in result.stdout
    assert "2 seed(s) failed: s1 (refused), s2 (error)" in result.stderr

    manifest = load_manifest(out / "manifest.csv")
    assert list(manifest["image_id"]) == ["s0_c00", "s0_c01"]
    row = manifest.iloc[0]
    assert (row["backend"], row["model"], row["device"]) == ("openai", "dall-e-2", "api")
    assert row["prompt"] == "An image of psoriasis on the skin of a dark-skinned person."
    assert row["api_retries"] == "1" and row["api_size"] == "256x256" and row["random_seed"] == ""
    with Image.open(row["path"]) as image:
        assert image.size == (256, 256)
    failures = pd.read_csv(out / "failures.csv")
    assert dict(zip(failures["seed_id"], failures["kind"], strict=True)) == {
        "s1": "refused",
        "s2": "error",
    }

    first = fake_openai.requests[0]
    assert first["path"] == "/v1/images/edits" and first["auth"] == "Bearer sk-test"
    assert first["model"] == b"dall-e-2" and first["n"] == b"2" and first["size"] == b"256x256"
    with Image.open(io.BytesIO(first["mask"])) as mask:
        alpha = np.asarray(mask.getchannel("A"))
    assert mask.mode == "RGBA" and alpha[128, 128] == 255 and alpha[0, 0] == 0  # edit the border
    # 1 rate-limited + 1 ok for s0, 1 refusal for s1, 1 + 2 retries of the 500 for s2.
    assert len(fake_openai.requests) == 6


def test_openai_without_a_key_is_refused_before_any_request(tmp_path, run_cli, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    seeds, _ = _seeds_and_prompts(tmp_path)
    result = run_cli("generate", "--seeds", seeds, "--backend", "openai", "--out", tmp_path / "run")
    assert result.code == 2
    assert "OPENAI_API_KEY" in result.stderr
