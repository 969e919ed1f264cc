"""Where a study keeps its files: one place that the runner writes and the report reads.

```
RUN/
  study.json                 resolved config + fingerprint (a folder belongs to one config)
  manifest.csv               the dataset as loaded (all rows, validated)
  splits/<direction>.csv     train / seed / test plan of each direction (data plan)
  generation/<direction>/<condition>/   candidates (PNG) + manifest.csv (dermsynth generate)
  selection/<direction>/<condition>/selected.csv + contact_sheets/  (dermsynth select)
  runs/<run_id>/             one classifier: config.json, model.pt, train_log.csv,
                             predictions.csv, done.json
  cache/                     resized images and frozen features, shared by every run
  results/
    runs.csv                 the grid: run_id, direction, arm, augmented, dose, repeat, status
    table1.csv               sample sizes: fst, <condition...>, total (the paper's Table 1)
    accuracy.csv             run_id, direction, arm, augmented, dose, repeat, condition,
                             fst_group, n, correct, accuracy, ci_low, ci_high, wilson_low,
                             wilson_high
    groups.csv               run_id, direction, arm, augmented, dose, repeat, fst_group, n,
                             correct, accuracy, ci_low, ci_high, wilson_low, wilson_high,
                             balanced_accuracy, macro_f1, n_conditions
    paired.csv               direction, augmented, repeat, arm_a, arm_b, dose_b, condition,
                             fst_group, n, accuracy_a, accuracy_b, difference, mcnemar_p,
                             diff_ci_low, diff_ci_high  (arm_b compared with arm_a on the
                             same test images; condition "(all)" = every condition)
    figure2.csv              direction, condition, seed_id, seed_path, synthetic_path, rank
  report/index.html          the report, with every table also as CSV beside it
```
Directions are named ``train_<group>`` (e.g. ``train_1-2``); conditions in folder names have
spaces replaced by underscores. ``done.json`` marks a finished step: a step without it is redone.
"""

from __future__ import annotations

from pathlib import Path

STUDY_FILE = "study.json"
MANIFEST_FILE = "manifest.csv"
DONE_FILE = "done.json"


def slug(name: str) -> str:
    """A condition or arm as a folder name: ``squamous cell carcinoma`` -> ``squamous_cell_carcinoma``."""
    return name.strip().replace(" ", "_").replace("+", "_").replace("/", "_")


def splits_path(run: Path, direction: str) -> Path:
    """Plan of one direction."""
    return run / "splits" / f"{direction}.csv"


def generation_dir(run: Path, direction: str, condition: str) -> Path:
    """Candidates generated for one augmented condition in one direction."""
    return run / "generation" / direction / slug(condition)


def selection_path(run: Path, direction: str, condition: str) -> Path:
    """Selected candidates of one augmented condition in one direction."""
    return run / "selection" / direction / slug(condition) / "selected.csv"


def run_dir(run: Path, run_id: str) -> Path:
    """Folder of one classifier run."""
    return run / "runs" / run_id


def results_dir(run: Path) -> Path:
    """Collected tables of the whole study."""
    return run / "results"


def report_dir(run: Path) -> Path:
    """The HTML report and its CSV tables."""
    return run / "report"


def cache_dir(run: Path) -> Path:
    """Caches shared by every run: resized images, frozen features."""
    return run / "cache"
