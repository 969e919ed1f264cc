"""One training run, end to end: manifest in, run folder out.

The run folder holds ``config.json`` (resolved options), ``model.pt`` (final checkpoint),
``train_log.csv`` (one row per epoch), ``predictions.csv`` (the test rows, when the manifest
has them) and, while training, ``last.pt`` (the last finished epoch: a killed run resumes from
it). A finished run is never redone. Caches (resized images, trunk features) live in
``<RUN>/../cache`` unless ``cache_dir`` is given, so sibling runs of a study share them.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from dermsynth.config import ClassifierConfig
from dermsynth.errors import DermsynthError
from dermsynth.io import (
    FolderLock,
    atomic_save,
    atomic_write_csv,
    atomic_write_json,
    clear_partials,
)
from dermsynth.schema import AUGMENTED, SYNTHETIC, TEST, TRAIN_SPLITS, VIEW_SET, WEIGHT
from dermsynth.train.augment import AugmentedImages
from dermsynth.train.backbones import backbone_info, weights_identity
from dermsynth.train.datasets import (
    ImageDataset,
    PreparedImages,
    TransformSpec,
    class_balanced_sampler,
    prepare_images,
    test_transform,
)
from dermsynth.train.features import TEST_VIEW, FeatureBatches, train_views
from dermsynth.train.loop import Batches, Forward, LoopState, fit, make_optimizer
from dermsynth.train.model import Classifier
from dermsynth.train.predict import (
    CHECKPOINT,
    Scorer,
    pick_device,
    predictions_frame,
    read_manifest,
    save_checkpoint,
)
from dermsynth.train.store import StoredRows

MADE = (SYNTHETIC, AUGMENTED)  # training rows made by the product, whatever their split


@dataclass
class RunResult:
    """What a run produced (``reused``: it had already finished and nothing was redone)."""

    run_dir: Path
    classes: list[str]
    log: pd.DataFrame
    predictions: pd.DataFrame | None
    skipped: pd.DataFrame
    seconds: float
    reused: bool = False


def split_rows(manifest: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, test rows): train/seed splits plus synthetic rows; all rows when the
    manifest has no ``split`` column (then there are no test rows)."""
    if "split" not in manifest.columns:
        return manifest.reset_index(drop=True), manifest.iloc[:0]
    train = manifest["split"].isin(TRAIN_SPLITS) | manifest["origin"].isin(MADE)
    return manifest[train].reset_index(drop=True), manifest[manifest["split"] == TEST].reset_index(
        drop=True
    )


def resolve_classes(train: pd.DataFrame, classes: tuple[str, ...] | None, source: str) -> list[str]:
    """Sorted training labels, or the given list; every class needs training images."""
    if train.empty:
        raise DermsynthError(
            f"{source}: no training rows (split 'train' or 'seed', or origin 'synthetic')"
        )
    labels = set(train["label"])
    names = list(classes) if classes else sorted(labels)
    if len(set(names)) != len(names):
        raise DermsynthError(f"--classes names a class twice: {', '.join(names)}")
    empty = [c for c in names if c not in labels]
    if empty:
        raise DermsynthError(
            f"{source}: class(es) {', '.join(map(repr, empty))} have no training images"
        )
    extra = sorted(labels - set(names))
    if extra:
        raise DermsynthError(
            f"{source}: training rows with labels not in --classes: {', '.join(extra)}"
        )
    if len(names) < 2:
        raise DermsynthError(
            f"{source}: training rows have one class ({names[0]!r}); need at least 2"
        )
    return names


