"""Options shared by commands that read a table of images."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer

from dermsynth.data.manifest import load_manifest

CSV = typer.Option(..., "--csv", help="Fitzpatrick 17k table, a dermsynth manifest, or any CSV.")
FST_COLUMN = typer.Option(
    None,
    "--fst-column",
    help="Skin-type column: fitzpatrick_scale (default) or fitzpatrick_centaur; name it for other CSVs.",
)
ID_COLUMN = typer.Option(None, "--id-column", help="Image-id column of a generic CSV.")
LABEL_COLUMN = typer.Option(None, "--label-column", help="Condition column of a generic CSV.")
PATH_COLUMN = typer.Option(None, "--path-column", help="Image-path column of a generic CSV.")
IMAGES = typer.Option(None, "--images", help="Folder of the images (default: beside the CSV).")


def read_table(
    csv: Path,
    fst_column: str | None,
    id_column: str | None,
    label_column: str | None,
    path_column: str | None,
    images: Path | None,
) -> pd.DataFrame:
    """Load the user's table through the one validating loader."""
    return load_manifest(
        csv,
        fst_column=fst_column,
        id_column=id_column,
        label_column=label_column,
        path_column=path_column,
        images_dir=images,
    )
