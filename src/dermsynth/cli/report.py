"""``dermsynth report RUN``: the study's HTML report (heavy imports stay inside the command)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's command to the root app."""
    app.command("report")(report)


def report(
    run: Path = typer.Argument(
        ..., help="Study run folder (the one holding study.json and results/)."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="HTML file to write (default RUN/report/index.html); the tables' CSVs go beside it.",
    ),
    max_seeds: int = typer.Option(
        4,
        "--max-seeds",
        min=1,
        help="Seeds shown per condition and direction in Figure 2.",
    ),
) -> None:
    """Write a self-contained HTML report of a study run; print its path.

    Tables 1-3 and Supplementary Table 1 of Sagers et al., Figures 2
    and 3, a dose-response plot, paired tests between arms and the
    fairness gap; every table also as CSV beside the page. An
    unfinished run gets a report of what is finished, with what is
    missing listed at the top (and on stderr).
    """
    from dermsynth.report.build import render_report, write_report

    rendered = render_report(run, max_seeds=max_seeds)
    path = write_report(rendered, out)
    if rendered.missing:
        typer.echo(
            f"note: the run is incomplete; the report lists {len(rendered.missing)} missing "
            f"item(s), first: {rendered.missing[0]}",
            err=True,
        )
    typer.echo(str(path))
