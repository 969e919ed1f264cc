"""``dermsynth evaluate`` and ``dermsynth compare`` (heavy imports stay inside the commands)."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

GROUPS = typer.Option(
    "1-2,3-4,5-6",
    "--groups",
    help="FST groups, comma-separated: a range (1-2), one type (5) or a set (1+3); no overlaps.",
)


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


FORMAT = typer.Option(Format.table, "--format", help="table, csv or json.")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the root app."""
    app.command()(evaluate)
    app.command()(compare)


def evaluate(
    predictions: Path = typer.Argument(
        ..., help="Predictions CSV (as `dermsynth predict` writes it)."
    ),
    groups: str = GROUPS,
    fmt: Format = FORMAT,
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Also write the condition x group table to this CSV, and the per-group summary "
        "(with a last 'gap' row: best minus worst group) to <stem>_groups.csv beside it.",
    ),
) -> None:
    """Accuracy by condition x FST group, with 95% Wald and Wilson CIs.

    Accuracy of a condition in a group is the share of the group's
    images of that condition predicted as that condition. Per group:
    overall accuracy, balanced accuracy, macro-F1, and the gap between
    the best and worst group. Images of unknown FST (-1) are left out
    and counted. A group without images is shown with n=0 and a warning.

    With --format csv, stdout holds only the condition x group table
    (columns condition, fst_group, n, correct, accuracy, ci_low,
    ci_high, wilson_low, wilson_high), so it can be piped as one CSV;
    the per-group summary comes with --out (<stem>_groups.csv), or in
    the table and json formats. Notes and warnings go to stderr.
    """
    from dermsynth.data.fst import group_label
    from dermsynth.evaluate import metrics

    chosen = metrics.parse_groups(groups)
    preds = metrics.load_predictions(predictions)
    result = metrics.evaluate_predictions(preds, chosen)
    if out is not None:
        _write_evaluation(out, result)

    notes = [f"warning: {w}" for w in result.warnings]
    if result.n_unknown_fst:
        notes.append(f"{result.n_unknown_fst} image(s) of unknown FST (-1) left out")
    if fmt is Format.csv:
        typer.echo(result.table.to_csv(index=False, lineterminator="\n"), nl=False)
    elif fmt is Format.json:
        payload = {
            "predictions": str(predictions),
            "groups": [group_label(g) for g in chosen],
            "n_images": result.n_images,
            "unknown_fst_left_out": result.n_unknown_fst,
            "conditions": _records(result.table),
            "groups_summary": _records(result.summary),
            "gap": _clean(result.gaps),
            "warnings": result.warnings,
        }
        typer.echo(json.dumps(payload, indent=2))
    else:
        typer.echo(f"{predictions}: {result.n_images} image(s)")
        typer.echo(_accuracy_text(result.table))
        typer.echo("")
        typer.echo(_summary_text(result.summary))
        typer.echo("")
        typer.echo(_gap_text(result.gaps))
    for note in notes:
        typer.echo(note, err=True)
    if out is not None:
        typer.echo(f"wrote {out} and {_groups_path(out)}", err=fmt is not Format.table)


def compare(
    a: Path = typer.Argument(..., help="Predictions CSV of model A."),
    b: Path = typer.Argument(..., help="Predictions CSV of model B, on the same test images."),
    groups: str = GROUPS,
    fmt: Format = FORMAT,
    n_boot: int = typer.Option(2000, "--n-boot", min=1, help="Bootstrap resamples."),
    random_seed: int = typer.Option(0, "--random-seed", help="Seed of the bootstrap."),
    out: Path | None = typer.Option(
        None, "--out", help="Also write the comparison table to this CSV."
    ),
) -> None:
    """Two models on the same test images: McNemar test and bootstrap CI.

    Rows are matched by image_id; both files must hold the same images
    with the same labels and skin types. Per condition x FST group, and
    per group over all conditions (condition "(all)"): accuracies of A
    and B, difference = B minus A (positive: B is better), the paired
    counts, McNemar's exact two-sided p-value, and a 95% percentile
    bootstrap CI of the difference resampling images with their pairing
    kept (deterministic for --random-seed). No correction for multiple
    comparisons is applied. Notes go to stderr.
    """
    from dermsynth.data.fst import group_label
    from dermsynth.evaluate import metrics, paired

    chosen = metrics.parse_groups(groups)
    first = metrics.load_predictions(a)
    second = metrics.load_predictions(b)
    table = paired.compare_predictions(
        first, second, chosen, n_boot=n_boot, random_seed=random_seed
    )
    if out is not None:
        from dermsynth.io import atomic_write_csv

        atomic_write_csv(out, table)

    notes = [
        f"warning: FST group {row.fst_group} has no images: its rows show n=0"
        for row in table[table["condition"] == paired.ALL_CONDITIONS].itertuples()
        if row.n == 0
    ]
    unknown = metrics.unknown_fst_count(first)
    if unknown:
        notes.append(f"{unknown} image(s) of unknown FST (-1) left out")
    if fmt is Format.csv:
        typer.echo(table.to_csv(index=False, lineterminator="\n"), nl=False)
    elif fmt is Format.json:
        payload = {
            "a": str(a),
            "b": str(b),
            "groups": [group_label(g) for g in chosen],
            "n_boot": n_boot,
            "random_seed": random_seed,
            "unknown_fst_left_out": unknown,
            "rows": _records(table),
        }
        typer.echo(json.dumps(payload, indent=2))
    else:
        typer.echo(f"A = {a}\nB = {b}\ndifference = accuracy B - accuracy A")
        typer.echo(_compare_text(table))
    for note in notes:
        typer.echo(note, err=True)
    if out is not None:
        typer.echo(f"wrote {out}", err=fmt is not Format.table)


