"""``dermsynth evaluate`` (predictions, the default, and ``synthetic``) and ``dermsynth compare``.

Heavy imports stay inside the commands.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

PREDICTIONS = "predictions"

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


class EvaluateGroup(TyperGroup):
    """``dermsynth evaluate PREDS.csv`` routes to ``evaluate predictions``; named subcommands and
    the group's help are taken as they are."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [PREDICTIONS, *args]
        return super().parse_args(ctx, args)


evaluate_app = typer.Typer(
    cls=EvaluateGroup,
    no_args_is_help=True,
    help=(
        "Measure a classifier's predictions by condition x FST group "
        "(`dermsynth evaluate PREDS.csv`, the default: `evaluate predictions`), or a synthetic "
        "image set against real images (`dermsynth evaluate synthetic`)."
    ),
)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the root app."""
    evaluate_app.command(PREDICTIONS)(evaluate)
    evaluate_app.command("synthetic")(synthetic)
    app.add_typer(evaluate_app, name="evaluate")
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


def synthetic(
    candidates: Path = typer.Option(
        ...,
        "--candidates",
        help="Candidate or selected manifest (rows with origin=synthetic); a selected manifest's "
        "final selection is measured.",
    ),
    real: Path = typer.Option(
        ...,
        "--real",
        help="Manifest or plan of real images; rows of split 'test' are the test set, the rest "
        "the real images each cell is compared with.",
    ),
    features: str = typer.Option(
        "colour-texture",
        "--features",
        help="colour-texture (offline, default), backbone:NAME[@WEIGHTS], classifier:RUN_DIR, "
        "inception[:FILE], dinov2:FOLDER_OR_HUB_ID or clip:FOLDER_OR_HUB_ID.",
    ),
    groups: str = GROUPS,
    fmt: Format = FORMAT,
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Also write synthetic_quality.csv, synthetic_distances.csv (per image) and "
        "synthetic_quality.json into this folder.",
    ),
    test: Path | None = typer.Option(
        None, "--test", help="Test images (a manifest), besides the real manifest's test rows."
    ),
    generator_data: Path | None = typer.Option(
        None,
        "--generator-data",
        help="Images the generator was trained or conditioned on (a manifest).",
    ),
    copy_threshold: float | None = typer.Option(
        None,
        "--copy-threshold",
        min=0,
        help="Feature distance within which an image counts as a copy (default: the "
        "--copy-quantile of real-to-real nearest-neighbour distances).",
    ),
    copy_quantile: float = typer.Option(
        0.05, "--copy-quantile", help="Quantile of real-to-real distances for the threshold."
    ),
    random_seed: int = typer.Option(0, "--random-seed", help="Seed of KID subsets and CAS."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Quality of a synthetic image set, per condition x FST group, against real images.

    Each synthetic image counts in the cell of its condition and requested skin type; it is
    compared with the real images of that cell that are in no test set. Per cell, with N: KID
    (and its std) and FID, precision/recall/density/coverage, the Classification Accuracy
    Score (train on synthetic, test on real; cas_real: the same trained on as many real
    images) with Wilson CIs, the copy rate against seeds, real, generator and test images,
    sibling diversity over real diversity, and skin-tone fidelity (ITA). With --format csv,
    stdout holds only the table; notes go to stderr.
    """
    from dermsynth.data.manifest import load_manifest
    from dermsynth.evaluate.synthetic import evaluate_synthetic

    result = evaluate_synthetic(
        load_manifest(candidates),
        load_manifest(real),
        features=features,
        groups=groups,
        test=load_manifest(test) if test is not None else None,
        generator_data=load_manifest(generator_data) if generator_data is not None else None,
        copy_threshold=copy_threshold,
        copy_quantile=copy_quantile,
        random_seed=random_seed,
        device=device,
    )
    if out is not None:
        _write_synthetic(out, result)
    if fmt is Format.csv:
        typer.echo(result.table.to_csv(index=False, lineterminator="\n"), nl=False)
    elif fmt is Format.json:
        payload = {"candidates": str(candidates), "real": str(real), **result.summary()}
        typer.echo(json.dumps(payload, indent=2))
    else:
        typer.echo(f"{candidates}: {result.info['measured']}")
        typer.echo(_synthetic_text(result.table))
    if fmt is not Format.json:
        for note in result.notes:
            typer.echo(f"note: {note}", err=True)
    if out is not None:
        typer.echo(f"wrote {out}/", err=fmt is not Format.table)


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


def _write_synthetic(out: Path, result: Any) -> None:
    from dermsynth.evaluate.synthetic import write_synthetic_quality
    from dermsynth.io import FolderLock

    with FolderLock(out, "an evaluation folder"):
        write_synthetic_quality(result, out)


def _synthetic_text(table: Any) -> str:
    shown = table[["condition", "fst_group", "n_synthetic", "n_real"]].copy()
    shown["kid"] = [
        "-" if k != k else f"{k:.3g}±{s:.2g}"
        for k, s in zip(table["kid"], table["kid_std"], strict=True)
    ]
    shown["fid"] = table["fid"].map(lambda v: _num(v, 1))
    for column in ("precision", "recall", "density", "coverage"):
        shown[column] = table[column].map(_num)
    shown["cas (95% CI)"] = [
        "-" if c != c else f"{c:.2f} ({lo:.2f}-{hi:.2f})"
        for c, lo, hi in zip(table["cas"], table["cas_low"], table["cas_high"], strict=True)
    ]
    shown["cas_real"] = table["cas_real"].map(lambda v: _num(v, 2))
    for column in ("copy_rate", "diversity_ratio", "tone_match"):
        shown[column] = table[column].map(lambda v: _num(v, 2))
    shown["ita_wasserstein"] = table["ita_wasserstein"].map(lambda v: _num(v, 1))
    lines = [shown.to_string(index=False)]
    for row in table.itertuples():
        if row.notes:
            lines.append(f"  {row.condition} / {row.fst_group}: {row.notes}")
    return "\n".join(lines)


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
