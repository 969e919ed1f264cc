"""Read a study run folder for the report: its config and whatever results it has so far.

A run may be unfinished (the runner crashed, or is still going). Loading never fails for a
missing results file or a run that is not done: it keeps what is there and lists what is not
(:attr:`StudyRun.missing`), so the report can show both. Only a folder that is not a study run
at all (no ``study.json``, or a config that no longer validates) is an error. Results files are
read with their dtypes (:mod:`dermsynth.schema`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from dermsynth.config import StudyConfig, format_errors
from dermsynth.errors import DermsynthError
from dermsynth.schema import DTYPES, RUN_KEYS, coerce
from dermsynth.study.layout import STUDY_FILE, results_dir

DONE = "done"

# Columns the report needs from each results file (the runner may add more; they ride along).
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "runs": (*RUN_KEYS, "status"),
    "table1": ("fst",),
    "accuracy": (*RUN_KEYS, "condition", "fst_group", "n", "accuracy", "ci_low", "ci_high"),
    "groups": (*RUN_KEYS, "fst_group", "n", "accuracy", "balanced_accuracy", "macro_f1"),
    "figure2": ("direction", "condition", "seed_id", "seed_path", "synthetic_path", "rank"),
    "summary": ("direction", "arm", "augmented", "dose", "condition", "fst_group", "n", "accuracy"),
    "comparisons": ("family", "direction", "augmented", "arm_a", "arm_b", "dose_b", "p", "p_holm"),
    "fairness": ("direction", "arm", "augmented", "dose", "worst_accuracy", "gap"),
    "findings": ("kind", "direction", "augmented", "fst_group", "arm_other", "verdict"),
    "synthetic_quality": ("direction", "arm", "pool", "condition", "fst_group", "n_synthetic"),
    "selection_signal": ("direction", "condition", "classifier", "auroc"),
}
# Tables a study of an older version may lack; their sections say so without listing them.
OPTIONAL = frozenset({"synthetic_quality", "selection_signal"})


@dataclass
class StudyRun:
    """A study run folder as the report sees it.

    ``tables`` maps each results file's stem (``runs``, ``summary``, ...) to its DataFrame, for
    the files that exist and are readable; ``missing`` lists, in words, everything the report
    could not find (files, unfinished runs), to be shown to the reader.
    """

    path: Path
    config: StudyConfig
    fingerprint: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @property
    def simulated(self) -> bool:
        """True when the study ran on the package's simulated dataset."""
        return self.config.simulated

    @property
    def full_dose(self) -> int:
        """Synthetic images in the full arm: seeds per group x synthetic per seed (paper: 32)."""
        return self.config.full_dose

    def table(self, name: str) -> pd.DataFrame | None:
        """One results table, or None when it is missing or unreadable."""
        return self.tables.get(name)


def _read_results_csv(path: Path, name: str) -> tuple[pd.DataFrame | None, str | None]:
    """A results CSV with its known columns typed, or None and why not."""
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
    try:
        # Table 1's fst column holds "total" too: it stays text.
        frame = coerce(frame, {k: v for k, v in DTYPES.items() if name != "table1" or k != "fst"})
    except ValueError as exc:
        return None, f"{rel}: {exc}"
    return _numbers(frame, keep_text=("fst",) if name == "table1" else ()), None


def _numbers(frame: pd.DataFrame, keep_text: tuple[str, ...]) -> pd.DataFrame:
    """Columns the schema does not type become numbers where every filled cell is a number."""
    for column in frame.columns:
        if column in DTYPES or column in keep_text:
            continue
        text = frame[column].astype(str).str.strip()
        filled = text != ""
        converted = pd.to_numeric(text.where(filled), errors="coerce")
        if converted[filled].notna().all():  # an empty column is a number not computed
            frame[column] = converted.astype(float)
    return frame


def _read_study(run: Path) -> tuple[StudyConfig, str]:
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
    try:
        config = StudyConfig.model_validate(study["config"])
    except ValidationError as exc:
        raise DermsynthError(
            f"{study_file}: the config it holds is not valid now ({'; '.join(format_errors(exc))}); "
            "re-run the study to rewrite it"
        ) from None
    return config, str(study.get("fingerprint", ""))


def _pending(runs: pd.DataFrame) -> str | None:
    pending = runs[runs["status"].str.lower() != DONE]
    if not len(pending):
        return None
    by_status = pending.groupby("status").size().to_dict()
    counts = ", ".join(f"{n} {status or '(no status)'}" for status, n in by_status.items())
    shown = ", ".join(pending["run_id"].head(8))
    more = len(pending) - min(len(pending), 8)
    return (
        f"{len(pending)} of {len(runs)} runs are not done ({counts}): {shown}"
        + (f" and {more} more" if more > 0 else "")
        + "; their cells are shown as —"
    )


def _keep_done(loaded: StudyRun, runs: pd.DataFrame) -> None:
    """Per-run results of runs that ``runs.csv`` does not mark done are left out."""
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


def load_run(run_dir: str | Path) -> StudyRun:
    """Read ``RUN/study.json`` and every results CSV there is; list what is missing."""
    run = Path(run_dir)
    if not run.exists():
        raise DermsynthError(f"no such folder: {run}")
    if not run.is_dir():
        raise DermsynthError(
            f"{run} is a file; give the study run folder (the one with study.json)"
        )
    config, fingerprint = _read_study(run)
    loaded = StudyRun(path=run, config=config, fingerprint=fingerprint)
    results = results_dir(run)
    if not results.is_dir():
        loaded.missing.append("results/ is missing: no run of the study has been collected yet")
    for name in REQUIRED_COLUMNS:
        frame, problem = _read_results_csv(results / f"{name}.csv", name)
        if frame is not None:
            loaded.tables[name] = frame
        elif results.is_dir() and problem and name not in OPTIONAL:
            loaded.missing.append(problem)
    runs = loaded.table("runs")
    if runs is not None:
        note = _pending(runs)
        if note:
            loaded.missing.append(note)
        _keep_done(loaded, runs)
    return loaded


def resolve_image(run: Path, value: str) -> Path | None:
    """An image path from a results file: absolute, or relative to the run folder."""
    if not value or (isinstance(value, float) and math.isnan(value)):
        return None
    path = Path(value)
    return path if path.is_absolute() else run / path