# --------------------------------------------------------------------------- output helpers


def _groups_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}_groups.csv")


def _write_evaluation(out: Path, result: Any) -> None:
    from dermsynth.evaluate.metrics import summary_with_gap_row
    from dermsynth.io import atomic_write_csv

    atomic_write_csv(out, result.table)
    atomic_write_csv(_groups_path(out), summary_with_gap_row(result.summary, result.gaps))


def _records(frame: Any) -> list[dict[str, Any]]:
    # pandas' JSON writer turns NaN into null and numpy scalars into plain numbers.
    return json.loads(frame.to_json(orient="records"))


def _clean(value: Any) -> Any:
    """NaN -> None, recursively, so the JSON output stays valid JSON."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:
        return None
    return value


def _num(value: float, digits: int = 3) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def _intervals(frame: Any, low: str, high: str, sep: str = "-") -> list[str]:
    return [
        "-" if lo != lo else f"{lo:.3f}{sep}{hi:.3f}"
        for lo, hi in zip(frame[low], frame[high], strict=True)
    ]


def _accuracy_text(table: Any) -> str:
    shown = table[["condition", "fst_group", "n", "correct"]].copy()
    shown["accuracy"] = table["accuracy"].map(_num)
    shown["95% CI (Wald)"] = _intervals(table, "ci_low", "ci_high")
    shown["95% CI (Wilson)"] = _intervals(table, "wilson_low", "wilson_high")
    return shown.to_string(index=False)


def _summary_text(summary: Any) -> str:
    shown = summary[["fst_group", "n", "correct"]].copy()
    shown["accuracy"] = summary["accuracy"].map(_num)
    shown["95% CI (Wald)"] = _intervals(summary, "ci_low", "ci_high")
    shown["balanced_accuracy"] = summary["balanced_accuracy"].map(_num)
    shown["macro_f1"] = summary["macro_f1"].map(_num)
    shown["n_conditions"] = summary["n_conditions"]
    return shown.to_string(index=False)


def _gap_text(gaps: dict[str, dict[str, Any]]) -> str:
    lines = ["gap between best and worst FST group:"]
    for metric, gap in gaps.items():
        if gap["best_group"] is None:
            lines.append(f"  {metric}: - (needs two groups with images)")
        else:
            lines.append(
                f"  {metric}: {gap['gap']:.3f} (best {gap['best_group']} {gap['best']:.3f}, "
                f"worst {gap['worst_group']} {gap['worst']:.3f})"
            )
    return "\n".join(lines)


def _compare_text(table: Any) -> str:
    shown = table[["condition", "fst_group", "n"]].copy()
    shown["accuracy_a"] = table["accuracy_a"].map(_num)
    shown["accuracy_b"] = table["accuracy_b"].map(_num)
    shown["difference"] = table["difference"].map(_num)
    shown["95% CI (bootstrap)"] = _intervals(table, "diff_ci_low", "diff_ci_high", " to ")
    shown["only_a"] = table["only_a_correct"]
    shown["only_b"] = table["only_b_correct"]
    shown["mcnemar_p"] = table["mcnemar_p"].map(lambda p: _num(p, 4))
    return shown.to_string(index=False)
