"""``dermsynth export SELECTION``: share a selected synthetic set (ImageFolder or WebDataset)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's command to the root app."""
    app.command("export")(export)


def export(
    selection: Path = typer.Argument(
        ..., help="Selected manifest written by `dermsynth select` (or its folder)."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Folder to write (replaced whole if it holds an earlier export)."
    ),
    fmt: str = typer.Option("imagefolder", "--format", help="imagefolder or webdataset."),
    licence: str | None = typer.Option(
        None,
        "--licence",
        help="Licence terms of the seed images' source dataset, carried over to the set "
        "(e.g. 'CC BY-NC-SA 3.0' for Fitzpatrick 17k).",
    ),
    quality: Path | None = typer.Option(
        None,
        "--quality",
        help="Folder of `dermsynth evaluate synthetic --out` (its synthetic_quality.csv goes in the card).",
    ),
    name: str | None = typer.Option(
        None, "--name", help="The set's name (default: from its conditions)."
    ),
    shard_size: int = typer.Option(1000, "--shard-size", help="Images per WebDataset shard."),
) -> None:
    """Write the images a study trains on, with a dataset card (README.md) and Croissant
    metadata marking them synthetic; print where."""
    from dermsynth.export import export_selection

    result = export_selection(
        selection, out, fmt, licence=licence, quality=quality, name=name, shard_size=shard_size
    )
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(
        f"exported {result.images} synthetic images ({result.format}, {result.files} files) to {result.out}"
    )
