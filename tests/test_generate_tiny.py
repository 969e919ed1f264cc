"""`dermsynth generate` end to end on the tiny offline pipeline: modes, provenance, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermsynth.data.manifest import load_manifest

FAST = ["--steps", "2", "--resolution", "32", "--no-progress"]


def make_seeds(tmp_path: Path, count: int = 3) -> Path:
    """A manifest (no split column: every row is a seed) of random images."""
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    rows = []
    for i in range(count):
        path = folder / f"s{i}.png"
        rng = np.random.default_rng(i)
        Image.fromarray((rng.random((72, 96, 3)) * 255).astype("uint8")).save(path)
        rows.append(
            {
                "image_id": f"s{i}",
                "path": str(path),
                "label": "psoriasis",
                "fst": [1, 5, 6, 2, 3, 4][i % 6],
            }
        )
    csv = tmp_path / "seeds.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


@pytest.mark.parametrize("mode", ["inpaint", "img2img", "text2img"])
def test_tiny_backend_drives_every_mode_through_the_cli(tmp_path, run_cli, mode):
    seeds = make_seeds(tmp_path, 2)
    out = tmp_path / "run"
    result = run_cli(
        "generate",
        "--seeds",
        seeds,
        "--backend",
        "tiny",
        "--n",
        "2",
        "--mode",
        mode,
        "--out",
        out,
        *FAST,
    )
    assert result.code == 0, result.stderr
    assert "made 4 image(s)" in result.stdout
    manifest = load_manifest(out / "manifest.csv")
    assert list(manifest["image_id"]) == ["s0_c00", "s0_c01", "s1_c00", "s1_c01"]
    assert set(manifest["origin"]) == {"synthetic"}
    assert list(manifest["parent_id"]) == ["s0", "s0", "s1", "s1"]
    assert list(manifest["fst"]) == [1, 1, 5, 5]
    assert (
        manifest["prompt"].iloc[2] == "An image of psoriasis on the skin of a dark-skinned person."
    )
    row = manifest.iloc[0]
    assert (row["backend"], row["model"], row["mode"], row["steps"]) == ("tiny", "tiny", mode, "2")
    assert row["scheduler"] == "dpm" and row["device"] == "cpu" and row["precision"] == "float32"
    assert int(row["random_seed"]) >= 0 and float(row["seconds"]) > 0
    assert manifest["random_seed"].nunique() == 4
    for path in manifest["path"]:
        with Image.open(path) as image:
            assert image.size == (32, 32)
    assert (out / "seeds" / "s0_crop.png").is_file() and (out / "seeds" / "s0_mask.png").is_file()


def test_saved_pipeline_folder_runs_through_the_diffusers_backend(tmp_path, run_cli):
    from dermsynth.generate.backends.tiny import save_tiny_pipeline

    model = save_tiny_pipeline(tmp_path / "model", "img2img")
    seeds = make_seeds(tmp_path, 1)
    out = tmp_path / "run"
    result = run_cli(
        "generate",
        "--seeds",
        seeds,
        "--backend",
        "diffusers",
        "--model",
        model,
        "--mode",
        "img2img",
        "--scheduler",
        "euler",
        "--strength",
        "0.5",
        "--steps",
        "4",
        "--resolution",
        "32",
        "--n",
        "2",
        "--out",
        out,
        "--no-progress",
    )
    assert result.code == 0, result.stderr
    manifest = load_manifest(out / "manifest.csv")
    assert manifest["model"].iloc[0] == str(model)
    assert manifest["strength"].iloc[0] == "0.5"
    with Image.open(manifest["path"].iloc[0]) as image:
        assert image.size == (32, 32)


def test_one_failing_seed_is_recorded_and_the_others_are_made(tmp_path, run_cli, monkeypatch):
    from dermsynth.generate.backends.base import BackendFailure
    from dermsynth.generate.backends.diffusers_backend import DiffusersBackend

    real_generate = DiffusersBackend.generate

    def flaky(self, jobs):
        if any(j.seed_id == "s1" for j in jobs):
            raise BackendFailure("CUDA out of memory (simulated)")
        return real_generate(self, jobs)

    seeds = make_seeds(tmp_path, 3)
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(DiffusersBackend, "generate", flaky)
        result = run_cli(
            "generate", "--seeds", seeds, "--backend", "tiny", "--n", "2", "--out", out, *FAST
        )
    assert result.code == 0, result.stderr
    assert "1 seed(s) failed: s1 (error)" in result.stderr
    failures = pd.read_csv(out / "failures.csv")
    assert list(failures["seed_id"]) == ["s1"] and "out of memory" in failures["message"][0]
    assert list(load_manifest(out / "manifest.csv")["parent_id"]) == ["s0", "s0", "s2", "s2"]

    # The same command again makes only the failed seed's images.
    result = run_cli(
        "generate", "--seeds", seeds, "--backend", "tiny", "--n", "2", "--out", out, *FAST
    )
    assert result.code == 0, result.stderr
    assert "made 2 image(s), 4 already there" in result.stdout
    assert not (out / "failures.csv").exists()
    assert len(load_manifest(out / "manifest.csv")) == 6


def test_changed_settings_do_not_mix_into_an_existing_run(tmp_path, run_cli):
    seeds = make_seeds(tmp_path, 1)
    out = tmp_path / "run"
    assert (
        run_cli(
            "generate", "--seeds", seeds, "--backend", "tiny", "--n", "1", "--out", out, *FAST
        ).code
        == 0
    )
    result = run_cli(
        "generate",
        "--seeds",
        seeds,
        "--backend",
        "tiny",
        "--n",
        "1",
        "--out",
        out,
        "--steps",
        "3",
        "--resolution",
        "32",
        "--no-progress",
    )
    assert result.code == 2
    assert "other settings (steps: 2 -> 3)" in result.stderr


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("*") if p.is_file()
    }


@pytest.mark.slow
def test_killed_run_resumes_with_exactly_the_missing_images(tmp_path, run_cli):
    seeds = make_seeds(tmp_path, 4)
    out = tmp_path / "run"
    args = [
        "generate",
        "--seeds",
        str(seeds),
        "--backend",
        "tiny",
        "--n",
        "3",
        "--batch-size",
        "1",
        "--steps",
        "2",
        "--resolution",
        "32",
        "--no-progress",
    ]
    process = subprocess.Popen(
        [sys.executable, "-c", "from dermsynth.cli import main; main()", *args, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if len(list((out / "candidates").glob("*.json"))) >= 2:
            break
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = _files(out / "candidates")
    images_before = _files(out / "images")
    assert 2 <= len(before) < 12, "the run must be killed midway"
    assert not (out / "manifest.csv").exists()

    result = run_cli(*args, "--out", out)
    assert result.code == 0, result.stderr
    assert f"made {12 - len(before)} image(s), {len(before)} already there" in result.stdout
    after = _files(out / "candidates")
    assert len(after) == 12
    assert all(after[name] == stamp for name, stamp in before.items())  # none made twice
    images_after = _files(out / "images")
    assert all(
        images_after[n] == images_before[n]
        for n in images_before
        if n.replace(".png", ".json") in before
    )
    assert sorted(images_after) == sorted(n.replace(".json", ".png") for n in after)
    assert not list(out.rglob("*.tmp"))
    manifest = load_manifest(out / "manifest.csv")
    assert len(manifest) == 12 and manifest["image_id"].is_unique

    # Same random seed, same device: an uninterrupted run makes the same pixels (seed s0 here).
    one_seed = tmp_path / "one_seed.csv"
    pd.read_csv(seeds).head(1).to_csv(one_seed, index=False)
    clean = tmp_path / "clean"
    clean_args = [one_seed if a == str(seeds) else a for a in args]
    assert run_cli(*clean_args, "--out", clean).code == 0
    for image_id in ["s0_c00", "s0_c01", "s0_c02"]:
        a = np.asarray(Image.open(out / "images" / f"{image_id}.png"))
        b = np.asarray(Image.open(clean / "images" / f"{image_id}.png"))
        assert np.array_equal(a, b), image_id
    sidecar = json.loads((clean / "candidates" / "s0_c00.json").read_text())
    assert sidecar["random_seed"] == int(manifest["random_seed"].iloc[0])


def test_unreachable_hub_id_names_both_ways_to_give_a_model(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seeds = make_seeds(tmp_path, 1)
    result = run_cli(
        "generate",
        "--seeds",
        seeds,
        "--backend",
        "diffusers",
        "--model",
        "dermsynth-test/no-such-model",
        "--out",
        tmp_path / "run",
        *FAST,
    )
    assert result.code == 2
    assert "cannot load model 'dermsynth-test/no-such-model'" in result.stderr
    assert "hub id" in result.stderr and "local folder" in result.stderr
