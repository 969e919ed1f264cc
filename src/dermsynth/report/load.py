"""Read a study run folder for the report: its config and whatever results it has so far.

A run may be unfinished (the runner crashed, or is still going). Loading never fails for a
missing results file or a run that is not done: it keeps what is there and lists what is not
(:attr:`StudyRun.missing`), so the report can show both. Only a folder that is not a study run
at all (no ``study.json``) is an error.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dermsynth.errors import DermsynthError
from dermsynth.study.layout import STUDY_FILE, results_dir

DONE = "done"

# Columns the report needs from each results file (the runner may add more; they ride along).
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "runs": ("run_id", "direction", "arm", "augmented", "dose", "repeat", "status"),
    "table1": ("fst",),
    "accuracy": (
        "run_id",
        "direction",
        "arm",
        "augmented",
        "dose",
        "repeat",
        "condition",
        "fst_group",
        "n",
        "accuracy",
        "ci_low",
        "ci_high",
    ),
    "groups": (
        "run_id",
        "direction",
        "arm",
        "augmented",
        "dose",
        "repeat",
        "fst_group",
        "n",
        "accuracy",
        "ci_low",
        "ci_high",
        "balanced_accuracy",
        "macro_f1",
    ),
    "paired": (
        "direction",
        "augmented",
        "repeat",
        "arm_a",
        "arm_b",
        "dose_b",
        "condition",
        "fst_group",
        "n",
        "accuracy_a",
        "accuracy_b",
        "difference",
        "mcnemar_p",
        "diff_ci_low",
        "diff_ci_high",
    ),
    "figure2": ("direction", "condition", "seed_id", "seed_path", "synthetic_path", "rank"),
}
# Text columns: read as text so that an empty ``augmented`` (the ``real`` arm) stays "" and a
# group named "5" stays a string.
_TEXT_COLUMNS = (
    "run_id",
    "direction",
    "arm",
    "augmented",
    "condition",
    "fst_group",
    "status",
    "arm_a",
    "arm_b",
    "seed_id",
    "seed_path",
    "synthetic_path",
    "fst",
)
_INT_COLUMNS = ("dose", "repeat", "dose_b", "rank")


@dataclass
class StudyRun:
    """A study run folder as the report sees it.

    ``tables`` maps each results file's stem (``runs``, ``accuracy``, ...) to its DataFrame, for
    the files that exist and are readable; ``missing`` lists, in words, everything the report
    could not find (files, unfinished runs), to be shown to the reader.
    """

    path: Path
    config: dict[str, Any]
    fingerprint: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @property
    def simulated(self) -> bool:
        """True when the study ran on the package's simulated dataset."""
        return bool(self.config.get("simulated", False))

    @property
    def full_dose(self) -> int | None:
        """Synthetic images in the full arm: seeds per group x synthetic per seed (paper: 32)."""
        seeds = self.config.get("seeds_per_group")
        per_seed = self.config.get("synthetic_per_seed")
        if isinstance(seeds, int) and isinstance(per_seed, int):
            return seeds * per_seed
        return None

    def table(self, name: str) -> pd.DataFrame | None:
        """One results table, or None when it is missing or unreadable."""
        return self.tables.get(name)


def _read_results_csv(path: Path, name: str) -> tuple[pd.DataFrame | None, str | None]:
    """A results CSV with its text and integer columns typed, or None and why not."""
    rel = f"results/{path.name}"
    if not path.is_file():
        return None, f"{rel} is missing"
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    except pd.errors.EmptyDataError:
        return None, f"{rel} is empty"
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        return None, f"{rel} is not a readable CSV ({exc})".replace("\n", " ")
    frame.columns = [str(c).strip() for c in frame.columns]
    absent = [c for c in REQUIRED_COLUMNS[name] if c not in frame.columns]
    if absent:
        return None, f"{rel} lacks column(s) {', '.join(absent)}"
    for column in frame.columns:
        if column in _TEXT_COLUMNS:
            frame[column] = frame[column].str.strip()
        elif column in _INT_COLUMNS:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").fillna(0).astype(int)
        elif name != "table1" or column != "fst":
            converted = pd.to_numeric(frame[column], errors="coerce")
            # Keep a column as text unless it is numbers (blank cells become NaN).
            blank = frame[column].str.strip() == ""
            if converted[~blank].notna().all():
                frame[column] = converted
    return frame, None


