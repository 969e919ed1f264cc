"""``dermsynth data ...``: sample sizes, splits and seeds, image fetching, dedup, simulated data."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from dermsynth.cli.common import (
    CONSENSUS,
    CSV,
    DATASET,
    FST_COLUMN,
    ID_COLUMN,
    IMAGES,
    LABEL_COLUMN,
    LABEL_MAP,
    PATH_COLUMN,
    RATER,
    SCALE,
    read_table,
)
from dermsynth.cli.options import finite_in
from dermsynth.errors import DermsynthError

if TYPE_CHECKING:
    import pandas as pd

app = typer.Typer(
    help="Datasets: sample sizes, splits and seeds, images, near-duplicates, simulated data.",
    no_args_is_help=True,
)


def _more(
    dataset: str | None,
    rater: list[str] | None,
    consensus: str | None,
    scale: str | None,
    label_map: Path | None,
) -> dict[str, object]:
    """The dataset options every table-reading command shares, as DatasetConfig fields."""
    return {
        "preset": dataset,
        "rater": rater,
        "consensus": consensus,
        "scale": scale,
        "label_map": label_map,
    }


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
    dataset: str | None = DATASET,
    rater: list[str] | None = RATER,
    consensus: str | None = CONSENSUS,
    scale: str | None = SCALE,
    label_map: Path | None = LABEL_MAP,
    groups: str | None = typer.Option(
        None, "--groups", help="Count by these skin-tone groups, e.g. 1-3,4-7,8-10."
    ),
) -> None:
    """Sample sizes by skin type x condition (the paper's Table 1).

    With --dataset, --rater, --scale or --groups: by skin-tone group of the dataset's scale
    (FST 1-2/3-4/5-6, MST 1-3/4-7/8-10 unless --groups says otherwise).
    """
    from dermsynth.data import summary as summ
    from dermsynth.data.manifest import parse_conditions, resolve_conditions

    more = {"preset": dataset, "rater": rater, "consensus": consensus, "scale": scale}
    manifest = read_table(
        csv,
        fst_column,
        id_column,
        label_column,
        path_column,
        None,
        **more,
        label_map=label_map,
        groups=groups,
    )
    if any(v for v in (*more.values(), groups)):
        names = parse_conditions(conditions)
        _print_groups(manifest, names, fmt)
        return
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


def _print_groups(manifest: pd.DataFrame, names: list[str] | None, fmt: Format) -> None:
    """Counts by skin-tone group x condition, and the images of unknown tone."""
    from dermsynth.data.summary import tone_table
    from dermsynth.data.tones import UNKNOWN_TONE, scale_of

    scale = scale_of(manifest.attrs["scale"])
    table = tone_table(manifest, manifest.attrs["groups"], scale.name, names)
    unknown = int((manifest[scale.column] == UNKNOWN_TONE).sum())
    rated = manifest.attrs.get("fst_column", "")
    if fmt is Format.json:
        payload = {
            "scale": scale.name,
            "rater": rated,
            "counts": {group: row.to_dict() for group, row in table.iterrows()},
            "unknown": unknown,
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    _print_frame(table, fmt, index=True)
    typer.echo(f"{scale.title} ({rated}); {unknown} image(s) of unknown tone left out", err=True)


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
    dataset: str | None = DATASET,
    rater: list[str] | None = RATER,
    consensus: str | None = CONSENSUS,
    scale: str | None = SCALE,
    label_map: Path | None = LABEL_MAP,
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

    manifest = read_table(
        csv,
        fst_column,
        id_column,
        label_column,
        path_column,
        images,
        **_more(dataset, rater, consensus, scale, label_map),
    )
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
    dataset: str | None = DATASET,
    rater: list[str] | None = RATER,
    consensus: str | None = CONSENSUS,
    scale: str | None = SCALE,
    label_map: Path | None = LABEL_MAP,
    url_column: str = typer.Option("url", "--url-column", help="Column holding each image's URL."),
    workers: int = typer.Option(8, "--workers", min=1, max=64, help="Concurrent downloads."),
    retries: int = typer.Option(3, "--retries", min=0, help="Retries per image, with backoff."),
    timeout: float = typer.Option(
        30.0,
        "--timeout",
        help="Seconds to wait for a connection or for more data (at least 0.1).",
        callback=finite_in(0.1),
    ),
    deadline: float = typer.Option(
        120.0,
        "--deadline",
        callback=finite_in(0.1),
        help="Seconds for each image's whole download, retries included (at least 0.1).",
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
    """Download every image's URL into OUT/<id>.jpg: concurrent, resumable, validated, capped.

    For images already on disk as a folder, use --images instead (`data images` checks it).
    """
    from dermsynth.data.fetch import fetch_images
    from dermsynth.io import atomic_write_csv

    manifest = read_table(
        csv,
        fst_column,
        id_column,
        label_column,
        path_column,
        None,
        **_more(dataset, rater, consensus, scale, label_map),
    )
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
    if len(reasons):
        # Many published URLs are dead (Fitzpatrick 17k's mostly answer 404): the images then
        # come as a folder from the dataset's maintainers.
        typer.echo(
            "images you have as a folder need no fetching: give the folder as --images "
            "(dataset.images) and check it with `dermsynth data images`",
            err=True,
        )


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
    dataset: str | None = DATASET,
    rater: list[str] | None = RATER,
    consensus: str | None = CONSENSUS,
    scale: str | None = SCALE,
    label_map: Path | None = LABEL_MAP,
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

    manifest = read_table(
        csv,
        fst_column,
        id_column,
        label_column,
        path_column,
        images,
        **_more(dataset, rater, consensus, scale, label_map),
    )
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
        help="Multiplier on the paper's Table 1 counts (0.001 to 10).",
        callback=finite_in(0.001, 10.0),
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


@app.command()
def presets() -> None:
    """The published datasets --dataset knows: schema, licence and where to obtain each."""
    from dermsynth.data.presets import PRESETS

    for preset in PRESETS.values():
        raters = ", ".join(f"{r.column} ({r.scale}, {r.who})" for r in preset.raters)
        typer.echo(f"{preset.name}: {preset.title}")
        typer.echo(f"  id {preset.id_column}, label {preset.label_column}; raters: {raters}")
        typer.echo(f"  licence: {preset.licence}")
        typer.echo(f"  obtain: {preset.source}")


@app.command()
def images(
    csv: Path = CSV,
    dataset: str | None = DATASET,
    images: Path | None = IMAGES,
    out: Path = typer.Option(..., "--out", help="CSV listing the rows without an image file."),
    fst_column: str | None = FST_COLUMN,
    id_column: str | None = ID_COLUMN,
    label_column: str | None = LABEL_COLUMN,
    path_column: str | None = PATH_COLUMN,
    rater: list[str] | None = RATER,
    consensus: str | None = CONSENSUS,
    scale: str | None = SCALE,
    label_map: Path | None = LABEL_MAP,
) -> None:
    """Check that every row's image is in the image folder; list the rows without one.

    Exits 1 when some are missing (listed in OUT), 2 when the folder itself does not exist.
    """
    from dermsynth.data.datasets import check_images, image_check_lines, write_missing

    manifest = read_table(
        csv,
        fst_column,
        id_column,
        label_column,
        path_column,
        images,
        **_more(dataset, rater, consensus, scale, label_map),
    )
    check = check_images(manifest)
    fetchable = "url" in manifest.columns
    lines = image_check_lines(check, fetchable=fetchable, listing=out)
    if check.missing_folders and len(check.missing_folders) == len(check.folders):
        raise DermsynthError(lines[0])
    write_missing(check, out)
    for line in lines:
        typer.echo(line)
    if check.n_missing:
        raise typer.Exit(1)


@app.command()
def raters(
    csv: Path = CSV,
    dataset: str | None = DATASET,
    rater: list[str] | None = typer.Option(
        None, "--rater", help="A rater column (repeat; default: every rater of the scale)."
    ),
    ita: bool = typer.Option(
        False, "--ita", help="Add the skin type estimated from the images (ITA) as a rater."
    ),
    images: Path | None = IMAGES,
    id_column: str | None = ID_COLUMN,
    label_column: str | None = LABEL_COLUMN,
    path_column: str | None = PATH_COLUMN,
    scale: str | None = SCALE,
    out: Path | None = typer.Option(None, "--out", help="Also write the table to this CSV."),
    fmt: Format = typer.Option(Format.table, "--format", help="table, csv or json."),
) -> None:
    """Agreement between skin-tone raters: Cohen's kappa, unweighted and quadratic-weighted."""
    from dermsynth.cli.common import dataset_config
    from dermsynth.data.datasets import rater_agreement_of
    from dermsynth.io import atomic_write_csv

    config = dataset_config(
        csv,
        None,
        id_column,
        label_column,
        path_column,
        images,
        preset=dataset,
        scale=scale,
        rater=rater if rater and not dataset else None,
    )
    _, agreement = rater_agreement_of(config, rater or None, ita=ita)
    if out is not None:
        atomic_write_csv(out, agreement)
    _print_frame(agreement.round(3), fmt, index=False)


@app.command("label-map")
def label_map_cmd(
    csv: Path = CSV,
    out: Path = typer.Option(..., "--out", help="Label map to write (CSV, edit it by hand)."),
    conditions: str | None = typer.Option(
        None, "--conditions", help="The study's conditions, filled in where a label matches."
    ),
    dataset: str | None = DATASET,
    fst_column: str | None = FST_COLUMN,
    id_column: str | None = ID_COLUMN,
    label_column: str | None = LABEL_COLUMN,
    path_column: str | None = PATH_COLUMN,
    rater: list[str] | None = RATER,
    consensus: str | None = CONSENSUS,
    scale: str | None = SCALE,
) -> None:
    """Write a label map to edit: every label of the table, its image count, its condition."""
    from dermsynth.data.labels import write_label_map_template
    from dermsynth.data.manifest import parse_conditions

    manifest = read_table(
        csv,
        fst_column,
        id_column,
        label_column,
        path_column,
        None,
        **_more(dataset, rater, consensus, scale, None),
    )
    names = parse_conditions(conditions) or []
    table = write_label_map_template(manifest["label"], out, names)
    filled = int((table["condition"] != "").sum())
    typer.echo(
        f"wrote {out}: {len(table)} label(s), {filled} matched to a condition; fill in the "
        "condition column (empty: leave those images out), then pass --label-map"
    )
