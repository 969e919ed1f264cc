"""Training runs on tiny simulated images: run folder, fast path vs slow path, feature cache,
resume, bad input, and the ``train`` / ``predict`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageDraw

from dermsynth.config import ClassifierConfig
from dermsynth.data.images import BadImageError
from dermsynth.errors import DermsynthError
from dermsynth.train import run as run_module
from dermsynth.train.predict import load_run
from dermsynth.train.run import train_run
from dermsynth.train.store import ShardStore

CLASSES = ("nd", "psoriasis", "scc")
COLOURS = ((200, 60, 60), (60, 180, 80), (70, 90, 200))


def make_dataset(
    root: Path, n_train: int = 12, n_test: int = 8, size: int = 72, seed: int = 0
) -> Path:
    """Three classes told apart by tint and shape (disc / square); a plan manifest."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for split, n in (("train", n_train), ("test", n_test)):
        for c, name in enumerate(CLASSES):
            for i in range(n):
                base = np.array(COLOURS[c]) * 0.6 + rng.integers(40, 90, size=3)
                pixels = np.clip(base + rng.normal(0, 20, (size, size + 8, 3)), 0, 255).astype(
                    np.uint8
                )
                image = Image.fromarray(pixels)
                x, y = rng.integers(5, size // 3, 2)
                r = rng.integers(size // 4, size // 2)
                colour = tuple(
                    int(v) for v in np.clip(np.array(COLOURS[c]) + rng.normal(0, 25, 3), 0, 255)
                )
                draw = ImageDraw.Draw(image)
                (draw.ellipse if c % 2 == 0 else draw.rectangle)([x, y, x + r, y + r], fill=colour)
                image_id = f"{split}{c}_{i}"
                image.save(root / "images" / f"{image_id}.jpg", quality=90)
                rows.append(
                    {
                        "image_id": image_id,
                        "path": f"images/{image_id}.jpg",
                        "label": name,
                        "fst": 1 if split == "train" else 5,
                        "origin": "real",
                        "parent_id": "",
                        "split": split,
                        "test_group": "" if split == "train" else "5-6",
                    }
                )
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("train_data"))


def small(**overrides: object) -> ClassifierConfig:
    options = {
        "backbone": "resnet18",
        "weights": "none",
        "epochs": 6,
        "lr": 3e-3,
        "image_size": 48,
        "batch_size": 12,
        "views": 2,
        "progress": False,
    }
    options.update(overrides)
    return ClassifierConfig(**options)  # type: ignore[arg-type]


def accuracy(preds: pd.DataFrame) -> float:
    return float((preds["prediction"] == preds["label"]).mean())


def test_fast_path_agrees_with_slow_path(data: Path, tmp_path: Path) -> None:
    fast = train_run(data, tmp_path / "fast", small(path="features"))
    slow = train_run(data, tmp_path / "slow", small(path="images"))
    acc_fast, acc_slow = accuracy(fast.predictions), accuracy(slow.predictions)
    # Same model family and data; 24 test images: both learn, and agree within noise.
    assert acc_fast > 0.5 and acc_slow > 0.5
    assert abs(acc_fast - acc_slow) <= 0.25
    # The same trained model scores the same through cached features and through images.
    via_features = load_run(tmp_path / "fast", device="cpu")
    via_images = load_run(tmp_path / "fast", device="cpu", path="images")
    test = pd.read_csv(data, dtype=str, keep_default_na=False)
    from dermsynth.train.predict import read_manifest

    rows = read_manifest(data)
    rows = rows[rows["split"] == "test"].reset_index(drop=True)
    _, a, _ = via_features.score(rows, skip_bad=False)
    _, b, _ = via_images.score(rows, skip_bad=False)
    assert len(test) == 60
    assert np.allclose(np.exp(a), np.exp(b), atol=0.02)
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.95


def test_feature_cache_is_shared_and_keyed(data: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(data.parent, tmp_path / "data")
    data = tmp_path / "data" / data.name
    cache = tmp_path / "cache"
    train_run(data, tmp_path / "a", small(epochs=1), cache_dir=cache)
    (folder,) = cache.glob("features/*")
    store = ShardStore(folder, 512)
    # 36 training images x (test view + 1 augmented view) + 24 test images' test view, in one
    # shard (data and keys) written by one writer (its slot's lock file).
    assert len(store.snapshot()) == 36 * 2 + 24
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert len(files) == 4  # key.json, the slot's lock, the shard and its keys
    stamp = {f: f.stat().st_mtime_ns for f in files}
    train_run(
        data, tmp_path / "b", small(epochs=1, seed=1), cache_dir=cache
    )  # another seed: shared
    assert {f: f.stat().st_mtime_ns for f in files} == stamp
    Image.new("RGB", (80, 72), (10, 200, 10)).save(tmp_path / "data" / "images" / "test0_0.jpg")
    train_run(data, tmp_path / "b2", small(epochs=1), cache_dir=cache)  # changed image: new entry
    assert len(store.snapshot()) == 36 * 2 + 24 + 1
    assert store.count_files() == 4
    train_run(
        data, tmp_path / "c", small(epochs=1, image_size=72), cache_dir=cache
    )  # new transform
    assert len(list(cache.glob("features/*"))) == 2
    key = json.loads(next(cache.glob("features/*/key.json")).read_text())
    assert {"backbone", "weights", "torchvision", "transform"} <= set(key)


def test_same_seed_same_run_whether_the_cache_is_cold_or_warm(data: Path, tmp_path: Path) -> None:
    cold = train_run(data, tmp_path / "a", small(epochs=2), cache_dir=tmp_path / "cache")
    warm = train_run(data, tmp_path / "b", small(epochs=2), cache_dir=tmp_path / "cache")
    pd.testing.assert_frame_equal(cold.predictions, warm.predictions)
    pd.testing.assert_frame_equal(
        cold.log.drop(columns="seconds"), warm.log.drop(columns="seconds")
    )


def test_run_folder_resume_and_no_redo(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    original = run_module._save_state

    def killed_after_two(path: Path, payload: dict) -> None:
        original(path, payload)
        if payload["loop"]["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "_save_state", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        train_run(data, out, small(epochs=4))
    first = pd.read_csv(out / "train_log.csv")
    assert first["epoch"].tolist() == [1, 2] and (out / "last.pt").exists()
    monkeypatch.setattr(run_module, "_save_state", original)
    result = train_run(data, out, small(epochs=4))
    log = pd.read_csv(out / "train_log.csv")
    assert log["epoch"].tolist() == [1, 2, 3, 4]
    pd.testing.assert_frame_equal(log.iloc[:2][["loss", "train_acc"]], first[["loss", "train_acc"]])
    assert list(log.columns) == ["epoch", "loss", "train_acc", "val_acc", "lr", "seconds"]
    assert not (out / "last.pt").exists() and (out / "model.pt").exists()
    assert result.predictions is not None
    again = train_run(data, out, small(epochs=4))
    assert again.reused
    with pytest.raises(DermsynthError, match="other settings.*epochs"):
        train_run(data, out, small(epochs=5))


def test_early_stopping_uses_a_validation_split_of_training_rows(
    data: Path, tmp_path: Path
) -> None:
    result = train_run(data, tmp_path / "run", small(epochs=8, val_fraction=0.25, patience=2))
    assert result.log["val_acc"].notna().all()
    payload = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert payload["best_val"] == result.log["val_acc"].max()
    assert len(result.predictions) == 24  # test rows untouched by the validation split


def test_bad_images(data: Path, tmp_path: Path) -> None:
    manifest = pd.read_csv(data, dtype=str, keep_default_na=False)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    manifest["path"] = [str(data.parent / p) for p in manifest["path"]]
    manifest.loc[0, "path"] = str(bad)
    path = tmp_path / "m.csv"
    manifest.to_csv(path, index=False)
    with pytest.raises(BadImageError, match="train0_0.*broken.jpg.*--skip-bad-images") as err:
        train_run(path, tmp_path / "r1", small(epochs=1))
    # The same error reaches `study run`, which has no such flag: it names the config key too.
    assert "in a study config, classifier: {skip_bad_images: true}" in str(err.value)
    result = train_run(path, tmp_path / "r2", small(epochs=1, skip_bad_images=True))
    assert result.skipped["image_id"].tolist() == ["train0_0"]
    assert pd.read_csv(tmp_path / "r2" / "skipped_images.csv")["image_id"].tolist() == ["train0_0"]


def test_manifest_problems(data: Path, tmp_path: Path) -> None:
    manifest = pd.read_csv(data, dtype=str, keep_default_na=False)
    manifest["path"] = [str(data.parent / p) for p in manifest["path"]]
    only_test = tmp_path / "only_test.csv"
    manifest[manifest["split"] == "test"].to_csv(only_test, index=False)
    with pytest.raises(DermsynthError, match="no training rows"):
        train_run(only_test, tmp_path / "r", small())
    with pytest.raises(DermsynthError, match="'melanoma' have no training images"):
        train_run(data, tmp_path / "r", small(classes=("nd", "psoriasis", "scc", "melanoma")))
    no_split = tmp_path / "no_split.csv"
    manifest.drop(columns=["split", "test_group"]).head(30).to_csv(no_split, index=False)
    result = train_run(no_split, tmp_path / "all", small(epochs=1))
    assert result.predictions is None and not (tmp_path / "all" / "predictions.csv").exists()


def test_cli_train_and_predict_with_the_recipe(data: Path, tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "runs" / "vgg"
    args = [
        "train",
        "--manifest",
        data,
        "--out",
        out,
        "--weights",
        "none",
        "--epochs",
        "2",
        "--image-size",
        "64",
        "--batch-size",
        "12",
        # Two views per training image (the default is 8): the command's outputs, not how well
        # the model learns, are checked here.
        "--views",
        "2",
        "--no-progress",
        "--classes",
        "scc,nd,psoriasis",
    ]
    result = run_cli(*args)
    assert result.code == 0, result.stderr
    assert "test accuracy" in result.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["backbone"] == "vgg16" and config["classes"] == [
        "scc",
        "nd",
        "psoriasis",
    ]
    preds = pd.read_csv(out / "predictions.csv")
    assert list(preds.columns) == [
        "image_id",
        "label",
        "fst",
        "prediction",
        "p_scc",
        "p_nd",
        "p_psoriasis",
        "split",
        "test_group",
    ]
    assert np.allclose(preds[["p_scc", "p_nd", "p_psoriasis"]].sum(axis=1), 1.0, atol=1e-4)
    checkpoint = torch.load(out / "model.pt", weights_only=True)
    assert checkpoint["classes"] == ["scc", "nd", "psoriasis"] and checkpoint["backbone"] == "vgg16"
    assert set(checkpoint["state"]) == {
        "classifier.6.0.weight",
        "classifier.6.0.bias",
        "classifier.6.3.weight",
        "classifier.6.3.bias",
    }
    assert (tmp_path / "runs" / "cache" / "images").is_dir()  # default cache: beside the run
    assert "already trained" in run_cli(*args).stdout

    again = tmp_path / "preds.csv"
    result = run_cli("predict", "--run", out, "--manifest", data, "--out", again, "--no-progress")
    assert result.code == 0, result.stderr
    pd.testing.assert_frame_equal(pd.read_csv(again), preds)

    bad = run_cli("train", "--manifest", data, "--out", tmp_path / "x", "--backbone", "resnet19")
    assert bad.code == 2 and "did you mean resnet18" in bad.stderr
    missing = run_cli("predict", "--run", tmp_path / "nothing", "--manifest", data, "--out", again)
    assert missing.code == 2 and "no model.pt" in missing.stderr
