"""``dermsynth select`` and ``dermsynth review``: keep the best candidates; let a person override."""

from __future__ import annotations

from pathlib import Path

import typer

from dermsynth.cli.options import default_of, option, settings
from dermsynth.config import SelectionConfig
from dermsynth.errors import DermsynthError


def register(app_root: typer.Typer) -> None:
    """Add this stage's commands to the root app."""
    app_root.command("select")(select)
    app_root.command("review")(review)


S = SelectionConfig
_DEFAULT_WEIGHTS = ", ".join(f"{n}={w:g}" for n, w in default_of(S, "weights").items())


def select(
    candidates: Path = typer.Option(
        ..., "--candidates", help="Candidate manifest from `dermsynth generate`."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Selected manifest to write (CSV); sheets go beside it."
    ),
    k: int = option(S, "k"),
    weights: str | None = typer.Option(
        None,
        "--weights",
        help="e.g. tone=1,pathology=1,similarity=0.5,quality=0.5 (over --config's, else the "
        f"defaults {_DEFAULT_WEIGHTS}).",
    ),
    config: Path | None = typer.Option(
        None, "--config", help="Study config: its selection settings are the defaults."
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
    leakage_threshold: int = option(S, "leakage_threshold"),
    classifier: Path | None = option(S, "classifier"),
    clip: str | None = option(S, "clip"),
    clip_classes: str | None = typer.Option(
        None, "--clip-classes", help=S.model_fields["clip_classes"].description
    ),
    ita_thresholds: str = option(S, "ita_thresholds"),
    fit_manifest: Path | None = option(S, "fit_manifest"),
    embedder: str = option(S, "embedder"),
    embedder_weights: str = option(S, "embedder_weights"),
    copy_threshold: float | None = option(S, "copy_threshold"),
    drift_threshold: float | None = option(S, "drift_threshold"),
    device: str = option(S, "device"),
    sheets: bool = option(S, "contact_sheets", "--contact-sheets/--no-contact-sheets"),
) -> None:
    """Score candidates (tone, pathology, seed similarity, quality, leakage); keep the top k per seed."""
    from dermsynth.select.selection import parse_weights, select_candidates

    if plan is not None and test_images is not None:
        raise DermsynthError("give --plan or --test-images for the leakage guard, not both")
    base = dict(default_of(S, "weights"))
    if config is not None:
        from dermsynth.config import load_config

        study = load_config(config).selection
        base = {**{name: 0.0 for name in base}, **study.weights}
        if leakage_threshold == default_of(S, "leakage_threshold"):
            leakage_threshold = study.leakage_threshold
    options = settings(
        SelectionConfig,
        k=k,
        weights=parse_weights(weights, base),
        ita_thresholds=ita_thresholds,
        fit_manifest=fit_manifest,
        embedder=embedder,
        embedder_weights=embedder_weights,
        copy_threshold=copy_threshold,
        drift_threshold=drift_threshold,
        leakage_threshold=leakage_threshold,
        classifier=classifier,
        clip=clip,
        clip_classes=tuple(c.strip() for c in clip_classes.split(",") if c.strip())
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
