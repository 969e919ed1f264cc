"""Options shared by commands that read a table of images."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer

from dermsynth.config import DatasetConfig

CSV = typer.Option(
    ..., "--csv", help="A dataset's table (see --dataset), a dermsynth manifest, or any CSV."
)
DATASET = typer.Option(
    None, "--dataset", help="The table's published schema: fitzpatrick17k, ddi, pad-ufes-20, scin."
)
RATER = typer.Option(
    None,
    "--rater",
    help="Skin-tone rater column, or ita (from the images); repeat for several (needs --consensus).",
)
CONSENSUS = typer.Option(
    None, "--consensus", help="Combine several raters: mean, median, majority or first."
)
SCALE = typer.Option(None, "--scale", help="Scale of a generic table's rater: fst or mst.")
LABEL_MAP = typer.Option(
    None, "--label-map", help="CSV mapping the dataset's labels to conditions (data label-map)."
)
FST_COLUMN = typer.Option(
    None,
    "--fst-column",
    help="Skin-type column: fitzpatrick_scale (default) or fitzpatrick_centaur; name it for other CSVs.",
)
ID_COLUMN = typer.Option(None, "--id-column", help="Image-id column of a generic CSV.")
LABEL_COLUMN = typer.Option(None, "--label-column", help="Condition column of a generic CSV.")
PATH_COLUMN = typer.Option(None, "--path-column", help="Image-path column of a generic CSV.")
IMAGES = typer.Option(None, "--images", help="Folder of the images (default: beside the CSV).")


def dataset_config(
    csv: Path,
    fst_column: str | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    path_column: str | None = None,
    images: Path | None = None,
    **more: object,
) -> DatasetConfig:
    """The dataset settings a command's options give (None: not given), validated."""
    from dermsynth.cli.options import settings

    values = {
        "csv": csv,
        "fst_column": fst_column,
        "id_column": id_column,
        "label_column": label_column,
        "path_column": path_column,
        "images": images,
        **more,
    }
    raters = values.get("rater")
    if isinstance(raters, list):
        # One --rater is a rater; several are a consensus's raters; none is the default.
        values["rater"] = (raters[0] if len(raters) == 1 else raters) if raters else None
    return settings(DatasetConfig, **values)


def read_table(
    csv: Path,
    fst_column: str | None,
    id_column: str | None,
    label_column: str | None,
    path_column: str | None,
    images: Path | None,
    **more: object,
) -> pd.DataFrame:
    """Load the user's table through the one validating loader (presets, raters, label map:
    ``more``, as named in :class:`dermsynth.config.DatasetConfig`); notes go to stderr."""
    config = dataset_config(csv, fst_column, id_column, label_column, path_column, images, **more)
    manifest = config.load()
    for note in manifest.attrs.get("notes", []):
        typer.echo(note, err=True)
    return manifest
