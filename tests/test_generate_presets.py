"""The follow-up work's recipes as presets (synderm-inpaint, synderm-txt2img) on the tiny pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermsynth.config import PRESETS, generator_config
from dermsynth.data.manifest import load_manifest
from dermsynth.generate.backends.base import Job, make_backend
from dermsynth.generate.backends.tiny import save_tiny_pipeline
from dermsynth.generate.seeds import generated_mask

FAST = ["--steps", "3", "--resolution", "32", "--no-progress"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread: at this size thread hand-offs cost more than they give."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_seeds(tmp_path: Path, cells: list[tuple[str, int]]) -> Path:
    """One random seed image per (condition, skin type) cell; no split column: all are seeds."""
    rows = []
    for i, (label, fst) in enumerate(cells):
        path = tmp_path / f"s{i}.png"
        rng = np.random.default_rng(i)
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype("uint8")).save(path)
        rows.append({"image_id": f"s{i}", "path": str(path), "label": label, "fst": fst})
    pd.DataFrame(rows).to_csv(tmp_path / "seeds.csv", index=False)
    return tmp_path / "seeds.csv"


def test_presets_hold_the_published_recipes():
    inpaint = generator_config(preset="synderm-inpaint")
    assert (inpaint.mode, inpaint.scheduler, inpaint.steps, inpaint.guidance) == (
        "inpaint",
        "dpm",
        50,
        3.0,
    )
    assert (inpaint.strength, inpaint.outpaint_strength, inpaint.precision) == (0.97, 0.95, "fp16")
    assert inpaint.template.format(condition="psoriasis") == "An image of psoriasis, a skin disease"
    # The kept (black) region of the seed mask is the central square of a quarter of the area:
    # pass 1 redraws it, pass 2 the border around it.
    kept = np.asarray(generated_mask(512, inpaint.mask)) == 0
    assert kept.mean() == pytest.approx(0.25, abs=0.005)
    assert kept[256, 256] and not kept[10, 10] and not kept[256, 100]

    txt2img = generator_config(preset="synderm-txt2img")
    assert txt2img.model.endswith("stable-diffusion-2-1-base") and txt2img.mode == "text2img"
    assert (txt2img.scheduler, txt2img.steps, txt2img.guidance, txt2img.precision) == (
        "dpm",
        50,
        3.0,
        "fp16",
    )
    assert txt2img.template == inpaint.template and txt2img.outpaint_strength is None

    # Given settings win over the preset's; a mask setting changes only that setting; the
    # tiny backend keeps its own model.
    tiny = generator_config(backend="tiny", preset="synderm-inpaint", steps=3, mask={"feather": 2})
    assert tiny.steps == 3 and tiny.guidance == 3.0 and tiny.model == ""
    assert (tiny.mask.keep, tiny.mask.shape, tiny.mask.feather) == (0.5, "rect", 2.0)
    assert set(PRESETS) == {"synderm-inpaint", "synderm-txt2img"}


def _jobs(resolution: int, mask: Image.Image, seeds: list[int]) -> list[Job]:
    jobs = []
    for i, random_seed in enumerate(seeds):
        rng = np.random.default_rng(100 + i)
        crop = Image.fromarray((rng.random((resolution, resolution, 3)) * 255).astype("uint8"))
        jobs.append(
            Job(f"s{i}", 0, "An image of psoriasis, a skin disease", crop, mask, random_seed)
        )
    return jobs


def test_synderm_inpaint_redraws_the_centre_then_the_border(capsys):
    params = generator_config(backend="tiny", preset="synderm-inpaint", steps=3, resolution=32)
    backend = make_backend(params)
    note = capsys.readouterr().err.strip()
    assert note == "note: fp16 runs on a CUDA GPU only; using fp32 on cpu"
    backend.load()
    calls: list[tuple[dict, list[Image.Image]]] = []
    pipe = backend.pipe

    def recorded(**kwargs):
        output = pipe(**kwargs)
        calls.append((kwargs, list(output.images)))
        return output

    backend.pipe = recorded
    mask = generated_mask(32, params.mask)
    jobs = _jobs(32, mask, [11, 12])
    results = backend.generate(jobs)

    assert len(calls) == 2  # one batch, two passes
    (first, first_images), (second, second_images) = calls
    assert (first["strength"], second["strength"]) == (0.97, 0.95)
    centre = np.asarray(first["mask_image"][0])
    border = np.asarray(second["mask_image"][0])
    # Pass 1 redraws the central square only; pass 2 its complement less a 1-px frame (32/32).
    assert (
        centre[16, 16] == 255
        and centre[4, 4] == 0
        and (centre == 255).mean() == pytest.approx(0.25, abs=0.04)  # 17 px of 32
    )
    assert border[16, 16] == 0 and border[4, 4] == 255 and border[0, 0] == 0 and border[0, 16] == 0
    assert np.array_equal((centre == 255) | (border == 255), np.pad(np.ones((30, 30), bool), 1))
    # Pass 2 starts from pass 1's images, with the same prompt and sampler settings.
    assert second["image"] == first_images
    assert second["prompt"] == first["prompt"] and second["guidance_scale"] == 3.0
    assert [r.image for r in results] == second_images
    for job, before, after in zip(jobs, first_images, second_images, strict=True):
        seed = np.asarray(job.image, dtype=float)
        middle = np.asarray(before, dtype=float)
        final = np.asarray(after, dtype=float)
        assert np.abs(middle - seed)[8:24, 8:24].mean() > 5  # pass 1 changed the centre
        assert np.abs(final - middle)[border == 255].mean() > 5  # pass 2 changed the border
        assert after.size == (32, 32)

    # Each image has its own seeded random streams: the same seeds give the same images, and
    # an image does not depend on its batch neighbours.
    backend.pipe = pipe
    again = backend.generate(_jobs(32, mask, [11, 99]))
    assert np.array_equal(np.asarray(again[0].image), np.asarray(results[0].image))
    assert not np.array_equal(np.asarray(again[1].image), np.asarray(results[1].image))


def test_one_pass_and_two_passes_make_different_images():
    mask = generated_mask(32, generator_config(preset="synderm-inpaint").mask)
    two = generator_config(backend="tiny", preset="synderm-inpaint", steps=3, resolution=32)
    one = two.updated(outpaint_strength=None)
    images = [make_backend(p).generate(_jobs(32, mask, [5]))[0].image for p in (one, two)]
    assert not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))


def test_synderm_inpaint_preset_end_to_end_with_a_model_folder(tmp_path, run_cli):
    seeds = make_seeds(tmp_path, [("psoriasis", 1), ("psoriasis", 6)])
    model = save_tiny_pipeline(tmp_path / "sd-inpaint", "inpaint")
    out = tmp_path / "run"
    args = ["generate", "--seeds", seeds, "--backend", "diffusers", "--model", model]
    args += ["--preset", "synderm-inpaint", "--n", "2", "--out", out, *FAST]
    result = run_cli(*args)
    assert result.code == 0, result.stderr
    assert "made 4 image(s)" in result.stdout
    assert "note: fp16 runs on a CUDA GPU only; using fp32 on cpu" in result.stderr
    manifest = load_manifest(out / "manifest.csv")
    assert list(manifest["parent_id"]) == ["s0", "s0", "s1", "s1"]
    assert set(manifest["prompt"]) == {"An image of psoriasis, a skin disease"}
    row = manifest.iloc[0]
    assert (row["preset"], row["mode"], row["scheduler"], row["steps"]) == (
        "synderm-inpaint",
        "inpaint",
        "dpm",
        "3",
    )
    assert float(row["strength"]) == 0.97 and float(row["outpaint_strength"]) == 0.95
    assert float(row["guidance"]) == 3.0 and row["precision"] == "float32"
    assert manifest["random_seed"].nunique() == 4
    for path in manifest["path"]:
        with Image.open(path) as image:
            assert image.size == (32, 32)
    # The seed mask keeps the central square (the region pass 1 redraws).
    with Image.open(row["seed_mask"]) as seed_mask:
        assert (np.asarray(seed_mask) == 0).mean() == pytest.approx(0.25, abs=0.05)

    again = run_cli(*args)  # resume: nothing left to make
    assert again.code == 0 and "made 0 image(s), 4 already there" in again.stdout
    changed = run_cli(*args[: -len(FAST)], "--steps", "4", "--resolution", "32", "--no-progress")
    assert changed.code == 2 and "other settings" in changed.stderr


def test_synderm_txt2img_preset_makes_condition_by_skin_type_samples(tmp_path, run_cli):
    cells = [("psoriasis", 1), ("psoriasis", 6), ("eczema", 2), ("eczema", 5)]
    seeds = make_seeds(tmp_path, cells)
    model = save_tiny_pipeline(tmp_path / "sd21", "text2img")
    out = tmp_path / "run"
    result = run_cli(
        "generate", "--seeds", seeds, "--backend", "diffusers", "--model", model,
        "--preset", "synderm-txt2img", "--n", "2", "--out", out, *FAST,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    manifest = load_manifest(out / "manifest.csv")
    counts = manifest.groupby(["label", "fst"]).size()
    assert counts.to_dict() == {cell: 2 for cell in cells}
    assert set(manifest["mode"]) == {"text2img"} and set(manifest["preset"]) == {"synderm-txt2img"}
    assert set(manifest["prompt"]) == {
        "An image of psoriasis, a skin disease",
        "An image of eczema, a skin disease",
    }
    for path in manifest["path"]:
        with Image.open(path) as image:
            assert image.size == (32, 32)

    # The recipe's prompt does not name the skin type; a template that does makes each cell's
    # prompt its own.
    toned = tmp_path / "toned"
    result = run_cli(
        "generate", "--seeds", seeds, "--backend", "diffusers", "--model", model,
        "--preset", "synderm-txt2img", "--template",
        "An image of {condition}, a skin disease, on {skin_type_description} skin",
        "--n", "1", "--out", toned, *FAST,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    prompts = load_manifest(toned / "manifest.csv").set_index("parent_id")["prompt"]
    assert prompts["s1"] == "An image of psoriasis, a skin disease, on dark-skinned skin"
    assert prompts.nunique() == 4


def test_a_preset_with_another_mode_is_refused_in_one_line(tmp_path, run_cli):
    seeds = make_seeds(tmp_path, [("psoriasis", 1)])
    result = run_cli(
        "generate", "--seeds", seeds, "--backend", "tiny", "--preset", "synderm-inpaint",
        "--mode", "text2img", "--out", tmp_path / "run", *FAST,
    )  # fmt: skip
    assert result.code == 2
    assert "outpaint_strength is a second inpainting pass" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
