"""``dermsynth select`` and ``dermsynth review``: keep the best candidates; let a person override."""

from __future__ import annotations

from pathlib import Path

import typer

from dermsynth.errors import DermsynthError


def register(app_root: typer.Typer) -> None:
    """Add this stage's commands to the root app."""
    app_root.command("select")(select)
    app_root.command("review")(review)


def select(
    candidates: Path = typer.Option(
        ..., "--candidates", help="Candidate manifest from `dermsynth generate`."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Selected manifest to write (CSV); sheets go beside it."
    ),
    k: int = typer.Option(4, "--k", help="Candidates kept per seed (paper: 4)."),
    weights: str | None = typer.Option(
        None,
        "--weights",
        help="e.g. tone=1,pathology=1,similarity=0.5,quality=0.5 (over --config's).",
    ),
    config: Path | None = typer.Option(
        None, "--config", help="Study config: its selection.weights and leakage_threshold."
    ),
    seeds: Path | None = typer.Option(
        None, "--seeds", help="Seed manifest (plan), where the candidate manifest lacks the seeds."
    ),
    plan: Path | None = typer.Option(
        None, "--plan", help="Plan whose split=test rows the leakage guard uses."
    ),
    test_images: Path | None = typer.Option(
        None, "--test-images", help="Or: a manifest of test images for the leakage guard."
    ),
    leakage_threshold: int | None = typer.Option(
        None,
        "--leakage-threshold",
        help="phash distance at or under which a candidate is excluded (default 6).",
    ),
    classifier: Path | None = typer.Option(
        None,
        "--classifier",
        help="Classifier run folder (dermsynth train) for the pathology score.",
    ),
    clip: str | None = typer.Option(
        None, "--clip", help="Or: CLIP model (local folder or hub id), zero-shot."
    ),
    clip_classes: str | None = typer.Option(
        None,
        "--clip-classes",
        help="Conditions CLIP compares with (default: the candidates' labels).",
    ),
    ita_thresholds: str = typer.Option(
        "kinyanjui",
        "--ita-thresholds",
        help="kinyanjui, empirical (with --fit-manifest) or 5 numbers.",
    ),
    fit_manifest: Path | None = typer.Option(
        None, "--fit-manifest", help="Labelled real images to fit empirical ITA thresholds on."
    ),
    embedder: str = typer.Option(
        "lab", "--embedder", help="Seed similarity: lab, or backbone:NAME (e.g. backbone:resnet50)."
    ),
    embedder_weights: str = typer.Option(
        "imagenet", "--embedder-weights", help="backbone: imagenet, none or a file."
    ),
    copy_threshold: float | None = typer.Option(
        None, "--copy-threshold", help="Similarity at or above: a copy."
    ),
    drift_threshold: float | None = typer.Option(
        None, "--drift-threshold", help="Similarity below: a drift."
    ),
    device: str = typer.Option(
        "auto", "--device", help="auto, cpu or cuda (classifier, CLIP, backbone)."
    ),
    sheets: bool = typer.Option(
        True, "--contact-sheets/--no-contact-sheets", help="Write a PNG per seed."
    ),
) -> None:
    """Score candidates (tone, pathology, seed similarity, quality, leakage); keep the top k per seed."""
    from dermsynth.select.selection import (
        DEFAULT_WEIGHTS,
        SelectOptions,
        parse_weights,
        select_candidates,
    )

    if plan is not None and test_images is not None:
        raise DermsynthError("give --plan or --test-images for the leakage guard, not both")
    base = dict(DEFAULT_WEIGHTS)
    threshold = 6
    if config is not None:
        from dermsynth.config import load_config

        study = load_config(config)
        base = {**{name: 0.0 for name in DEFAULT_WEIGHTS}, **study.selection.weights}
        threshold = study.selection.leakage_threshold
    if leakage_threshold is not None:
        threshold = leakage_threshold
    options = SelectOptions(
        k=k,
        weights=parse_weights(weights, base),
        ita_thresholds=ita_thresholds,
        fit_manifest=fit_manifest,
        embedder=embedder,
        embedder_weights=embedder_weights,
        copy_threshold=copy_threshold,
        drift_threshold=drift_threshold,
        leakage_threshold=threshold,
        classifier=classifier,
        clip=clip,
        clip_classes=[c.strip() for c in clip_classes.split(",") if c.strip()]
        if clip_classes
        else None,
        device=device,
        contact_sheets=sheets,
    )
    result = select_candidates(
        candidates,
        out,
        options=options,
        seeds_csv=seeds,
        test_csv=plan if plan is not None else test_images,
    )
    frame = result.manifest
    n_seeds = frame["parent_id"].nunique()
    typer.echo(
        f"wrote {out}: {int(frame['selected'].sum())} of {len(frame)} candidate(s) kept across "
        f"{n_seeds} seed(s); {int(frame['excluded'].sum())} excluded"
    )
    if result.sheets:
        typer.echo(f"contact sheets: {result.sheets[0].parent}/")
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)


def review(
    run: Path = typer.Argument(
        ...,
        help="Folder holding the selected manifest (a study's selection/<direction>/<condition>).",
    ),
    manifest: str | None = typer.Option(
        None,
        "--manifest",
        help="Manifest file name inside RUN (default: from selection.json, else selected.csv).",
    ),
    port: int = typer.Option(8765, "--port", help="Port to listen on (1..65535)."),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind (default: this machine only)."
    ),
) -> None:
    """Open a local web page to accept or reject candidates; decisions are saved into the manifest."""
    from dermsynth.select.review_app import LOOPBACK_HOSTS, manifest_path, serve

    path = manifest_path(run, manifest)
    if host not in (*LOOPBACK_HOSTS, "::1"):
        typer.echo(
            f"warning: serving on {host}: anyone who can reach it can change decisions", err=True
        )
    serve(
        run,
        manifest=path.name if manifest is None else manifest,
        host=host,
        port=port,
        announce=lambda url: typer.echo(f"reviewing {path}: open {url} (Ctrl-C to stop)"),
    )