def carve_validation(train: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of validation rows: per class, ``fraction`` of its real (non-synthetic)
    training rows, at least one row left to train on. Never from test rows."""
    mask = np.zeros(len(train), dtype=bool)
    if fraction <= 0:
        return mask
    rng = np.random.default_rng(seed)
    real = ~train["origin"].isin(MADE).to_numpy()
    for label in sorted(set(train["label"])):
        idx = np.flatnonzero((train["label"].to_numpy() == label) & real)
        n = min(round(len(idx) * fraction), len(idx) - 1) if len(idx) > 1 else 0
        mask[rng.choice(idx, size=n, replace=False)] = True
    return mask


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), for comparisons."""
    import json

    return json.loads(json.dumps(value))


def _save_state(path: Path, payload: dict[str, Any]) -> None:
    atomic_save(path, lambda handle: torch.save(payload, handle))


def train_run(
    manifest: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: ClassifierConfig | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> RunResult:
    """Train one model on a manifest's training rows; write the run folder (see module doc)."""
    config = config or ClassifierConfig()
    started = time.perf_counter()
    run_dir = Path(out)
    cache = Path(cache_dir) if cache_dir is not None else run_dir.resolve().parent / "cache"
    rows = read_manifest(manifest)
    train, test = split_rows(rows)
    classes = resolve_classes(train, config.classes, str(manifest))
    info = backbone_info(config.backbone)
    weights_id = weights_identity(config.weights)
    resolved = {
        "options": config.to_dict(),
        "identity": _jsonable(config.identity()),
        "classes": classes,
        "manifest": str(Path(manifest).resolve()),
        "cache_dir": str(cache),
        "weights_id": weights_id,
        "backbone": asdict(info),
        "torch": torch.__version__,
    }
    with FolderLock(run_dir, "a training run"):
        # Under the lock nobody else writes here: a killed run's temporary files are junk.
        clear_partials(run_dir)
        done = _finished(run_dir, resolved)
        if done is not None:
            return done
        return _train(run_dir, rows, train, test, classes, config, resolved, cache, started)


def _train(
    run_dir: Path,
    rows: pd.DataFrame,
    train: pd.DataFrame,
    test: pd.DataFrame,
    classes: list[str],
    config: ClassifierConfig,
    resolved: dict[str, Any],
    cache: Path,
    started: float,
) -> RunResult:
    manifest = resolved["manifest"]
    info = backbone_info(config.backbone)
    weights_id = resolved["weights_id"]
    atomic_write_json(run_dir / "config.json", resolved)

    torch.manual_seed(config.seed)
    device = pick_device(config.device)
    model = Classifier(config, classes).to(device)
    if device.type == "cuda" and config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    spec = TransformSpec.build(config, info)
    scorer = Scorer(model, config, spec, weights_id, cache, device)
    is_val = carve_validation(train, config.val_fraction, config.seed)
    index = {c: i for i, c in enumerate(classes)}
    generator = torch.Generator().manual_seed(config.seed)

    fast = config.uses_features
    data = _fast_path_data if fast else _image_path_data
    fit_rows, val_rows, train_batches, val_batches, forward = data(
        scorer, train[~is_val], train[is_val], index, generator
    )
    skipped = pd.concat([fit_rows.skipped, val_rows.skipped], ignore_index=True)
    resolve_classes(fit_rows.rows, tuple(classes), f"{manifest} (after skipping bad images)")

    optimizer, scheduler = make_optimizer(model, config)
    state = _resume(run_dir, config, model, optimizer, scheduler, generator)

    def on_epoch(s: LoopState) -> None:
        atomic_write_csv(run_dir / "train_log.csv", pd.DataFrame(s.log))
        _save_state(
            run_dir / "last.pt",
            {
                "identity": config.identity(),
                "loop": asdict(s),
                "model": model.trained_state(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(),
                "generator": generator.get_state(),
            },
        )

    has_val = bool(is_val.any()) and len(val_rows.rows) > 0
    state = fit(
        model,
        forward,
        train_batches,
        val_batches if has_val else None,
        config,
        device,
        state,
        optimizer,
        scheduler,
        on_epoch,
    )
    if state.best_state is not None:
        model.net.load_state_dict(state.best_state, strict=False)
    if len(skipped):
        atomic_write_csv(run_dir / "skipped_images.csv", skipped)
    predictions = None
    if len(test):
        kept, logp, test_skipped = scorer.score(test, skip_bad=config.skip_bad_images)
        predictions = predictions_frame(kept, logp, classes)
        atomic_write_csv(run_dir / "predictions.csv", predictions)
        skipped = pd.concat([skipped, test_skipped], ignore_index=True)
        if len(test_skipped):
            atomic_write_csv(run_dir / "skipped_images.csv", skipped)
    save_checkpoint(
        run_dir / CHECKPOINT,
        model,
        config,
        spec,
        weights_id,
        {
            "epochs_run": state.epoch,
            "stopped_early": state.stopped_early,
            "best_val": state.best_val if has_val else None,
            "fast_path": fast,
        },
    )
    (run_dir / "last.pt").unlink(missing_ok=True)
    return RunResult(
        run_dir,
        classes,
        pd.DataFrame(state.log),
        predictions,
        skipped.reset_index(drop=True),
        time.perf_counter() - started,
    )


Data = tuple[PreparedImages, PreparedImages, Batches, Batches, Forward]


def _fast_path_data(
    scorer: Scorer,
    fit: pd.DataFrame,
    val: pd.DataFrame,
    index: dict[str, int],
    generator: torch.Generator,
) -> Data:
    """Batches of cached trunk features (K views per training image); forward = the tail."""
    config, skip = scorer.config, scorer.config.skip_bad_images
    fit_rows, fit_feats = _training_features(scorer, fit)
    val_rows, val_feats = scorer.features(val, [TEST_VIEW], skip_bad=skip)
    targets = [index[c] for c in fit_rows.rows["label"]]
    sampler = class_balanced_sampler(targets, len(index), generator, row_weights(fit_rows.rows))
    return (
        fit_rows,
        val_rows,
        FeatureBatches(fit_feats, targets, config.batch_size, sampler, generator),
        FeatureBatches(val_feats, [index[c] for c in val_rows.rows["label"]], 256),
        scorer.model.tail,
    )


def _training_features(scorer: Scorer, fit: pd.DataFrame) -> tuple[PreparedImages, StoredRows]:
    """Features of K views per training row; a repeated image's copy k uses its k-th view set."""
    views, skip = scorer.config.views, scorer.config.skip_bad_images
    sets = fit[VIEW_SET] if VIEW_SET in fit.columns else pd.Series(0, index=fit.index)
    parts = [
        scorer.features(fit[sets == k], train_views(views, int(k)), skip_bad=skip)
        for k in sorted(set(sets))
    ]
    if len(parts) == 1:
        return parts[0]
    prepared = PreparedImages(
        pd.concat([p.rows for p, _ in parts], ignore_index=True),
        [h for p, _ in parts for h in p.hashes],
        [e for p, _ in parts for e in p.entries],
        pd.concat([p.skipped for p, _ in parts], ignore_index=True),
    )
    return prepared, StoredRows.concat([f for _, f in parts])


def row_weights(rows: pd.DataFrame) -> np.ndarray | None:
    """The sampler weight of each training row (None: every row counts once)."""
    return rows[WEIGHT].to_numpy(dtype=float) if WEIGHT in rows.columns else None


def _image_path_data(
    scorer: Scorer,
    fit: pd.DataFrame,
    val: pd.DataFrame,
    index: dict[str, int],
    generator: torch.Generator,
) -> Data:
    """Transformed images every epoch (the slow path); forward = the whole model."""
    config, spec = scorer.config, scorer.spec
    fit_rows, val_rows = (
        prepare_images(
            rows, scorer.image_cache, skip_bad=config.skip_bad_images, workers=config.workers
        )
        for rows in (fit, val)
    )
    targets = [index[c] for c in fit_rows.rows["label"]]
    sampler = class_balanced_sampler(targets, len(index), generator, row_weights(fit_rows.rows))
    loader = DataLoader(
        AugmentedImages(fit_rows.entries, targets, spec),  # the recipe, one resampling
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.workers,
        generator=generator,
        pin_memory=scorer.device.type == "cuda",
        persistent_workers=config.workers > 0,
    )  # workers start once, not per epoch
    val_set = ImageDataset(
        val_rows.entries,
        [index[c] for c in val_rows.rows["label"]],
        test_transform(spec, to_float=False),
    )
    val_loader = DataLoader(val_set, batch_size=config.batch_size, num_workers=config.workers)
    return fit_rows, val_rows, (lambda: loader), (lambda: val_loader), scorer.model


def _own_manifest(old: object, new: str, run_dir: Path) -> bool:
    """True when both manifests are the run folder's own file (it may have moved since)."""
    if not isinstance(old, str):
        return False
    was, now = Path(old), Path(new)
    return (
        was.name == now.name
        and now.parent == run_dir.resolve()
        and was.parent.name == run_dir.resolve().name
    )


def _finished(run_dir: Path, resolved: dict[str, Any]) -> RunResult | None:
    """The finished run in ``run_dir`` if its options match; refuse a folder of another run."""
    config_path = run_dir / "config.json"
    if not config_path.exists():
        return None
    import json

    old = json.loads(config_path.read_text(encoding="utf-8"))
    for key in ("identity", "classes", "manifest", "weights_id"):
        if key == "manifest" and _own_manifest(old.get(key), resolved[key], run_dir):
            continue  # the folder's own manifest.csv, the folder moved since
        if old.get(key) != resolved[key]:
            changed = key
            if key == "identity":
                changed = ", ".join(k for k in resolved[key] if old[key].get(k) != resolved[key][k])
            raise DermsynthError(
                f"{run_dir} holds a run with other settings ({changed}); choose a new --out folder "
                "or delete that one"
            )
    if not (run_dir / CHECKPOINT).exists():
        return None
    log = (
        pd.read_csv(run_dir / "train_log.csv")
        if (run_dir / "train_log.csv").exists()
        else pd.DataFrame()
    )
    preds_path = run_dir / "predictions.csv"
    preds = (
        pd.read_csv(preds_path, dtype={"image_id": str, "label": str})
        if preds_path.exists()
        else None
    )
    skipped_path = run_dir / "skipped_images.csv"
    skipped = pd.read_csv(skipped_path, dtype=str) if skipped_path.exists() else pd.DataFrame()
    return RunResult(run_dir, list(resolved["classes"]), log, preds, skipped, 0.0, reused=True)


def _resume(
    run_dir: Path,
    config: ClassifierConfig,
    model: Classifier,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> LoopState:
    path = run_dir / "last.pt"
    if not path.exists():
        return LoopState()
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if _jsonable(saved["identity"]) != _jsonable(config.identity()):
        return LoopState()
    model.net.load_state_dict(saved["model"], strict=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"])
    generator.set_state(saved["generator"])
    return LoopState(**saved["loop"])
