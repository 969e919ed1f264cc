"""Markdown tables of a finished study (the demo's, for README and RESULTS.md): every arm at the
full dose in both directions, the synthetic-set quality table, and the findings' counts.

    python benchmarks/demo_tables.py dermsynth-demo/study
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from dermsynth.report import tables
from dermsynth.report.load import load_run


def markdown(frame: pd.DataFrame) -> str:
    """A frame as a GitHub table (multi-level headers joined, line breaks as '; ')."""
    heads = [
        ", tested on ".join(str(p) for p in c if p) if isinstance(c, tuple) else str(c)
        for c in frame.columns
    ]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("\n", "; ") for v in row) + " |")
    return "\n".join(lines)


def main(run_dir: str) -> None:
    """Print the tables of the study at ``run_dir``."""
    run = load_run(Path(run_dir))
    config = run.config
    summary = run.table("summary")
    if summary is None:
        raise SystemExit(f"{run_dir}: no results/summary.csv")
    arms = [a for a in tables.ARM_ORDER if a in config.arms]
    cells = tables.arm_cells(summary, list(config.augmented), run.full_dose, arms)
    for condition in config.augmented:
        print(f"\n#### {condition}: accuracy on {condition} (mean of repeats, 95% CI)\n")
        print(markdown(tables.arms_display(cells, condition)))
    quality = run.table("synthetic_quality")
    if quality is not None:
        for direction in dict.fromkeys(quality["direction"]):
            print(f"\n#### Images each arm adds, {tables.direction_label(direction)}\n")
            print(markdown(tables.quality_display(quality, direction)))
    signal = run.table("selection_signal")
    if signal is not None:
        print("\n#### Selection's pathology score\n")
        print(markdown(tables.signal_display(signal)))
    findings = run.table("findings")
    if findings is not None:
        print("\n#### Findings: verdicts by kind\n")
        counts = findings.groupby(["kind", "verdict"]).size().reset_index(name="n")
        print(markdown(counts))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python benchmarks/demo_tables.py RUN_DIR")
    main(sys.argv[1])
