"""``dermsynth data ...``: sample sizes, splits and seeds, image fetching, dedup, simulated data."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from dermsynth.cli.common import (
    CSV,
    FST_COLUMN,
    ID_COLUMN,
    IMAGES,
    LABEL_COLUMN,
    PATH_COLUMN,
    read_table,
)
from dermsynth.cli.options import finite
from dermsynth.errors import DermsynthError

if TYPE_CHECKING:
    import pandas as pd

app = typer.Typer(
    help="Datasets: sample sizes, splits and seeds, images, near-duplicates, simulated data.",
    no_args_is_help=True,
)


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command()
def summary(
    csv: Path = CSV,
    conditions: str | None = typer.Option(
        None,
        "--conditions",
        help="Comma-separated conditions, in the order to show (default: all).",
    ),
    fst_column: str | None = FST_COLUMN,
    id_column: str | None = ID_COLUMN,
    label_column: str | None = LABEL_COLUMN,
    path_column: str | None = PATH_COLUMN,
    fmt: Format = typer.Option(Format.table, "--format", help="table, csv or json."),
    rank_extremes: int | None = typer.Option(
        None,
        "--rank-extremes",
        min=1,
        help="Instead: rank conditions by their smaller FST I-II / V-VI count; show the top K.",
    ),
) -> None:
    """Sample sizes by skin type x condition (the paper's Table 1)."""
    from dermsynth.data import summary as summ
    from dermsynth.data.manifest import parse_conditions, resolve_conditions

    manifest = read_table(csv, fst_column, id_column, label_column, path_column, None)
    if rank_extremes is not None:
        ranked = summ.rank_extremes(manifest, rank_extremes)
        _print_frame(ranked, fmt, index=False)
        return
    names = parse_conditions(conditions)
    if names is not None:
        names = resolve_conditions(names, manifest["label"].unique())
    table = summ.fst_table(manifest, names)
    shown = [c for c in table.columns if c != "total"]
    unknown = summ.unknown_fst_counts(manifest, shown)
    n_unknown = sum(unknown.values())
    note = (
        f"{n_unknown} image(s) of unknown FST (-1) left out of the counts"
        f" ({manifest.attrs.get('fst_column', 'fst')})"
    )
    if fmt is Format.json:
        payload = {
            "fst_column": manifest.attrs.get("fst_column"),
            "counts": {fst: row.to_dict() for fst, row in table.iterrows()},
            "unknown_fst": unknown,
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    _print_frame(table, fmt, index=True)
    typer.echo(note, err=fmt is Format.csv)


def _print_frame(frame: pd.DataFrame, fmt: Format, *, index: bool) -> None:
    if fmt is Format.csv:
        typer.echo(frame.to_csv(index=index, lineterminator="\n"), nl=False)
    elif fmt is Format.json:
        typer.echo(frame.to_json(orient="records", indent=2))
    else:
        typer.echo(frame.to_string(index=index))


@app.command()
def plan(
    csv: Path = CSV,
    conditions: str = typer.Option(
        ..., "--conditions", help="Comma-separated conditions of the classifier."
    ),
    train_fst: str = typer.Option(..., "--train-fst", help="Training skin types, e.g. 1,2."),
    test_fst: list[str] = typer.Option(
        ..., "--test-fst", help="A test group, e.g. 3,4; repeat for more."
    ),
    augment: list[str] = typer.Option(
        [], "--augment", help="A condition to draw seed images for; repeat for more."
    ),
    seed_fst: str | None = typer.Option(
        None,
        "--seed-fst",
        help="Where seeds come from (default: the extreme opposite --train-fst).",
    ),
    seeds_per_condition: int = typer.Option(8, "--seeds-per-condition", min=1),
    random_seed: int = typer.Option(0, "--random-seed"),
    fst_column: str | None = FST_COLUMN,
    id_column: str | None = ID_COLUMN,
    label_column: str | None = LABEL_COLUMN,
    path_column: str | None = PATH_COLUMN,
    images: Path | None = IMAGES,
    dedup_threshold: int = typer.Option(
        4,
        "--dedup-threshold",
        min=0,
        help="Largest perceptual-hash distance of near-duplicates (checked where images exist).",
    ),
    out: Path = typer.Option(..., "--out", help="Where to write the plan (CSV)."),
) -> None:
    """Split one direction into train / seed / test and draw the seed images."""
    from dermsynth.data.dedup import near_duplicates_on_disk
    from dermsynth.data.manifest import parse_conditions, write_manifest
    from dermsynth.data.splits import PLAN_COLUMNS, Direction, plan_splits

    manifest = read_table(csv, fst_column, id_column, label_column, path_column, images)
    direction = Direction.build(train_fst, test_fst, seed_fst)
    names = parse_conditions(conditions) or []
    groups, notes = near_duplicates_on_disk(manifest, names, threshold=dedup_threshold)
    for note in notes:
        typer.echo(note, err=True)
    result = plan_splits(
        manifest,
        names,
        direction,
        augment,
        seeds_per_condition=seeds_per_condition,
        random_seed=random_seed,
        near_duplicate_groups=groups,
    )
    write_manifest(result, out, first=PLAN_COLUMNS)
    counts = result.groupby(["split", "test_group"]).size()
    parts = [
        f"{split}{'[' + grp + ']' if grp else ''}={n}"
        for (split, grp), n in zip(counts.index, counts, strict=True)
    ]
    typer.echo(f"wrote {out}: {len(result)} images ({', '.join(parts)})")
    removed = result.attrs.get("leakage_removed", [])
    if removed:
        typer.echo(f"left out {len(removed)} test image(s) near-identical to a train or seed image")


@app.command()
def fetch(
    csv: Path = CSV,
    out: Path = typer.Option(..., "--out", help="Image folder; files are <image_id>.jpg."),
    fst_column: str | None = FST_COLUMN,
    id_column: str | None = ID_COLUMN,
    label_column: str | None = LABEL_COLUMN,
    path_column: str | None = PATH_COLUMN,
    url_column: str = typer.Option("url", "--url-column", help="Column holding each image's URL."),
    workers: int = typer.Option(8, "--workers", min=1, max=64, help="Concurrent downloads."),
    retries: int = typer.Option(3, "--retries", min=0, help="Retries per image, with backoff."),
    timeout: float = typer.Option(
        30.0,
        "--timeout",
        min=0.1,
        help="Seconds to wait for a connection or for more data.",
        callback=finite,
    ),
    deadline: float = typer.Option(
        120.0,
        "--deadline",
        min=0.1,
        callback=finite,
        help="Seconds for each image's whole download, retries included; then it fails.",
    ),
    max_bytes: int = typer.Option(
        50_000_000,
        "--max-bytes",
        min=1,
        help="Largest accepted download, in bytes; a larger one fails without being kept.",
    ),
    min_size: int = typer.Option(
        64, "--min-size", min=1, help="Smallest accepted side, in pixels."
    ),
    report: Path | None = typer.Option(
        None, "--report", help="Report CSV (default OUT/fetch_report.csv)."
    ),
) -> None:
    """Download every image's URL into OUT/<id>.jpg: concurrent, resumable, validated, capped."""
    from dermsynth.data.fetch import fetch_images
    from dermsynth.io import atomic_write_csv

    manifest = read_table(csv, fst_column, id_column, label_column, path_column, None)
    if url_column not in manifest.columns:
        raise DermsynthError(f"{csv}: no {url_column!r} column to download from (--url-column)")
    result = fetch_images(
        manifest,
        out,
        url_column=url_column,
        workers=workers,
        retries=retries,
        timeout=timeout,
        min_size=min_size,
        max_bytes=max_bytes,
        deadline=deadline,
    )
    report_path = report or out / "fetch_report.csv"
    atomic_write_csv(report_path, result)
    counts = result["status"].value_counts()
    typer.echo(
        f"fetched {counts.get('fetched', 0)}, skipped {counts.get('skipped', 0)} (already there), "
        f"failed {counts.get('failed', 0)}; report: {report_path}"
    )
    reasons = result.loc[result["status"] == "failed", "reason"].value_counts()
    for reason, n in reasons.head(5).items():
        typer.echo(f"  failed {n}: {reason}", err=True)
    if len(reasons) > 5:
        typer.echo(f"  ... and {len(reasons) - 5} other reason(s); see the report", err=True)


@app.command()
def dedup(
    csv: Path = CSV,
    plan_csv: Path | None = typer.Option(
        None, "--plan", help="A plan from `data plan`: report groups that cross train/seed/test."
    ),
    threshold: int = typer.Option(
        4, "--threshold", min=0, help="Largest perceptual-hash distance (bits) of near-duplicates."
    ),
    hash_size: int = typer.Option(
        8, "--hash-size", min=2, max=64, help="Hash side: hash_size**2 bits (8: 64-bit hashes)."
    ),
    workers: int = typer.Option(0, "--workers", min=0, help="Decoding threads (0: one per core)."),
    fst_column: str | None = FST_COLUMN,
    id_column: str | None = ID_COLUMN,
    label_column: str | None = LABEL_COLUMN,
    path_column: str | None = PATH_COLUMN,
    images: Path | None = IMAGES,
    out: Path = typer.Option(..., "--out", help="Report CSV of near-duplicate groups."),
) -> None:
    """Find near-duplicate images (perceptual hashes) and groups that leak across splits.

    With --plan, groups spanning train, seed and test (or two test groups) go to
    OUT_cross_split.csv beside OUT.
    """
    from dermsynth.data.dedup import (
        cross_split_groups,
        hash_images,
        near_duplicate_groups,
        skipped_lines,
    )
    from dermsynth.data.manifest import load_manifest
    from dermsynth.io import atomic_write_csv

    manifest = read_table(csv, fst_column, id_column, label_column, path_column, images)
    # Read the plan before hours of hashing, so a wrong path fails at once.
    planned = load_manifest(plan_csv) if plan_csv is not None else None
    hashes = hash_images(manifest, hash_size=hash_size, workers=workers)
    skipped = hashes.attrs.get("skipped", [])
    for line in skipped_lines(skipped, "hashing"):
        typer.echo(line, err=True)
    groups = near_duplicate_groups(hashes, threshold=threshold)
    atomic_write_csv(out, groups)
    n_groups = groups["group"].nunique() if not groups.empty else 0
    typer.echo(
        f"{n_groups} near-duplicate group(s) ({len(groups)} images) among {len(hashes)} hashed "
        f"image(s), {len(skipped)} skipped; report: {out}"
    )
    if planned is not None:
        crossing = cross_split_groups(planned, groups)
        cross_out = out.with_name(out.stem + "_cross_split.csv")
        atomic_write_csv(cross_out, crossing)
        n_cross = crossing["group"].nunique() if not crossing.empty else 0
        typer.echo(
            f"{n_cross} group(s) cross train/seed/test lines of {plan_csv}; report: {cross_out}"
        )


@app.command()
def simulate(
    out: Path = typer.Option(..., "--out", help="Folder for images/ and the CSV."),
    scale: float = typer.Option(
        0.25,
        "--scale",
        min=0.001,
        max=10.0,
        help="Multiplier on the paper's Table 1 counts.",
        callback=finite,
    ),
    random_seed: int = typer.Option(0, "--random-seed"),
    image_size: int = typer.Option(
        512, "--image-size", min=64, max=2048, help="Longer side of the images, in pixels."
    ),
    workers: int = typer.Option(0, "--workers", min=0, help="Processes (0: one per core)."),
) -> None:
    """Make a simulated dataset in the Fitzpatrick 17k schema (deterministic, resumable)."""
    from dermsynth.data.simulate import SIMULATED_NOTE, simulate_dataset

    csv_path = simulate_dataset(
        out, scale=scale, random_seed=random_seed, image_size=image_size, workers=workers
    )
    typer.echo(f"wrote {csv_path} ({SIMULATED_NOTE})")
