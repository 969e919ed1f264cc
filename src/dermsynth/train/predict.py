"""Scoring rows with a model (shared by training and ``dermsynth predict``), and reading a run.

The predictions CSV: ``image_id,label,fst,prediction``, then ``p_<class>`` for every class in
the model's order, then ``split`` and ``test_group`` when the manifest has them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from dermsynth.config import ClassifierConfig
from dermsynth.data.images import ImageCache
from dermsynth.data.manifest import load_manifest
from dermsynth.errors import DermsynthError
from dermsynth.io import atomic_write_csv
from dermsynth.train.backbones import weights_identity
from dermsynth.train.datasets import (
    ImageDataset,
    PreparedImages,
    TransformSpec,
    prepare_images,
    resolve_paths,
    test_transform,
)
from dermsynth.train.features import TEST_VIEW, FeatureBatches, FeatureStore
from dermsynth.train.loop import log_probs
from dermsynth.train.model import Classifier
from dermsynth.train.store import StoredRows

CHECKPOINT = "model.pt"
CHECKPOINT_FORMAT = 1


def pick_device(name: str) -> torch.device:
    """'auto' is the GPU where there is one; asking for a missing GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DermsynthError(f"unknown device {name!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DermsynthError(f"device {name!r} asked for, but no CUDA GPU is available; use cpu")
    return device


def read_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Load a manifest and resolve its relative image paths (as given, then beside the CSV)."""
    manifest = load_manifest(path)
    manifest["path"] = resolve_paths(manifest["path"], Path(path).resolve().parent)
    return manifest


@dataclass
class Scorer:
    """A model with what scoring needs: its transform, caches and device."""

    model: Classifier
    config: ClassifierConfig
    spec: TransformSpec
    weights_id: str
    cache_dir: Path
    device: torch.device

    @property
    def image_cache(self) -> ImageCache:
        """Resized copies of the images, shorter side = the transform's resize."""
        return ImageCache(self.cache_dir / "images", self.spec.resize)

    @property
    def store(self) -> FeatureStore:
        """The feature cache of this backbone, weights and transform."""
        return FeatureStore(self.cache_dir, self.model, self.weights_id, self.spec)

    @property
    def amp(self) -> bool:
        """Mixed precision only on a GPU."""
        return self.config.amp and self.device.type == "cuda"

    @property
    def channels_last(self) -> bool:
        """channels_last only on a GPU."""
        return self.config.channels_last and self.device.type == "cuda"

    def features(
        self, rows: pd.DataFrame, views: list[str], *, skip_bad: bool
    ) -> tuple[PreparedImages, StoredRows]:
        """Cached trunk features (items, views, dim) of ``rows``, read from the store on
        demand; missing views are computed, decoding only the images they need."""
        cfg = self.config
        hashed = prepare_images(
            rows, self.image_cache, skip_bad=skip_bad, workers=cfg.workers, decode=False
        )
        store = self.store
        todo = store.missing(hashed.hashes, views)
        if todo:
            need = sorted({i for i, _ in todo})
            decoded = prepare_images(
                hashed.rows.iloc[need],
                self.image_cache,
                skip_bad=skip_bad,
                workers=cfg.workers,
                decode=True,
            )
            if len(decoded.skipped):  # undecodable: drop them, recompute what is missing
                bad = set(decoded.skipped["image_id"])
                keep = [i for i, r in enumerate(hashed.rows["image_id"]) if r not in bad]
                hashed = PreparedImages(
                    hashed.rows.iloc[keep].reset_index(drop=True),
                    [hashed.hashes[i] for i in keep],
                    [hashed.entries[i] for i in keep],
                    pd.concat([hashed.skipped, decoded.skipped], ignore_index=True),
                )
                todo = store.missing(hashed.hashes, views)
            store.compute(
                self.model.to(self.device),
                hashed.entries,
                hashed.hashes,
                todo,
                batch_size=max(cfg.batch_size, 64),
                workers=cfg.workers,
                device=self.device,
                amp=self.amp,
                channels_last=self.channels_last,
                progress=cfg.progress,
            )
        return hashed, store.load(hashed.hashes, views)

    def score(
        self, rows: pd.DataFrame, *, skip_bad: bool
    ) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
        """Log-probabilities of ``rows`` (test transform); returns (rows kept, logp, skipped)."""
        model = self.model.to(self.device)
        if model.frozen and self.config.uses_features:
            prepared, feats = self.features(rows, [TEST_VIEW], skip_bad=skip_bad)
            batches = FeatureBatches(
                feats, [0] * len(prepared.rows), max(self.config.batch_size, 256)
            )()
            logp, _ = log_probs(model, model.tail, batches, self.device, amp=self.amp)
        else:
            prepared = prepare_images(
                rows, self.image_cache, skip_bad=skip_bad, workers=self.config.workers
            )
            dataset = ImageDataset(
                prepared.entries,
                [0] * len(prepared.rows),
                test_transform(self.spec, to_float=False),
            )
            loader = DataLoader(
                dataset, batch_size=self.config.batch_size, num_workers=self.config.workers
            )
            logp, _ = log_probs(
                model, model, loader, self.device, amp=self.amp, channels_last=self.channels_last
            )
        return prepared.rows, logp, prepared.skipped


def predictions_frame(rows: pd.DataFrame, logp: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """The predictions table (see the module docstring)."""
    probs = np.exp(logp.astype(np.float64)) if len(rows) else np.zeros((0, len(classes)))
    out = pd.DataFrame(
        {
            "image_id": rows["image_id"].to_numpy(),
            "label": rows["label"].to_numpy(),
            "fst": rows["fst"].to_numpy(),
            "prediction": [classes[i] for i in probs.argmax(1)] if len(rows) else [],
        }
    )
    for j, name in enumerate(classes):
        out[f"p_{name}"] = probs[:, j]
    for column in ("split", "test_group"):
        if column in rows.columns:
            out[column] = rows[column].to_numpy()
    return out


def save_checkpoint(
    path: Path,
    model: Classifier,
    config: ClassifierConfig,
    spec: TransformSpec,
    weights_id: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """model.pt: classes, backbone, weights identity, recipe options and the trained tensors."""
    import io

    from dermsynth.io import atomic_write_bytes

    payload = {
        "format": CHECKPOINT_FORMAT,
        "classes": model.classes,
        "backbone": model.info.name,
        "weights": config.weights,
        "weights_id": weights_id,
        "config": config.to_dict(),
        "transform": spec.to_dict(),
        "frozen_fingerprint": model.frozen_fingerprint(),
        "state": model.trained_state(),
        **(extra or {}),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_run(
    run_dir: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    **overrides: Any,
) -> Scorer:
    """Rebuild a finished run's model from RUN/model.pt (the frozen part from its weights)."""
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT
    if not path.is_file():
        hint = (
            " (the run has not finished; re-run `dermsynth train` to resume it)"
            if (run_dir / "last.pt").exists()
            else ""
        )
        raise DermsynthError(f"{run_dir}: no {CHECKPOINT} here{hint}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is the same user error
        raise DermsynthError(f"{path}: not a readable checkpoint ({exc})") from None
    settings = {**payload["config"], **{k: v for k, v in overrides.items() if v is not None}}
    config = ClassifierConfig.from_dict(settings)
    weights_id = weights_identity(config.weights)
    if weights_id != payload["weights_id"]:
        raise DermsynthError(
            f"{path} was trained on weights {payload['weights_id']}, but {config.weights} is now "
            f"{weights_id}; restore the original weights file"
        )
    model = Classifier(config, list(payload["classes"]))
    if model.frozen_fingerprint() != payload["frozen_fingerprint"]:
        raise DermsynthError(
            f"{path}: the rebuilt {config.backbone} backbone ({config.weights}) differs from the one "
            "trained (another torch/torchvision version?); retrain the run"
        )
    missing, unexpected = model.net.load_state_dict(payload["state"], strict=False)
    if unexpected or set(missing) & set(model.saved_keys()):
        raise DermsynthError(
            f"{path}: checkpoint does not fit {config.backbone} (keys {unexpected[:3]})"
        )
    fields: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in payload["transform"].items()
    }
    spec = TransformSpec(**fields)
    cache = Path(cache_dir) if cache_dir is not None else run_dir.resolve().parent / "cache"
    return Scorer(model, config, spec, weights_id, cache, pick_device(device))


def predict(
    run_dir: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    split: str | None = "test",
    cache_dir: str | os.PathLike[str] | None = None,
    skip_bad_images: bool = False,
    device: str = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score a manifest's rows (``split`` rows when it has a split column; all rows for None)
    with a finished run and write the predictions CSV; returns (predictions, skipped)."""
    scorer = load_run(
        run_dir,
        cache_dir=cache_dir,
        device=device,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
    )
    rows = read_manifest(manifest)
    if split is not None and "split" in rows.columns:
        found = sorted(set(rows["split"]))
        rows = rows[rows["split"] == split]
        if rows.empty:
            raise DermsynthError(
                f"{manifest}: no rows with split {split!r} (splits: {', '.join(found)})"
            )
    kept, logp, skipped = scorer.score(rows.reset_index(drop=True), skip_bad=skip_bad_images)
    frame = predictions_frame(kept, logp, scorer.model.classes)
    atomic_write_csv(out, frame)
    return frame, skipped
