"""``dermsynth train`` and ``dermsynth predict`` (heavy imports stay inside the commands)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from dermsynth.cli.options import option, settings
from dermsynth.config import ClassifierConfig
from dermsynth.errors import DermsynthError

if TYPE_CHECKING:
    import pandas as pd

CACHE_DIR = typer.Option(
    None,
    "--cache-dir",
    help="Resized images and backbone features (default: RUN/../cache, shared by sibling runs).",
)
SKIP_BAD = option(
    ClassifierConfig,
    "skip_bad_images",
    help="Leave out unreadable images (listed in RUN/skipped_images.csv).",
)


C = ClassifierConfig


def train(
    manifest: Path = typer.Option(
        ..., "--manifest", help="Manifest or plan CSV (split train/seed/test)."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Run folder (re-running a finished run does nothing)."
    ),
    backbone: str = option(C, "backbone"),
    weights: str = option(C, "weights"),
    finetune: bool = option(C, "finetune"),
    epochs: int = option(C, "epochs"),
    batch_size: int = option(C, "batch_size"),
    lr: float | None = option(C, "lr"),
    image_size: int | None = option(C, "image_size"),
    resize: int | None = option(C, "resize"),
    classes: str | None = typer.Option(
        None, "--classes", help="Comma list: the model's classes, in order."
    ),
    val_fraction: float = option(C, "val_fraction"),
    patience: int | None = option(C, "patience"),
    path: str = option(C, "path"),
    views: int = option(C, "views"),
    workers: int = option(C, "workers"),
    seed: int = option(C, "seed"),
    device: str = option(C, "device"),
    amp: bool = option(C, "amp", "--amp/--no-amp"),
    channels_last: bool = option(C, "channels_last", "--channels-last/--no-channels-last"),
    cache_dir: Path | None = CACHE_DIR,
    skip_bad_images: bool = SKIP_BAD,
    progress: bool = option(C, "progress", "--progress/--no-progress"),
) -> None:
    """Train a classifier (default: the Groh et al. recipe, frozen VGG16) on a manifest."""
    from dermsynth.data.manifest import parse_conditions
    from dermsynth.train.run import train_run

    names = parse_conditions(classes) if classes is not None else None
    config = settings(
        ClassifierConfig,
        backbone=backbone,
        weights=weights,
        finetune=finetune,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        image_size=image_size,
        resize=resize,
        val_fraction=val_fraction,
        patience=patience,
        classes=tuple(names) if names else None,
        path=path,
        views=views,
        amp=amp,
        channels_last=channels_last,
        device=device,
        workers=workers,
        seed=seed,
        skip_bad_images=skip_bad_images,
        progress=progress,
    )
    result = train_run(manifest, out, config, cache_dir=cache_dir)
    _report_skipped(result.skipped)
    if result.reused:
        typer.echo(f"{out}: already trained with these options; nothing to do")
        return
    last = result.log.iloc[-1] if len(result.log) else None
    summary = f"trained {len(result.classes)} classes for {len(result.log)} epoch(s) in {result.seconds:.0f}s"
    if last is not None:
        summary += f" (last loss {last['loss']:.3f}, train acc {last['train_acc']:.3f})"
    typer.echo(f"{summary}; wrote {out}")
    if result.predictions is not None:
        acc = float((result.predictions["prediction"] == result.predictions["label"]).mean())
        typer.echo(
            f"test accuracy {acc:.3f} on {len(result.predictions)} images: {out / 'predictions.csv'}"
        )


def predict(
    run: Path = typer.Option(..., "--run", help="A finished training run folder."),
    manifest: Path = typer.Option(..., "--manifest", help="Manifest of the images to score."),
    out: Path = typer.Option(..., "--out", help="Predictions CSV to write."),
    split: str = typer.Option(
        "test",
        "--split",
        help="Rows of this split (when the manifest has one); 'all' for every row.",
    ),
    cache_dir: Path | None = CACHE_DIR,
    skip_bad_images: bool = SKIP_BAD,
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1),
    workers: int | None = typer.Option(None, "--workers", min=0),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Score images with a trained run: image_id,label,fst,prediction and p_<class> columns."""
    from dermsynth.train.predict import predict as run_predict

    if split not in ("train", "seed", "test", "all"):
        raise DermsynthError(f"--split must be train, seed, test or all, got {split!r}")
    frame, skipped = run_predict(
        run,
        manifest,
        out,
        split=None if split == "all" else split,
        cache_dir=cache_dir,
        skip_bad_images=skip_bad_images,
        device=device,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
    )
    _report_skipped(skipped)
    acc = float((frame["prediction"] == frame["label"]).mean()) if len(frame) else float("nan")
    typer.echo(f"wrote {out}: {len(frame)} predictions (accuracy {acc:.3f})")


def _report_skipped(skipped: pd.DataFrame | None) -> None:
    if skipped is None or not len(skipped):
        return
    typer.echo(f"skipped {len(skipped)} unreadable image(s):", err=True)
    for _, row in skipped.head(20).iterrows():
        typer.echo(f"  {row['image_id']}: {row['reason']}", err=True)
    if len(skipped) > 20:
        typer.echo(f"  ... and {len(skipped) - 20} more", err=True)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the root app."""
    app.command()(train)
    app.command()(predict)
