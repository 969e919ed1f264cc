"""`dermsynth generator finetune` on the tiny pipeline, then `generate --lora` with the result."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermsynth.data.manifest import load_manifest


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
