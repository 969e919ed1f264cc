"""The demo generator: training, the shipped weights, and `generate --backend demo` end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage.color import rgb2lab

from dermsynth.data.manifest import load_manifest
from dermsynth.data.simulate import simulate_dataset
from dermsynth.generate.demo_model import (
    SHIPPED_MODEL,
    DemoGenerator,
    read_meta,
    train_demo_generator,
)

TINY_TRAIN = ["--resolution", "16", "--batch-size", "8", "--learning-rate", "3e-3", "--no-progress"]
DEMO_FAST = ["--backend", "demo", "--steps", "10", "--guidance", "2", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """A tiny simulated set (one image per condition x FST cell) as a manifest."""
    folder = tmp_path_factory.mktemp("sim")
    csv = simulate_dataset(
        folder, scale=0.01, image_size=64, random_seed=5, workers=1, progress=False
    )
    return load_manifest(csv)


@pytest.fixture(scope="module")
def shipped() -> DemoGenerator:
    return DemoGenerator.load()


def _seeds(tiny_data: pd.DataFrame, folder, fsts=(5, 6), count: int = 2):
    seeds = tiny_data[tiny_data["fst"].isin(fsts)].head(count)
    path = folder / "seeds.csv"
    seeds.to_csv(path, index=False)
    return path


def test_train_demo_learns_and_writes_a_loadable_folder(tmp_path, run_cli, tiny_data):
    csv = tmp_path / "manifest.csv"
    tiny_data.to_csv(csv, index=False)
    out = tmp_path / "model"
    result = run_cli(
        "generator", "train-demo", "--data", csv, "--out", out, "--steps", "40", *TINY_TRAIN
    )
    assert result.code == 0, result.stderr
    assert "wrote" in result.stdout and "--backend demo" in result.stdout
    meta = read_meta(out)
    curve = [loss for _, loss in meta["loss_curve"]]
    assert np.mean(curve[-5:]) < 0.8 * np.mean(curve[:5])
    assert meta["data"]["images"] == len(tiny_data)
    assert len(meta["conditions"]) == 7 and meta["resolution"] == 16
    assert len(meta["data_fingerprint"]) == 64
    assert (out / "README.txt").read_text().count("dermsynth generator train-demo") == 1
    assert not list(tmp_path.glob(".model.*")), "no temporary or partial folder is left"
    model = DemoGenerator.load(out)
    images = model.generate(["psoriasis", "folliculitis"], [1, 6], [0, 1], steps=3)
    assert [im.size for im in images] == [(16, 16), (16, 16)]

    # The same command again finds the folder trained and returns at once.
    stamp = (out / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert (
        run_cli(
            "generator", "train-demo", "--data", csv, "--out", out, "--steps", "40", *TINY_TRAIN
        ).code
        == 0
    )
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp


def test_training_uses_only_train_rows_and_resumes_exactly(tmp_path, tiny_data, monkeypatch):
    plan = tiny_data.copy()
    plan["split"] = np.where(
        plan["fst"].isin([1, 2]), "train", np.where(plan["fst"] == 6, "seed", "test")
    )
    csv = tmp_path / "plan.csv"
    plan.to_csv(csv, index=False)
    kwargs = {"resolution": 16, "steps": 12, "batch_size": 4, "learning_rate": 3e-3}
    kwargs |= {"checkpoint_every": 5, "progress": False}
    whole = train_demo_generator(csv, tmp_path / "whole", **kwargs)
    meta = read_meta(whole)
    assert meta["data"]["images"] == int((plan["split"] == "train").sum())
    assert set(meta["data"]["per_fst"]) == {"1", "2"}

    # Interrupt a second run at step 8 (after the checkpoint at 5), then run it again.
    calls = {"n": 0}
    real_clip = torch.nn.utils.clip_grad_norm_

    def interrupt(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return real_clip(*args, **kw)

    with monkeypatch.context() as patch:
        patch.setattr(torch.nn.utils, "clip_grad_norm_", interrupt)
        with pytest.raises(KeyboardInterrupt):
            train_demo_generator(csv, tmp_path / "resumed", **kwargs)
    assert (tmp_path / ".resumed.partial" / "checkpoint.pt").is_file()
    assert not (tmp_path / "resumed").exists()
    resumed = train_demo_generator(csv, tmp_path / "resumed", **kwargs)
    assert not (tmp_path / ".resumed.partial").exists()
    a = (whole / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    b = (resumed / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert a == b, "a resumed run ends with the weights of an uninterrupted one"
    assert read_meta(resumed)["loss_curve"] == meta["loss_curve"]


def test_shipped_model_is_small_and_documented(shipped):
    size = sum(p.stat().st_size for p in SHIPPED_MODEL.rglob("*") if p.is_file())
    assert size < 5 * 1024 * 1024
    meta = shipped.meta
    assert meta["data"]["note"].startswith(
        "simulate_dataset(scale=1.0, image_size=256, random_seed=1000"
    )
    assert "train-demo" in (SHIPPED_MODEL / "README.txt").read_text()
    assert shipped.resolution == 32 and len(shipped.conditions) == 7


def test_shipped_model_makes_light_skin_for_fst_1_and_dark_for_fst_6(shipped):
    def mean_lightness(fst: int) -> float:
        labels = ["psoriasis", "basal cell carcinoma", "folliculitis", "prurigo nodularis"] * 2
        images = shipped.generate(labels, [fst] * 8, list(range(8)), steps=12, guidance=2.0)
        return float(np.mean([rgb2lab(np.asarray(im) / 255.0)[..., 0].mean() for im in images]))

    light, dark = mean_lightness(1), mean_lightness(6)
    assert light > dark + 20, (light, dark)


def test_variations_are_reproducible_per_seed_and_follow_the_seed(shipped, tiny_data):
    seed_row = tiny_data[(tiny_data["fst"] == 6) & (tiny_data["label"] == "psoriasis")].iloc[0]
    with Image.open(seed_row["path"]) as handle:
        seed = handle.convert("RGB").resize((32, 32))
    args = (["psoriasis"] * 3, [6] * 3, [11, 11, 12])
    first = shipped.generate(*args, images=[seed] * 3, strength=0.6, steps=10, guidance=2.0)
    again = shipped.generate(
        *args[:2], [11, 12, 11], images=[seed] * 3, strength=0.6, steps=10, guidance=2.0, size=64
    )
    pixels = [np.asarray(im, dtype=float) for im in first]
    assert np.abs(pixels[0] - pixels[1]).max() <= 1, "same random seed, same image"
    assert np.abs(pixels[0] - pixels[2]).mean() > 2, "another random seed, another image"
    assert again[0].size == (64, 64)
    upsampled = np.asarray(first[0].resize((64, 64), Image.Resampling.BICUBIC), dtype=float)
    assert np.abs(np.asarray(again[0], dtype=float) - upsampled).max() <= 2
    # SDEdit at strength 0.6 keeps the seed's layout: closer to it than a pure sample is.
    pure = shipped.generate(["psoriasis"], [6], [11], steps=10, guidance=2.0)[0]
    target = np.asarray(seed, dtype=float)
    assert np.abs(pixels[0] - target).mean() < np.abs(np.asarray(pure, dtype=float) - target).mean()


def test_generate_cli_with_the_demo_backend(tmp_path, run_cli, tiny_data):
    seeds = _seeds(tiny_data, tmp_path)
    out = tmp_path / "run"
    args = ["generate", "--seeds", seeds, "--out", out, *DEMO_FAST, "--n", "2", "--mode", "img2img"]
    result = run_cli(*args, "--strength", "0.6")
    assert result.code == 0, result.stderr
    assert "made 4 image(s)" in result.stdout
    manifest = load_manifest(out / "manifest.csv")
    assert len(manifest) == 4 and set(manifest["origin"]) == {"synthetic"}
    assert set(manifest["backend"]) == {"demo"}
    assert manifest["model"].iloc[0].startswith("demo@")
    assert list(manifest["fst"]) == list(pd.read_csv(seeds)["fst"].repeat(2))
    for path in manifest["path"]:
        with Image.open(path) as image:
            assert image.size == (32, 32)
    run = json.loads((out / "run.json").read_text())
    assert run["backend"] == "demo" and run["resolution"] == 32
    assert "made 0 image(s), 4 already there" in run_cli(*args, "--strength", "0.6").stdout

    upscaled = tmp_path / "run64"
    result = run_cli(
        "generate",
        "--seeds",
        seeds,
        "--out",
        upscaled,
        *DEMO_FAST,
        "--n",
        "1",
        "--mode",
        "text2img",
        "--resolution",
        "64",
    )
    assert result.code == 0, result.stderr
    with Image.open(load_manifest(upscaled / "manifest.csv")["path"].iloc[0]) as image:
        assert image.size == (64, 64)


def test_bad_demo_inputs_stop_with_a_message(tmp_path, run_cli, tiny_data):
    seeds = _seeds(tiny_data, tmp_path, count=1)
    base = ["generate", "--seeds", seeds, "--out", tmp_path / "run", *DEMO_FAST]
    result = run_cli(*base, "--mode", "img2img", "--model", tmp_path / "missing")
    assert (
        result.code == 2 and "demo model folder" in result.stderr and "not found" in result.stderr
    )
    (tmp_path / "empty").mkdir()
    result = run_cli(*base, "--mode", "img2img", "--model", tmp_path / "empty")
    assert result.code == 2 and "not a demo generator folder" in result.stderr
    result = run_cli(*base, "--mode", "inpaint")
    assert result.code == 2 and "--mode: Input should be 'img2img' or 'text2img'" in result.stderr
    result = run_cli(*base, "--mode", "img2img", "--lora", tmp_path)
    assert result.code == 2 and "--lora: unknown setting" in result.stderr
    result = run_cli(
        "generator", "train-demo", "--data", seeds, "--out", tmp_path / "m", "--resolution", "12"
    )
    assert result.code == 2 and "--resolution" in result.stderr


def test_unknown_condition_fails_only_its_seed(tmp_path, run_cli, tiny_data):
    seeds = tiny_data[tiny_data["fst"] == 6].head(2).copy()
    seeds.iloc[0, seeds.columns.get_loc("label")] = "eczema"
    csv = tmp_path / "seeds.csv"
    seeds.to_csv(csv, index=False)
    result = run_cli(
        "generate",
        "--seeds",
        csv,
        "--out",
        tmp_path / "run",
        *DEMO_FAST,
        "--n",
        "1",
        "--mode",
        "img2img",
        "--batch-size",
        "1",
    )
    assert result.code == 0, result.stderr
    assert "1 seed(s) failed" in result.stderr
    failures = pd.read_csv(tmp_path / "run" / "failures.csv")
    assert "does not know the condition 'eczema'" in failures["message"][0]
    assert len(load_manifest(tmp_path / "run" / "manifest.csv")) == 1