def load_run(run_dir: str | Path) -> StudyRun:
    """Read ``RUN/study.json`` and every results CSV there is; list what is missing.

    Accuracy and group results of runs that ``runs.csv`` does not mark ``done`` are left out,
    so a half-written run never enters a table.
    """
    run = Path(run_dir)
    if not run.exists():
        raise DermsynthError(f"no such folder: {run}")
    if not run.is_dir():
        raise DermsynthError(
            f"{run} is a file; give the study run folder (the one with study.json)"
        )
    study_file = run / STUDY_FILE
    if not study_file.is_file():
        raise DermsynthError(
            f"{run} is not a study run folder: it has no {STUDY_FILE}. Give the folder that "
            "`dermsynth study run CONFIG` wrote (it holds study.json and results/)"
        )
    try:
        study = json.loads(study_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DermsynthError(f"{study_file}: not valid JSON ({exc})") from None
    if not isinstance(study, dict) or not isinstance(study.get("config"), dict):
        raise DermsynthError(
            f"{study_file}: expected an object with a 'config' mapping (as `dermsynth study run` "
            "writes it); re-run the study to rewrite it"
        )
    loaded = StudyRun(
        path=run, config=study["config"], fingerprint=str(study.get("fingerprint", ""))
    )

    results = results_dir(run)
    if not results.is_dir():
        loaded.missing.append("results/ is missing: no run of the study has been collected yet")
    for name in REQUIRED_COLUMNS:
        frame, problem = _read_results_csv(results / f"{name}.csv", name)
        if frame is not None:
            loaded.tables[name] = frame
        elif results.is_dir() and problem:
            loaded.missing.append(problem)

    runs = loaded.table("runs")
    if runs is not None:
        pending = runs[runs["status"].str.lower() != DONE]
        if len(pending):
            by_status = pending.groupby("status").size().to_dict()
            counts = ", ".join(f"{n} {status or '(no status)'}" for status, n in by_status.items())
            shown = ", ".join(pending["run_id"].head(8))
            more = len(pending) - min(len(pending), 8)
            loaded.missing.append(
                f"{len(pending)} of {len(runs)} runs are not done ({counts}): {shown}"
                + (f" and {more} more" if more > 0 else "")
                + "; their cells are shown as —"
            )
        done = set(runs.loc[runs["status"].str.lower() == DONE, "run_id"])
        for name in ("accuracy", "groups"):
            frame = loaded.table(name)
            if frame is None:
                continue
            loaded.tables[name] = frame[frame["run_id"].isin(done)].reset_index(drop=True)
            absent = sorted(done - set(frame["run_id"]))
            if absent:
                loaded.missing.append(
                    f"{len(absent)} done run(s) have no rows in results/{name}.csv "
                    f"(e.g. {', '.join(absent[:3])}); collect the results again"
                )
        paired = loaded.table("paired")
        if paired is not None:
            loaded.tables["paired"] = _paired_of_done_runs(paired, runs, done)
    return loaded


def _paired_of_done_runs(paired: pd.DataFrame, runs: pd.DataFrame, done: set[str]) -> pd.DataFrame:
    """Paired rows whose two runs are both done (paired.csv names runs by their grid keys)."""
    finished = runs[runs["run_id"].isin(done)]
    keys = set(
        zip(
            finished["direction"],
            finished["arm"],
            finished["augmented"],
            finished["dose"],
            finished["repeat"],
            strict=True,
        )
    )
    # The real arm is shared by every augmented condition: its runs have no augmented name.
    with_b = [
        (d, b, "" if b == "real" else aug, int(dose), int(rep)) in keys
        for d, b, aug, dose, rep in zip(
            paired["direction"],
            paired["arm_b"],
            paired["augmented"],
            paired["dose_b"],
            paired["repeat"],
            strict=True,
        )
    ]
    # Arm A is real or real+seed (dose 0) in the study's comparisons; any other arm A is kept.
    with_a = [
        a not in ("real", "real+seed") or (d, a, "" if a == "real" else aug, 0, int(rep)) in keys
        for d, a, aug, rep in zip(
            paired["direction"], paired["arm_a"], paired["augmented"], paired["repeat"], strict=True
        )
    ]
    mask = pd.Series(with_a, index=paired.index) & pd.Series(with_b, index=paired.index)
    return paired[mask].reset_index(drop=True)


def resolve_image(run: Path, value: str) -> Path | None:
    """An image path from a results file: absolute, or relative to the run folder."""
    if not value or (isinstance(value, float) and math.isnan(value)):
        return None
    path = Path(value)
    return path if path.is_absolute() else run / path
