"""The demo generator: training, save/load, sampling, the shipped pipeline, `--backend demo`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageFilter
from skimage.color import rgb2lab

from dermsynth.data.manifest import PAPER_CONDITIONS, load_manifest
from dermsynth.data.simulate import simulate_dataset
from dermsynth.errors import DermsynthError
from dermsynth.generate.demo import (
    SHIPPED_MODEL,
    DemoPipeline,
    DemoTrainConfig,
    load_demo_pipeline,
    read_record,
    train_demo_generator,
)

TINY = DemoTrainConfig(
    resolution=16, block_out_channels=(16, 32), steps=30, batch_size=8, learning_rate=3e-3
)
TINY_CLI = ["--resolution", "16", "--channels", "16,32", "--batch-size", "8"]
TINY_CLI += ["--learning-rate", "3e-3", "--no-progress"]
DEMO_FAST = ["--backend", "demo", "--steps", "6", "--guidance", "1", "--no-progress"]


def _generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def _pixels(images: list[Image.Image]) -> list[np.ndarray]:
    return [np.asarray(im, dtype=float) for im in images]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """A tiny simulated set (about one image per condition x FST cell) as a manifest."""
    folder = tmp_path_factory.mktemp("sim")
    csv = simulate_dataset(
        folder, scale=0.01, image_size=64, random_seed=5, workers=1, progress=False
    )
    return load_manifest(csv)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tiny_data: pd.DataFrame) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    tiny_data.to_csv(folder / "manifest.csv", index=False)
    return train_demo_generator(folder / "manifest.csv", folder / "model", TINY, progress=False)


@pytest.fixture(scope="module")
def shipped() -> DemoPipeline:
    return load_demo_pipeline()


def _seed_image(tiny_data: pd.DataFrame, label: str, fst: int, size: int) -> Image.Image:
    row = tiny_data[(tiny_data["label"] == label) & (tiny_data["fst"] == fst)].iloc[0]
    with Image.open(row["path"]) as handle:
        image = handle.convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size))


def test_train_demo_cli_writes_a_loadable_pipeline_folder(tmp_path, run_cli, tiny_data):
    csv = tmp_path / "manifest.csv"
    tiny_data.to_csv(csv, index=False)
    out = tmp_path / "model"
    args = ["generator", "train-demo", "--data", csv, "--out", out, "--steps", "80", *TINY_CLI]
    result = run_cli(*args)
    assert result.code == 0, result.stderr
    assert "wrote" in result.stdout and "--backend demo" in result.stdout
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "DemoPipeline"
    assert {"unet", "scheduler", "conditioning"} <= set(index)
    record = read_record(out)
    curve = [loss for _, loss in record["loss_curve"]]
    # Per-step losses swing with the drawn timesteps: compare the first and last quarters.
    quarter = len(curve) // 4
    assert np.mean(curve[-quarter:]) < 0.8 * np.mean(curve[:quarter]), "the loss falls"
    assert record["data"]["images"] == len(tiny_data) and record["resolution"] == 16
    assert record["conditions"] == list(PAPER_CONDITIONS)
    assert record["train_seconds"] > 0 and record["train_cpu_seconds"] > 0
    readme = (out / "README.txt").read_text()
    assert readme.count("dermsynth generator train-demo") == 1 and "--steps 80" in readme
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv", "model"]
    pipe = load_demo_pipeline(out)
    images = pipe(["psoriasis", "folliculitis"], [1, 6], num_inference_steps=3).images
    assert [im.size for im in images] == [(16, 16), (16, 16)]

    # The same command again finds the folder trained and returns at once.
    weights = out / "unet" / "diffusion_pytorch_model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert run_cli(*args).code == 0
    assert weights.stat().st_mtime_ns == stamp


def test_save_load_round_trip_and_per_image_seeds(tmp_path, tiny_model):
    pipe = load_demo_pipeline(tiny_model)
    labels, fsts = ["psoriasis", "folliculitis", "psoriasis"], [2, 6, 2]
    batch = _pixels(
        pipe(labels, fsts, num_inference_steps=4, generator=_generators([7, 8, 9])).images
    )

    pipe.save_pretrained(tmp_path / "copy")
    again = load_demo_pipeline(tmp_path / "copy")
    copied = _pixels(
        again(labels, fsts, num_inference_steps=4, generator=_generators([7, 8, 9])).images
    )
    assert all(np.array_equal(a, b) for a, b in zip(batch, copied, strict=True))

    # An image depends on its own seed, not on the batch it ran in.
    alone = _pixels(
        pipe(labels[1:2], fsts[1:2], num_inference_steps=4, generator=_generators([8])).images
    )
    assert np.abs(alone[0] - batch[1]).max() <= 1
    assert np.abs(batch[0] - batch[2]).mean() > 2, "another seed, another image"


def test_resume_continues_to_the_weights_of_an_uninterrupted_run(tmp_path, tiny_data, monkeypatch):
    plan = tiny_data.copy()
    plan["split"] = np.where(
        plan["fst"].isin([1, 2]), "train", np.where(plan["fst"] == 6, "seed", "test")
    )
    csv = tmp_path / "plan.csv"
    plan.to_csv(csv, index=False)
    config = DemoTrainConfig(
        resolution=16, block_out_channels=(16, 32), steps=12, batch_size=4, learning_rate=3e-3
    )
    whole = train_demo_generator(
        csv, tmp_path / "whole", config, checkpoint_every=5, progress=False
    )
    assert read_record(whole)["data"]["images"] == int((plan["split"] == "train").sum())
    assert set(read_record(whole)["data"]["per_fst"]) == {"1", "2"}, "train rows only"

    # Interrupt a second run at step 8 (after the checkpoint at 5), then run it again.
    calls = {"n": 0}
    real_clip = torch.nn.utils.clip_grad_norm_

    def interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return real_clip(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(torch.nn.utils, "clip_grad_norm_", interrupt)
        with pytest.raises(KeyboardInterrupt):
            train_demo_generator(
                csv, tmp_path / "resumed", config, checkpoint_every=5, progress=False
            )
    assert (tmp_path / ".resumed.partial" / "checkpoint.pt").is_file()
    assert not (tmp_path / "resumed").exists(), "no half-written model folder"
    resumed = train_demo_generator(
        csv, tmp_path / "resumed", config, checkpoint_every=5, progress=False
    )
    assert not (tmp_path / ".resumed.partial").exists()
    for part in ("unet", "conditioning"):
        weights = f"{part}/diffusion_pytorch_model.safetensors"
        assert (whole / weights).read_bytes() == (resumed / weights).read_bytes(), part
    assert read_record(resumed)["loss_curve"] == read_record(whole)["loss_curve"]


def test_a_diverging_run_stops_at_the_first_non_finite_loss(tmp_path, tiny_data, monkeypatch):
    csv = tmp_path / "manifest.csv"
    tiny_data.to_csv(csv, index=False)
    config = DemoTrainConfig(
        resolution=16, block_out_channels=(16, 32), steps=20, batch_size=4, learning_rate=3e-3
    )
    calls = {"n": 0}
    real_loss = torch.nn.functional.mse_loss

    def nan_from_step_7(*args, **kwargs):
        calls["n"] += 1
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if calls["n"] >= 7 else loss

    steps_applied = {"n": 0}
    real_step = torch.optim.AdamW.step

    def counted_step(self, *args, **kwargs):
        steps_applied["n"] += 1
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "mse_loss", nan_from_step_7)
    monkeypatch.setattr(torch.optim.AdamW, "step", counted_step)
    with pytest.raises(DermsynthError, match=r"diverged at step 7 of 20 .*--learning-rate"):
        train_demo_generator(csv, tmp_path / "model", config, checkpoint_every=5, progress=False)
    assert calls["n"] == 7, "it stops at the first non-finite loss, not thousands of steps on"
    assert steps_applied["n"] == 6, "the non-finite step is never applied"
    assert not (tmp_path / "model").exists(), "no model of NaN weights is written"
    state = torch.load(tmp_path / ".model.partial" / "checkpoint.pt", weights_only=False)
    assert state["trainer"]["step"] == 5
    assert all(torch.isfinite(w).all() for w in state["trainer"]["unet"].values())


def test_shipped_model_makes_64px_images_of_every_condition_on_every_type(shipped):
    size = sum(p.stat().st_size for p in SHIPPED_MODEL.rglob("*") if p.is_file())
    assert size < 15 * 1024 * 1024
    record = read_record(SHIPPED_MODEL)
    assert record["data"]["note"].startswith(
        "simulate_dataset(scale=1.0, image_size=256, random_seed=1000"
    )
    assert "train-demo" in (SHIPPED_MODEL / "README.txt").read_text()
    assert shipped.resolution == 64 and shipped.conditions == list(PAPER_CONDITIONS)

    cells = [(c, f) for c in PAPER_CONDITIONS for f in range(1, 7)]
    images = shipped(
        [c for c, _ in cells],
        [f for _, f in cells],
        num_inference_steps=4,
        generator=_generators(list(range(len(cells)))),
    ).images
    assert all(im.size == (64, 64) for im in images)
    lightness = {f: [] for f in range(1, 7)}
    for (_, fst), image in zip(cells, images, strict=True):
        lightness[fst].append(float(np.median(rgb2lab(np.asarray(image))[..., 0])))
    assert np.mean(lightness[1]) > np.mean(lightness[6]) + 20, "light skin for I, dark for VI"


def _layout(image: Image.Image) -> np.ndarray:
    grey = np.asarray(image.convert("L").filter(ImageFilter.GaussianBlur(2)), dtype=float)
    return (grey - grey.mean()).ravel()


def test_img2img_keeps_the_seed_layout_more_at_low_strength(shipped, tiny_data):
    seeds = [
        _seed_image(tiny_data, c, f, 64)
        for c, f in [
            ("psoriasis", 2),
            ("nematode infection", 5),
            ("squamous cell carcinoma", 6),
            ("folliculitis", 3),
        ]
    ]
    labels = ["psoriasis", "nematode infection", "squamous cell carcinoma", "folliculitis"]
    fsts = [2, 5, 6, 3]

    def agreement(strength: float) -> float:
        out = shipped(
            labels,
            fsts,
            images=seeds,
            strength=strength,
            num_inference_steps=10,
            generator=_generators([1, 2, 3, 4]),
        ).images
        return float(
            np.mean(
                [np.corrcoef(_layout(a), _layout(b))[0, 1] for a, b in zip(seeds, out, strict=True)]
            )
        )

    low, high = agreement(0.3), agreement(0.9)
    assert low > 0.8 and low > high + 0.2, (low, high)


def _write_seeds(tiny_data: pd.DataFrame, folder: Path, fsts=(5, 6), count: int = 2) -> Path:
    path = folder / "seeds.csv"
    tiny_data[tiny_data["fst"].isin(fsts)].head(count).to_csv(path, index=False)
    return path


def test_generate_cli_with_the_demo_backend(tmp_path, run_cli, tiny_data):
    seeds = _write_seeds(tiny_data, tmp_path)
    out = tmp_path / "run"
    args = ["generate", "--seeds", seeds, "--out", out, *DEMO_FAST, "--n", "2", "--mode", "img2img"]
    result = run_cli(*args, "--strength", "0.5")
    assert result.code == 0, result.stderr
    assert "made 4 image(s)" in result.stdout
    manifest = load_manifest(out / "manifest.csv")
    assert len(manifest) == 4 and set(manifest["origin"]) == {"synthetic"}
    assert set(manifest["backend"]) == {"demo"}
    assert (
        manifest["model"].iloc[0] == "demo@" + read_record(SHIPPED_MODEL)["data_fingerprint"][:12]
    )
    assert list(manifest["fst"]) == list(pd.read_csv(seeds)["fst"].repeat(2))
    for path in manifest["path"]:
        with Image.open(path) as image:
            assert image.size == (64, 64)
    run = json.loads((out / "run.json").read_text())
    assert run["backend"] == "demo" and run["resolution"] == 64
    assert "made 0 image(s), 4 already there" in run_cli(*args, "--strength", "0.5").stdout

    upscaled = tmp_path / "run128"
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
        "128",
    )
    assert result.code == 0, result.stderr
    with Image.open(load_manifest(upscaled / "manifest.csv")["path"].iloc[0]) as image:
        assert image.size == (128, 128)


def _one_line_error(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(DermsynthError) as caught:
        call()
    message = str(caught.value)
    assert message and "\n" not in message
    return message


def test_bad_inputs_stop_with_one_line(tmp_path, tiny_model):
    pipe = load_demo_pipeline(tiny_model)
    assert "does not know the condition 'eczema'" in _one_line_error(lambda: pipe(["eczema"], [3]))
    for fst in (0, 7, -1):
        assert "skin type 1..6" in _one_line_error(lambda f=fst: pipe(["psoriasis"], [f]))
    seed = Image.new("RGB", (16, 16), (180, 140, 120))
    assert "no denoising step" in _one_line_error(
        lambda: pipe(["psoriasis"], [3], images=[seed], strength=0.05, num_inference_steps=4)
    )
    assert "not found" in _one_line_error(lambda: load_demo_pipeline(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    assert "not a demo generator folder" in _one_line_error(
        lambda: load_demo_pipeline(tmp_path / "empty")
    )
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    assert "not a demo generator" in _one_line_error(lambda: load_demo_pipeline(other))
    broken = tmp_path / "broken"
    broken.mkdir()
    for part in ("unet", "scheduler", "conditioning"):
        (broken / part).mkdir()
    (broken / "model_index.json").write_text((tiny_model / "model_index.json").read_text())
    assert "cannot load the demo model" in _one_line_error(lambda: load_demo_pipeline(broken))


def test_bad_cli_inputs_exit_2_with_a_message(tmp_path, run_cli, tiny_data):
    seeds = _write_seeds(tiny_data, tmp_path, count=1)
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
    train = ["generator", "train-demo", "--data", seeds, "--out", tmp_path / "m"]
    result = run_cli(*train, "--resolution", "12")
    assert result.code == 2 and "--resolution" in result.stderr
    result = run_cli(*train, "--channels", "16,x")
    assert result.code == 2 and "--channels" in result.stderr


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


def test_the_shipped_model_loads_quietly_where_accelerate_is_missing(monkeypatch):
    # `pip install -e .` (the README's demo install) has no `accelerate`: loading must not log
    # diffusers' "install accelerate" warning (the demo loaded the model six times).
    import logging

    import diffusers.models.modeling_utils as modeling
    import diffusers.pipelines.pipeline_utils as pipelines

    monkeypatch.setattr(pipelines, "is_accelerate_available", lambda: False)
    monkeypatch.setattr(modeling, "is_accelerate_available", lambda: False)
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Keep(level=logging.WARNING)
    library = logging.getLogger("diffusers")  # diffusers' own root logger, which does not propagate
    library.addHandler(handler)
    try:
        pipe = load_demo_pipeline()
    finally:
        library.removeHandler(handler)
    assert pipe.unet is not None
    assert not [m for m in messages if "accelerate" in m]
