"""Generation inputs: the prompt table, seed crops and masks, and bad input refused early."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermsynth.config import MaskConfig, generator_config
from dermsynth.errors import DermsynthError
from dermsynth.generate.prompts import read_prompt_table, resolve_prompts
from dermsynth.generate.seeds import load_seeds, prepare_seed, square_around


def make_seeds(tmp_path: Path, fsts=(1, 5, 6), size=(100, 80), plan: bool = True) -> Path:
    """A seed manifest of random images (a plan with one non-seed row, by default)."""
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    rows = []
    for i, fst in enumerate(fsts):
        rng = np.random.default_rng(i)
        path = folder / f"s{i}.jpg"
        Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype("uint8")).save(path)
        rows.append(
            {
                "image_id": f"s{i}",
                "path": str(path),
                "label": "psoriasis",
                "fst": fst,
                "split": "seed",
            }
        )
    if plan:
        rows.append(
            {
                "image_id": "t0",
                "path": str(folder / "s0.jpg"),
                "label": "psoriasis",
                "fst": 1,
                "split": "train",
            }
        )
    csv = tmp_path / "seeds.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def test_prompts_command_writes_an_editable_table(tmp_path, run_cli):
    seeds = make_seeds(tmp_path)
    out = tmp_path / "prompts.csv"
    result = run_cli("generate", "prompts", "--seeds", seeds, "--out", out)
    assert result.code == 0, result.stderr
    table = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(table["image_id"]) == ["s0", "s1", "s2"]  # seed rows only
    assert list(table["skin_type_description"]) == ["light-skinned", "dark-skinned", "dark-skinned"]
    assert "An image of psoriasis on the skin of a dark-skinned person." in result.stdout

    # The user edits one row's fields and writes another prompt whole.
    table.loc[0, "body_part"] = "forearm"
    table.loc[0, "noun"] = "woman"
    table.loc[2, "prompt"] = "A close-up photo of psoriasis."
    table.to_csv(out, index=False)
    resolved = resolve_prompts(load_seeds(seeds), read_prompt_table(out))
    assert list(resolved["prompt"]) == [
        "An image of psoriasis on the forearm of a light-skinned woman.",
        "An image of psoriasis on the skin of a dark-skinned person.",
        "A close-up photo of psoriasis.",
    ]


def test_prompt_table_missing_a_seed_is_refused(tmp_path, run_cli):
    seeds = make_seeds(tmp_path)
    prompts = tmp_path / "prompts.csv"
    assert run_cli("generate", "prompts", "--seeds", seeds, "--out", prompts).code == 0
    table = pd.read_csv(prompts, dtype=str, keep_default_na=False)
    table[table["image_id"] != "s1"].to_csv(prompts, index=False)
    result = run_cli(
        "generate",
        "--seeds",
        seeds,
        "--prompts",
        prompts,
        "--backend",
        "tiny",
        "--out",
        tmp_path / "run",
    )
    assert result.code == 2
    assert "no row for seed 's1'" in result.stderr


def test_crop_is_centred_on_the_box_and_stays_inside():
    assert square_around(None, (100, 80), 1.5) == (10, 0, 90, 80)
    assert square_around((40, 30, 60, 50), (100, 80), 1.5) == (35, 25, 65, 55)
    # A box at the edge: the square shifts to stay inside the image.
    assert square_around((0, 0, 20, 20), (100, 80), 2.0) == (0, 0, 40, 40)


def test_seed_crop_and_generated_mask_are_saved(tmp_path):
    seeds = make_seeds(tmp_path)
    row = load_seeds(seeds).iloc[0].to_dict() | {"prompt": "p", "crop_box": "40,30,60,50"}
    prepared = prepare_seed(row, 64, MaskConfig(feather=0), tmp_path / "seedprep")
    assert prepared.crop.size == (64, 64) and prepared.mask.size == (64, 64)
    assert prepared.crop_path.is_file() and prepared.mask_path.is_file()
    mask = np.asarray(prepared.mask)
    # The lesion (the box, in the crop's middle third) is kept; the border is redrawn.
    assert mask[32, 32] == 0 and mask[2, 2] == 255


def test_user_mask_of_the_wrong_size_is_refused(tmp_path):
    seeds = make_seeds(tmp_path)
    bad = tmp_path / "mask.png"
    Image.new("L", (50, 50), 255).save(bad)
    row = load_seeds(seeds).iloc[0].to_dict() | {"prompt": "p", "mask_path": str(bad)}
    with pytest.raises(DermsynthError, match="50x50 px but the seed image is 100x80"):
        prepare_seed(row, 64, MaskConfig(), tmp_path / "seedprep")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strength", "0"], "--strength: Input should be greater than 0"),
        (["--strength", "1.5"], "--strength: Input should be less than or equal to 1"),
        (["--strength", "nan"], "--strength: Input should be a finite number"),
        (["--guidance", "inf"], "--guidance: Input should be a finite number"),
        (["--steps", "0"], "--steps: Input should be greater than or equal to 1"),
        (["--n", "0"], "Invalid value for '--n'"),
        (["--backend", "midjourney"], "unknown backend 'midjourney'"),
        (["--mode", "outpaint"], "--mode: Input should be 'inpaint', 'img2img' or 'text2img'"),
        (
            ["--negative-prompt", "blurry", "--backend", "openai"],
            "--negative-prompt: unknown setting",
        ),
        (
            ["--backend", "diffusers", "--model", "./no/such/folder"],
            "model folder ./no/such/folder not found",
        ),
    ],
)
def test_bad_parameters_are_refused_before_any_model_loads(
    tmp_path, run_cli, monkeypatch, args, message
):
    from dermsynth.generate.backends import diffusers_backend

    def no_load(self):  # the test fails if a model were loaded
        raise AssertionError("model loaded")

    monkeypatch.setattr(diffusers_backend.DiffusersBackend, "load", no_load)
    seeds = make_seeds(tmp_path)
    result = run_cli(
        "generate", "--seeds", seeds, "--backend", "tiny", "--out", tmp_path / "run", *args
    )
    assert result.code == 2, result.stderr
    assert message in result.stderr
    assert result.stderr.startswith("error: ")


def test_missing_and_corrupt_seed_images_are_named_before_any_model_loads(
    tmp_path, run_cli, monkeypatch
):
    from dermsynth.generate.backends import diffusers_backend

    monkeypatch.setattr(
        diffusers_backend.DiffusersBackend,
        "load",
        lambda self: (_ for _ in ()).throw(AssertionError("model loaded")),
    )
    seeds = make_seeds(tmp_path)
    (tmp_path / "images" / "s1.jpg").unlink()
    (tmp_path / "images" / "s2.jpg").write_bytes(b"not a jpeg")
    result = run_cli("generate", "--seeds", seeds, "--backend", "tiny", "--out", tmp_path / "run")
    assert result.code == 2
    assert "2 seed(s) cannot be used" in result.stderr
    assert "s1.jpg: image file not found" in result.stderr
    assert "s2.jpg: not a readable image" in result.stderr


def test_params_record_every_setting():
    record = generator_config(backend="tiny", steps=3, strength=None, mode="img2img").record()
    assert record["strength"] == 0.75 and record["steps"] == 3 and record["scheduler"] == "dpm"


def test_generate_without_seeds_says_what_to_give(run_cli):
    result = run_cli("generate", "--backend", "tiny")
    assert result.code == 2
    assert "give --seeds" in result.stderr
