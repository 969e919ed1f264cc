"""``dermsynth study ...``: plan a whole study from its config."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(
    help="Whole studies: the grid of runs from one YAML config.", no_args_is_help=True
)


@app.command("plan")
def plan_command(
    config: Path = typer.Argument(..., help="Study config (YAML), e.g. examples/paper.yaml."),
    csv: Path | None = typer.Option(
        None, "--csv", help="Use this table instead of the config's dataset.csv."
    ),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
    out: Path | None = typer.Option(None, "--out", help="Also write the grid of runs as CSV here."),
) -> None:
    """Show the grid of runs, image counts, generation work and estimated cost; check feasibility."""
    from dermsynth.config import load_config
    from dermsynth.errors import DermsynthError
    from dermsynth.io import atomic_write_csv
    from dermsynth.study.grid import plan_study

    if fmt not in ("table", "csv", "json"):
        raise DermsynthError(f"--format must be table, csv or json, got {fmt!r}")
    study = load_config(config)
    if csv is not None:
        study = study.model_copy(update={"dataset": study.dataset.model_copy(update={"csv": csv})})
    planned = plan_study(study)
    if out is not None:
        atomic_write_csv(out, planned.runs)
    if fmt == "csv":
        typer.echo(planned.runs.to_csv(index=False, lineterminator="\n"), nl=False)
        return
    if fmt == "json":
        typer.echo(
            json.dumps(
                {
                    "summary": planned.summary(),
                    "runs": planned.runs.to_dict(orient="records"),
                    "generation": planned.generation.to_dict(orient="records"),
                    "arms": planned.arms.to_dict(orient="records"),
                },
                indent=2,
            )
        )
        return
    shown = planned.runs.drop(columns=["run_id"])
    typer.echo(f"study {study.name!r}: {len(planned.runs)} runs\n")
    typer.echo(shown.to_string(index=False))
    if not planned.generation.empty:
        typer.echo("\ngeneration:")
        typer.echo(planned.generation.to_string(index=False))
    arms = planned.arms
    if not arms.empty:
        typer.echo("\nimages each arm adds (available: what its pool can supply):")
        typer.echo(arms.drop(columns=["short", "skipped"]).to_string(index=False))
        for arm, note in arms[arms["skipped"]].groupby("arm")["note"].first().items():
            typer.echo(f"skipped: {arm}: {note}")
    ratios = [d for d in study.doses if isinstance(d, str)]
    if ratios:
        typer.echo(
            f"ratio doses {', '.join(ratios)}: synthetic images per real training image of the "
            "augmented condition, in images above; per_seed: images kept per seed the largest "
            "dose needs"
        )
    cost = planned.cost
    typer.echo(
        f"\nestimated cost: generation {cost['generation_seconds'] / 60:.1f} min, frozen features "
        f"{cost['feature_seconds'] / 60:.1f} min, training {cost['training_seconds'] / 60:.1f} min "
        f"(from the per-image times in the config: generator.seconds_per_image, "
        f"classifier.seconds_per_image)"
    )
    typer.echo(
        f"backbone passes: {cost['feature_views_shared']:,.0f} with features shared across runs "
        f"({cost['feature_views_unshared']:,.0f} if each run computed its own)"
    )


@app.command("run")
def run_command(
    config: Path = typer.Argument(..., help="Study config (YAML)."),
    out: Path = typer.Option(..., "--out", help="Run folder (created; resumed if it exists)."),
    csv: Path | None = typer.Option(
        None, "--csv", help="Use this table instead of the config's dataset.csv."
    ),
    force: bool = typer.Option(False, "--force", help="Reuse a run folder made by another config."),
) -> None:
    """Run (or resume) the whole study: seeds, generation, selection, training, metrics."""
    from dermsynth.config import load_config
    from dermsynth.study.runner import run_study

    study = load_config(config)
    if csv is not None:
        study = study.model_copy(update={"dataset": study.dataset.model_copy(update={"csv": csv})})
    folder = run_study(study, out, force=force)
    typer.echo(f"study finished: {folder} (make the report with `dermsynth report {folder}`)")


@app.command("learn-weights")
def learn_weights_command(
    study: Path = typer.Argument(..., help="A finished study folder (the --out of study run)."),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
    out: Path | None = typer.Option(
        None, "--out", help="Also write the selection: weights: block here (YAML)."
    ),
) -> None:
    """Learn selection weights from the score-ranked and random arms of a finished study."""
    from dermsynth.errors import DermsynthError
    from dermsynth.io import atomic_write_text
    from dermsynth.study.weights import learn_weights, render_fit

    if fmt not in ("table", "csv", "json"):
        raise DermsynthError(f"--format must be table, csv or json, got {fmt!r}")
    fit = learn_weights(study)
    if out is not None:
        atomic_write_text(out, fit.yaml())
    if fmt == "csv":
        typer.echo(fit.effects.to_csv(index=False, lineterminator="\n"), nl=False)
    elif fmt == "json":
        typer.echo(json.dumps(fit.to_dict(), indent=2))
    else:
        typer.echo(render_fit(fit))


@app.command("defaults")
def defaults_command() -> None:
    """Print every setting of a study config with its default and meaning (commented YAML)."""
    from dermsynth.config import defaults_yaml

    typer.echo(defaults_yaml(), nl=False)
