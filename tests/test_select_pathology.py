"""Pathology consistency: a classifier run's probability, a tiny zero-shot CLIP, mismatches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermsynth.errors import DermsynthError
from dermsynth.select.pathology import classifier_scores, clip_scores, load_clip, probabilities
from test_select_cli import make_candidate_run


def _train_classifier(root: Path, classes: tuple[str, str]) -> Path:
    from dermsynth.config import ClassifierConfig
    from dermsynth.train.run import train_run

    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    rows = []
    for c, name in enumerate(classes):
        for i in range(4):
            pixels = np.clip(rng.normal(80 + 100 * c, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
            path = root / "img" / f"{c}_{i}.png"
            Image.fromarray(pixels).save(path)
            rows.append(
                {
                    "image_id": f"{c}_{i}",
                    "path": str(path),
                    "label": name,
                    "fst": 1,
                    "origin": "real",
                    "parent_id": "",
                    "split": "train",
                }
            )
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    config = ClassifierConfig(
        backbone="resnet18",
        weights="none",
        epochs=1,
        image_size=32,
        batch_size=8,
        views=1,
        progress=False,
        device="cpu",
    )
    train_run(root / "train.csv", root / "run", config)
    return root / "run"


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clf")
    return {
        "good": _train_classifier(root / "good", ("folliculitis", "psoriasis")),
        "other": _train_classifier(root / "other", ("acne", "eczema")),
    }


def test_classifier_probability_of_the_intended_condition(
    run_cli, classifiers: dict[str, Path], tmp_path: Path
) -> None:
    paths = make_candidate_run(tmp_path)
    cands = pd.read_csv(paths["manifest"], dtype=str, keep_default_na=False)
    probs = probabilities(classifiers["good"], cands, device="cpu")
    assert list(probs.columns) == ["image_id", "p_folliculitis", "p_psoriasis"]
    assert np.allclose(probs[["p_folliculitis", "p_psoriasis"]].sum(axis=1), 1.0, atol=1e-5)
    scores = classifier_scores(classifiers["good"], cands, device="cpu")
    assert np.allclose(scores.to_numpy(), probs["p_psoriasis"].to_numpy())

    out = paths["run"] / "sel.csv"
    res = run_cli(
        "select",
        "--candidates",
        paths["manifest"],
        "--out",
        out,
        "--device",
        "cpu",
        "--classifier",
        classifiers["good"],
        "--no-contact-sheets",
    )
    assert res.code == 0, res.stderr
    frame = pd.read_csv(out)
    assert frame["score_pathology"].between(0, 1).all()


def test_classifier_of_other_classes_is_refused(
    run_cli, classifiers: dict[str, Path], tmp_path: Path
) -> None:
    paths = make_candidate_run(tmp_path)
    res = run_cli(
        "select",
        "--candidates",
        paths["manifest"],
        "--out",
        paths["run"] / "s.csv",
        "--classifier",
        classifiers["other"],
        "--device",
        "cpu",
    )
    assert res.code == 2
    assert "trained on other classes" in res.stderr
    assert "'acne', 'eczema'" in res.stderr and "'psoriasis'" in res.stderr
    res = run_cli(
        "select",
        "--candidates",
        paths["manifest"],
        "--out",
        paths["run"] / "s.csv",
        "--classifier",
        tmp_path,
    )
    assert res.code == 2 and "no model.pt" in res.stderr


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CLIP folder (random weights, byte-level tokenizer) built offline."""
    pytest.importorskip(
        "transformers", reason="CLIP scoring needs transformers (the generate extra)"
    )
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from dermsynth.generate.backends.tiny import TINY_MAX_TOKENS, tiny_tokenizer

    folder = tmp_path_factory.mktemp("clip")
    tokenizer = tiny_tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "max_position_embeddings": TINY_MAX_TOKENS,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)
    return folder


def test_clip_zero_shot(run_cli, tiny_clip: Path, tmp_path: Path) -> None:
    clip = load_clip(tiny_clip)
    images = [
        np.random.default_rng(i).integers(0, 255, (48, 48, 3), dtype=np.uint8) for i in range(3)
    ]
    two = clip_scores(clip, images, ["psoriasis", "acne", "psoriasis"], ["psoriasis", "acne"])
    flipped = clip_scores(clip, images, ["acne", "psoriasis", "acne"], ["psoriasis", "acne"])
    assert np.allclose(two + flipped, 1.0)  # softmax over two classes
    one = clip_scores(clip, images, ["psoriasis"] * 3)
    assert ((one >= 0) & (one <= 1)).all()
    with pytest.raises(DermsynthError, match="lack the candidate label"):
        clip_scores(clip, images, ["psoriasis"] * 3, ["acne"])

    paths = make_candidate_run(tmp_path)
    out = paths["run"] / "sel.csv"
    res = run_cli(
        "select",
        "--candidates",
        paths["manifest"],
        "--out",
        out,
        "--clip",
        tiny_clip,
        "--clip-classes",
        "psoriasis,acne",
        "--no-contact-sheets",
        "--device",
        "cpu",
    )
    assert res.code == 0, res.stderr
    assert pd.read_csv(out)["score_pathology"].between(0, 1).all()
    res = run_cli(
        "select", "--candidates", paths["manifest"], "--out", out, "--clip", tmp_path / "nope"
    )
    assert res.code == 2 and "cannot load a CLIP model" in res.stderr


def _images(root: Path, means: list[int], labels: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (mean, label) in enumerate(zip(means, labels, strict=True)):
        path = root / f"c{i}.png"
        pixels = np.clip(rng.normal(mean, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path)
        rows.append({"image_id": f"c{i}", "path": str(path), "label": label})
    return pd.DataFrame(rows)


def test_selection_signal_is_the_scorers_one_vs_rest_auroc(
    classifiers: dict[str, Path], tmp_path: Path
) -> None:
    from sklearn.metrics import roc_auc_score

    from dermsynth.study.quality import pathology_signal

    means = [80, 90, 100, 170, 180, 190]
    labels = ["folliculitis"] * 3 + ["psoriasis"] * 3
    candidates = _images(tmp_path / "c", means, labels)
    run = str(classifiers["good"])
    signal = pathology_signal("train_1-2", candidates, {"psoriasis": run, "folliculitis": run})
    probs = probabilities(run, candidates, device="cpu")
    for condition in ("psoriasis", "folliculitis"):
        row = signal.set_index("condition").loc[condition]
        intended = (candidates["label"] == condition).to_numpy()
        expected = roc_auc_score(intended, probs[f"p_{condition}"].to_numpy())
        assert row["auroc"] == pytest.approx(expected)
        assert row["n_intended"] == 3 and row["n_other"] == 3
    # One condition only: nothing to tell its candidates from, said instead of a number.
    alone = pathology_signal("train_1-2", candidates.assign(label="psoriasis"), {"psoriasis": run})
    assert np.isnan(alone["auroc"].iloc[0]) and "one augmented condition only" in alone["note"][0]
