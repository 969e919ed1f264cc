"""`dermsynth generator finetune` on the tiny pipeline, then `generate --lora` with the result."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermsynth.data.manifest import load_manifest


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread: at this size thread hand-offs cost more than they give."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_plan(tmp_path):
    rows = []
    for i, (split, fst) in enumerate([("train", 1), ("train", 2), ("seed", 5), ("test", 3)]):
        path = tmp_path / f"i{i}.png"
        Image.fromarray((np.random.default_rng(i).random((40, 48, 3)) * 255).astype("uint8")).save(
            path
        )
        rows.append(
            {
                "image_id": f"i{i}",
                "path": str(path),
                "label": "psoriasis",
                "fst": fst,
                "split": split,
            }
        )
    pd.DataFrame(rows).to_csv(tmp_path / "plan.csv", index=False)
    return tmp_path / "plan.csv"


@pytest.mark.parametrize("mode", ["text2img", "inpaint"])
def test_finetune_tiny_then_generate_with_the_lora(tmp_path, run_cli, mode):
    plan = make_plan(tmp_path)
    lora = tmp_path / "lora"
    result = run_cli(
        "generator",
        "finetune",
        "--data",
        plan,
        "--condition",
        "Psoriasis",
        "--mode",
        mode,
        "--steps",
        "2",
        "--resolution",
        "32",
        "--out",
        lora,
        "--no-progress",
    )
    assert result.code == 0, result.stderr
    assert (lora / "pytorch_lora_weights.safetensors").is_file()
    record = json.loads((lora / "finetune.json").read_text())
    assert record["images"] == 2 and len(record["losses"]) == 2  # the two train rows only

    out = tmp_path / "run"
    result = run_cli(
        "generate",
        "--seeds",
        plan,
        "--backend",
        "tiny",
        "--mode",
        mode,
        "--lora",
        lora,
        "--n",
        "1",
        "--steps",
        "2",
        "--resolution",
        "32",
        "--out",
        out,
        "--no-progress",
    )
    assert result.code == 0, result.stderr
    manifest = load_manifest(out / "manifest.csv")
    assert list(manifest["parent_id"]) == ["i2"] and manifest["lora"].iloc[0] == str(lora)


def test_finetune_unknown_condition_is_refused(tmp_path, run_cli):
    result = run_cli(
        "generator",
        "finetune",
        "--data",
        make_plan(tmp_path),
        "--condition",
        "eczema",
        "--out",
        tmp_path / "lora",
    )
    assert result.code == 2 and "unknown condition 'eczema'" in result.stderr


def _finetune(run_cli, plan, out, *extra):
    return run_cli(
        "generator", "finetune", "--data", plan, "--condition", "psoriasis",
        "--resolution", "32", "--out", out, "--no-progress", *extra,
    )  # fmt: skip


def _changed(before, after) -> float:
    """Share of tensors that differ between two state dicts of the same model."""
    import torch

    return sum(not torch.equal(before[k], after[k]) for k in before) / len(before)


@pytest.mark.parametrize("mode", ["text2img", "inpaint"])
def test_dreambooth_trains_the_unet_and_saves_a_pipeline_that_generates(tmp_path, run_cli, mode):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    from dermsynth.generate.backends.tiny import tiny_components

    plan = make_plan(tmp_path)
    model = tmp_path / "db"
    text_encoder = ["--train-text-encoder"] if mode == "text2img" else []
    result = _finetune(
        run_cli, plan, model, "--method", "dreambooth", "--mode", mode, *text_encoder
    )
    assert result.code == 0, result.stderr
    assert f"--backend diffusers --model {model}" in result.stdout
    assert (model / "model_index.json").is_file()
    record = json.loads((model / "finetune.json").read_text())
    # The follow-up work's defaults: lr 5e-6 constant, batch 4, 4 epochs over the 2 train rows.
    assert (record["method"], record["learning_rate"], record["lr_schedule"]) == (
        "dreambooth",
        5e-6,
        "constant",
    )
    assert (record["batch_size"], record["epochs"], record["images"]) == (4, 4, 2)
    assert record["steps_run"] == 4 and len(record["losses"]) == 4
    assert record["template"] == "An image of {condition}, a skin disease"

    base = tiny_components(mode)
    unet = UNet2DConditionModel.from_pretrained(model / "unet")
    assert _changed(base["unet"].state_dict(), unet.state_dict()) > 0.9
    text = CLIPTextModel.from_pretrained(model / "text_encoder")
    moved = _changed(base["text_encoder"].state_dict(), text.state_dict())
    assert moved > 0.5 if text_encoder else moved == 0

    out = tmp_path / "run"
    preset = ["--preset", "synderm-inpaint"] if mode == "inpaint" else ["--mode", "text2img"]
    result = run_cli(
        "generate", "--seeds", plan, "--backend", "diffusers", "--model", model, *preset,
        "--n", "1", "--steps", "3", "--resolution", "32", "--out", out, "--no-progress",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    manifest = load_manifest(out / "manifest.csv")
    assert list(manifest["parent_id"]) == ["i2"] and manifest["model"].iloc[0] == str(model)
    with Image.open(manifest["path"].iloc[0]) as image:
        assert image.size == (32, 32)


def test_prior_preservation_makes_and_reuses_class_images(tmp_path, run_cli):
    plan = make_plan(tmp_path)
    prior = ["--method", "dreambooth", "--steps", "2", "--prior-preservation"]
    prior += ["--class-steps", "2", "--class-prompt", "An image of skin", "--num-class-images", "2"]
    result = _finetune(run_cli, plan, tmp_path / "db", *prior)
    assert result.code == 0, result.stderr
    classes = sorted((tmp_path / "db-class-images").glob("*.png"))
    assert len(classes) == 2
    for path in classes:
        with Image.open(path) as image:
            assert image.size == (32, 32)
    record = json.loads((tmp_path / "db" / "finetune.json").read_text())
    assert (record["class_images"], record["class_images_made"]) == (2, 2)
    assert len(record["prior_losses"]) == 2 and all(x > 0 for x in record["prior_losses"])

    # One more wanted: the two are reused and one is made.
    result = _finetune(run_cli, plan, tmp_path / "db", *prior[:-1], "3")
    assert result.code == 0, result.stderr
    record = json.loads((tmp_path / "db" / "finetune.json").read_text())
    assert (record["class_images"], record["class_images_made"]) == (3, 1)

    other = [*prior[:8], "An image of a rash", "--num-class-images", "3"]
    result = _finetune(
        run_cli, plan, tmp_path / "db2", *other, "--class-dir", tmp_path / "db-class-images"
    )
    assert result.code == 2 and "made with another class_prompt" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "textual-inversion"], "--method must be lora or dreambooth"),
        (["--train-text-encoder"], "--train-text-encoder needs --method dreambooth"),
        (["--method", "dreambooth", "--learning-rate", "0"], "--learning-rate must be > 0"),
        (["--lr-schedule", "warm"], "--lr-schedule must be one of"),
    ],
)
def test_finetune_bad_options_are_one_line(tmp_path, run_cli, args, message):
    result = _finetune(run_cli, make_plan(tmp_path), tmp_path / "out", *args)
    assert result.code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_finetune_condition_without_training_images_is_refused(tmp_path, run_cli):
    plan = make_plan(tmp_path)
    table = pd.read_csv(plan)
    table.loc[table["split"] == "seed", "label"] = "eczema"
    table.to_csv(plan, index=False)
    result = run_cli(
        "generator", "finetune", "--data", plan, "--condition", "eczema",
        "--method", "dreambooth", "--out", tmp_path / "db",
    )  # fmt: skip
    assert result.code == 2
    assert "no training images of 'eczema' (its rows are split seed)" in result.stderr
