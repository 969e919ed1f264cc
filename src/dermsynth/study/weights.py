"""Selection weights learned from a study's selection ablation, or the honest word that none are.

A study with the arms ``real+seed+synthetic`` (candidates ranked by the combined selection
score) and ``real+seed+synthetic-random`` (candidates in a random order) trains classifiers on
different synthetic images at the same direction, augmented condition and dose. For every
finished run of these two arms, :func:`learn_weights` takes

- the mean of each selection score (``score_tone``, ``score_pathology``, ...) over the synthetic
  images the run trained on (its ``runs/<run_id>/manifest.csv``), each score standardized over
  every candidate of the study's selection manifests, so a coefficient is per standard deviation;
- the run's accuracy on its augmented condition in its target group (the direction's seed
  group), from the study's own ``results/accuracy.csv``;

and fits ``accuracy ~ score means + one fixed effect per cell`` (cell = direction x condition x
dose) by OLS (statsmodels), cluster-robust by cell where there are more informative cells than
scores, else HC3. Only cells whose runs trained on different images inform the score
coefficients; the others (e.g. doses at which only the score-ranked arm ran) are left out and
counted. A score whose within-cell variation is a combination of other scores' (they moved
together in every run) is left out and named (:func:`separable_scores`): its effect cannot be
told apart from theirs. A score earns a weight only when its coefficient's 95% CI lies above 0.
The learned weights are those coefficients per unit of the raw score (the combined score weighs
raw scores in [0, 1]), scaled to the current weights' sum. When no score qualifies, the current
weights are kept and the fit says so in one line: an outcome, not a failure.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError

from dermsynth.arms import ARMS, POOL_SYNTHETIC_RANDOM, SYNTHETIC
from dermsynth.config import SCORES, StudyConfig, format_errors
from dermsynth.data.fst import group_label
from dermsynth.data.manifest import load_manifest, read_text_table
from dermsynth.errors import DermsynthError
from dermsynth.schema import SYNTHETIC as SYNTHETIC_ORIGIN
from dermsynth.schema import coerce
from dermsynth.study import layout
from dermsynth.study.grid import directions_of

RANKED_ARM = SYNTHETIC
RANDOM_ARM = next(a.name for a in ARMS.values() if a.pool == POOL_SYNTHETIC_RANDOM)
CONFIDENCE = 0.95
DONE = "done"
NO_SIGNAL = "no score predicted accuracy"
FIT_COLUMNS: tuple[str, ...] = (
    "score",
    "coefficient",
    "ci_low",
    "ci_high",
    "p",
    "n_runs",
    "n_cells",
    "candidate_sd",
    "weight_current",
    "weight_learned",
    "note",
)
CLUSTERED = "cluster-robust by cell"
# Below about this many clusters, cluster-robust intervals run narrow (Cameron & Miller 2015,
# "A practitioner's guide to cluster-robust inference"): the fit says so beside them.
FEW_CELLS = 20
# Within-cell spread below this (in standard deviations) is rounding, not different images.
SPREAD_TOLERANCE = 1e-9


@dataclass(frozen=True)
class WeightFit:
    """What a study's selection ablation says about the selection weights."""

    study: Path
    effects: pd.DataFrame  # one row per score, FIT_COLUMNS
    runs: pd.DataFrame  # every finished run of the two arms: cell, accuracy, z_<score> means
    current: dict[str, float]
    learned: dict[str, float]
    covariance: str  # how the standard errors were computed, in words
    verdict: str  # one line: the learned weights, or that none qualified
    n_runs: int  # runs in the fit
    n_cells: int  # cells in the fit
    qualified: tuple[str, ...] = ()  # the scores whose CI lies above 0
    notes: list[str] = field(default_factory=list)

    @property
    def kept_current(self) -> bool:
        """True when no score qualified and the current weights stand."""
        return not self.qualified

    def yaml(self) -> str:
        """The ``selection: weights:`` block to paste into a study config, with the verdict."""
        weights = {name: round(float(w), 4) for name, w in self.learned.items()}
        block = yaml.safe_dump({"selection": {"weights": weights}}, sort_keys=False)
        return (
            f"# learned by `dermsynth study learn-weights {self.study}`\n# {self.verdict}\n{block}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-ready values."""
        effects = self.effects.astype(object).where(self.effects.notna(), None)
        return {
            "study": str(self.study),
            "verdict": self.verdict,
            "covariance": self.covariance,
            "n_runs": self.n_runs,
            "n_cells": self.n_cells,
            "current": self.current,
            "learned": self.learned,
            "qualified": list(self.qualified),
            "notes": self.notes,
            "effects": effects.to_dict(orient="records"),
        }


# --------------------------------------------------------------------------- reading the study


def read_study_config(study: Path) -> StudyConfig:
    """The config a study folder was run with (its ``study.json``)."""
    if not study.is_dir():
        raise DermsynthError(
            f"no such study folder: {study}; give the --out folder of `dermsynth study run`"
        )
    marker = study / layout.STUDY_FILE
    if not marker.is_file():
        raise DermsynthError(
            f"{study} is not a study folder (no {layout.STUDY_FILE}); give the --out folder of "
            "`dermsynth study run`"
        )
    try:
        config = json.loads(marker.read_text(encoding="utf-8"))["config"]
        return StudyConfig.model_validate(config)
    except (ValueError, KeyError, TypeError) as exc:
        detail = "; ".join(format_errors(exc)) if isinstance(exc, ValidationError) else str(exc)
        raise DermsynthError(
            f"{marker}: not a readable study record ({detail}); run the study again to rewrite it"
        ) from None


def _results_table(study: Path, name: str) -> pd.DataFrame:
    path = layout.results_dir(study) / name
    if not path.is_file():
        raise DermsynthError(
            f"{study} has no results/{name}: the study is unfinished; finish it with "
            "`dermsynth study run CONFIG --out STUDY`"
        )
    try:
        return coerce(read_text_table(path))
    except ValueError as exc:
        raise DermsynthError(f"{path}: {exc}") from None


def ablation_runs(study: Path, config: StudyConfig) -> pd.DataFrame:
    """The runs of the score-ranked and the random arm (``results/runs.csv``), all finished."""
    missing = [a for a in (RANKED_ARM, RANDOM_ARM) if a not in config.arms]
    if missing:
        raise DermsynthError(
            f"the study has no {' or '.join(missing)} arm (arms: {', '.join(config.arms)}); "
            f"weights are learned from {RANKED_ARM} against {RANDOM_ARM}: add both to the "
            "config's arms and run the study again"
        )
    runs = _results_table(study, "runs.csv")
    runs = runs[runs["arm"].isin([RANKED_ARM, RANDOM_ARM])].reset_index(drop=True)
    for arm in (RANKED_ARM, RANDOM_ARM):
        if not (runs["arm"] == arm).any():
            raise DermsynthError(
                f"results/runs.csv of {study} has no {arm} runs (see `dermsynth study plan`: "
                "a pool that cannot supply its dose skips the arm)"
            )
    pending = runs[runs["status"].str.lower() != DONE]
    if len(pending):
        raise DermsynthError(
            f"{len(pending)} of {len(runs)} runs of {RANKED_ARM} and {RANDOM_ARM} are not done "
            f"(e.g. {pending['run_id'].iloc[0]}); finish the study with "
            "`dermsynth study run CONFIG --out STUDY` first"
        )
    return runs.assign(
        cell=runs["direction"] + ", " + runs["augmented"] + ", dose " + runs["dose"].astype(str)
    )


def target_groups(config: StudyConfig) -> dict[str, str]:
    """Each direction's target group label (its seeds' skin types), checked to be tested."""
    targets = {}
    for direction in directions_of(config):
        target = group_label(direction.seed_group)
        tested = [group_label(g) for g in direction.tests]
        if target not in tested:
            raise DermsynthError(
                f"{direction.name} draws seeds from FST {target} but tests {', '.join(tested)}: "
                "no accuracy in the target group to learn from; add it to the direction's test"
            )
        targets[direction.name] = target
    return targets


def target_accuracy(study: Path, runs: pd.DataFrame, targets: dict[str, str]) -> pd.Series:
    """Each run's accuracy on its augmented condition in its target group, by run id."""
    table = _results_table(study, "accuracy.csv")
    wanted = runs[["run_id", "augmented"]].assign(fst_group=runs["direction"].map(targets))
    found = wanted.merge(
        table,
        left_on=["run_id", "augmented", "fst_group"],
        right_on=["run_id", "condition", "fst_group"],
        how="left",
    )
    absent = found[found["accuracy"].isna()]
    if len(absent):
        raise DermsynthError(
            f"results/accuracy.csv has no accuracy of the augmented condition in the target group "
            f"for {len(absent)} run(s) (e.g. {absent['run_id'].iloc[0]}); collect the study again "
            "with `dermsynth study run CONFIG --out STUDY`"
        )
    return found.set_index("run_id")["accuracy"].astype(float)


def candidate_scores(study: Path, runs: pd.DataFrame) -> pd.DataFrame:
    """Every candidate's selection scores, from the selection manifests of the runs' cells."""
    frames = []
    pairs = (
        runs[["direction", "augmented"]].drop_duplicates().sort_values(["direction", "augmented"])
    )
    for direction, condition in pairs.itertuples(index=False):
        path = layout.selection_path(study, direction, condition)
        if not path.is_file():
            raise DermsynthError(
                f"{path} is missing: the study's selection is unfinished; run the study again"
            )
        frames.append(load_manifest(path))
    return pd.concat(frames, ignore_index=True)


def standardization(candidates: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each score present, over every candidate."""
    out = {}
    for name in SCORES:
        column = f"score_{name}"
        if column in candidates.columns and candidates[column].notna().any():
            values = candidates[column].astype(float)
            out[name] = (float(values.mean()), float(values.std(ddof=1)))
    return out


def run_score_means(
    study: Path, runs: pd.DataFrame, standard: dict[str, tuple[float, float]]
) -> pd.DataFrame:
    """Each run's mean standardized score (``z_<score>``) over the synthetic images it trained on."""
    rows = []
    for run_id in runs["run_id"]:
        manifest = load_manifest(layout.run_dir(study, run_id) / "manifest.csv")
        synthetic = manifest[manifest["origin"] == SYNTHETIC_ORIGIN]
        if synthetic.empty:
            raise DermsynthError(
                f"runs/{run_id}/manifest.csv has no synthetic rows; run the study again"
            )
        row: dict[str, object] = {"run_id": run_id, "n_synthetic": len(synthetic)}
        for name, (mean, sd) in standard.items():
            column = f"score_{name}"
            values = synthetic[column].astype(float) if column in synthetic else pd.Series([])
            row[f"z_{name}"] = (values.mean() - mean) / sd if sd > 0 else math.nan
        rows.append(row)
    return runs.merge(pd.DataFrame(rows), on="run_id")


# --------------------------------------------------------------------------- the fit


def check_cells(runs: pd.DataFrame) -> None:
    """Refuse a study with a cell of fewer than two runs (a fixed effect would absorb it)."""
    sizes = runs.groupby("cell").size()
    small = sizes[sizes < 2]
    if len(small):
        raise DermsynthError(
            f"cell {small.index[0]} has {int(small.iloc[0])} run: the fit needs at least 2 runs "
            "per direction x condition x dose; set repeats: 2 or more and run the study again"
        )


def _spread(runs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per cell, the within-cell range of each column."""
    grouped = runs.groupby("cell")[columns]
    return grouped.max() - grouped.min()


def informative_runs(runs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The runs of cells whose runs trained on images with different score means."""
    spread = _spread(runs, columns)
    cells = spread.index[(spread > SPREAD_TOLERANCE).any(axis=1)]
    return runs[runs["cell"].isin(cells)].reset_index(drop=True)


def _ols(runs: pd.DataFrame, columns: list[str]) -> tuple[Any, str]:
    """OLS of accuracy on the columns and one effect per cell: cluster-robust by cell where
    there are more cells than columns (and its errors are finite), else HC3."""
    import statsmodels.api as sm

    cells = pd.get_dummies(runs["cell"], dtype=float)
    design = pd.concat([cells, runs[columns].astype(float)], axis=1)
    model = sm.OLS(runs["accuracy"].astype(float), design)
    n_cells = cells.shape[1]
    if n_cells > len(columns):
        groups = pd.factorize(runs["cell"])[0]
        result = model.fit(cov_type="cluster", cov_kwds={"groups": groups}, use_t=True)
        errors = result.bse[columns].to_numpy(dtype=float)
        if np.all(np.isfinite(errors)) and np.all(errors > 0):
            return result, f"{CLUSTERED} ({n_cells} cells, t with {n_cells - 1} df)"
    with np.errstate(divide="ignore", invalid="ignore"):
        result = model.fit(cov_type="HC3", use_t=True)
    return (
        result,
        f"HC3 ({n_cells} cells: too few for cluster-robust errors on {len(columns)} scores)",
    )


def separable_scores(runs: pd.DataFrame, scores: list[str]) -> tuple[list[str], dict[str, str]]:
    """The scores whose within-cell variation the runs can tell apart, and for each other score
    the ones it moves together with.

    Scores are taken in turn, those varying in the most cells first (ties in ``scores``'
    order), each kept if it is not a linear combination of the kept ones within cells.
    """
    columns = [f"z_{s}" for s in scores]
    within = runs[columns] - runs.groupby("cell")[columns].transform("mean")
    cells = (_spread(runs, columns) > SPREAD_TOLERANCE).sum()
    kept: list[str] = []
    for column in sorted(columns, key=lambda c: -int(cells[c])):
        trial = [*kept, column]
        if np.linalg.matrix_rank(within[trial].to_numpy(dtype=float)) == len(trial):
            kept.append(column)
    names = [c.removeprefix("z_") for c in columns if c in kept]
    base = within[kept].to_numpy(dtype=float)
    together = {}
    for column in (c for c in columns if c not in kept):
        # The kept scores it is a combination of: those with a non-zero coefficient.
        coefficients = np.linalg.lstsq(base, within[column].to_numpy(dtype=float), rcond=None)[0]
        scale = np.abs(coefficients).max(initial=0.0)
        partners = [k for k, b in zip(kept, coefficients, strict=True) if abs(b) > 1e-6 * scale]
        together[column.removeprefix("z_")] = ", ".join(p.removeprefix("z_") for p in partners)
    return names, together


def score_effects(runs: pd.DataFrame, scores: list[str]) -> tuple[pd.DataFrame, str]:
    """Coefficient, 95% CI and p of each score in one fixed-effects fit, and the covariance used."""
    columns = [f"z_{s}" for s in scores]
    result, covariance = _ols(runs, columns)
    interval = result.conf_int(alpha=1 - CONFIDENCE)
    effects = pd.DataFrame(
        {
            "score": scores,
            "coefficient": result.params[columns].to_numpy(dtype=float),
            "ci_low": interval.loc[columns, 0].to_numpy(dtype=float),
            "ci_high": interval.loc[columns, 1].to_numpy(dtype=float),
            "p": result.pvalues[columns].to_numpy(dtype=float),
        }
    )
    return effects, covariance


def learned_weights(
    effects: pd.DataFrame, current: dict[str, float], standard: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """The current weights, or (where a score's CI lies above 0) the qualifying coefficients per
    raw-score unit scaled to the current weights' sum; other scores 0."""
    qualified = qualifying(effects)
    if qualified.empty:
        return dict(current)
    coefficients = zip(qualified["score"].astype(str), qualified["coefficient"], strict=True)
    raw = {name: float(c) / standard[name][1] for name, c in coefficients}
    total = sum(current.values())
    return {name: total * raw.get(name, 0.0) / sum(raw.values()) for name in SCORES}


# --------------------------------------------------------------------------- putting it together


def qualifying(effects: pd.DataFrame) -> pd.DataFrame:
    """The scores whose coefficient is positive with its whole 95% CI above 0."""
    return effects[(effects["coefficient"] > 0) & (effects["ci_low"] > 0)]


def _score_notes(
    standard: dict[str, tuple[float, float]], fitted: pd.DataFrame, together: dict[str, str]
) -> dict[str, str]:
    qualified = set(qualifying(fitted.reset_index())["score"])
    negative = set(fitted.index[fitted["ci_high"] < 0])
    notes = {name: "" for name in SCORES}
    for name in SCORES:
        if name not in standard:
            notes[name] = "not in the selection manifests"
        elif standard[name][1] <= 0:
            notes[name] = "the same for every candidate: not estimable"
        elif name in together:
            notes[name] = f"moves with {together[name]} within cells: not estimable on its own"
        elif name not in fitted.index:
            notes[name] = "no spread within cells: not estimable"
        elif name in qualified:
            notes[name] = "CI above 0: earns a weight"
        elif name in negative:
            notes[name] = "CI below 0: higher scores went with lower accuracy"
    return notes


def _effects_table(
    effects: pd.DataFrame,
    standard: dict[str, tuple[float, float]],
    current: dict[str, float],
    learned: dict[str, float],
    sizes: tuple[int, int],
    together: dict[str, str],
) -> pd.DataFrame:
    """One row per score of :data:`SCORES`, fitted or with the reason it was not."""
    fitted = effects.set_index("score")
    notes = _score_notes(standard, fitted, together)
    table = fitted[["coefficient", "ci_low", "ci_high", "p"]].reindex(list(SCORES))
    estimated = table.index.isin(fitted.index)
    table = table.assign(
        n_runs=np.where(estimated, sizes[0], 0),
        n_cells=np.where(estimated, sizes[1], 0),
        candidate_sd=[standard.get(name, (math.nan, math.nan))[1] for name in SCORES],
        weight_current=[current.get(name, 0.0) for name in SCORES],
        weight_learned=[learned.get(name, 0.0) for name in SCORES],
        note=[notes[name] for name in SCORES],
    )
    return table.rename_axis("score").reset_index()[list(FIT_COLUMNS)]


def _verdict(table: pd.DataFrame, kept: bool, sizes: tuple[int, int]) -> str:
    if kept:
        return (
            f"{NO_SIGNAL} (no coefficient with its 95% CI above 0; {sizes[0]} runs in "
            f"{sizes[1]} cells): the current weights are kept"
        )
    earned = table["weight_learned"] > 0
    parts = [
        f"{r.score} {r.weight_learned:.3g} (coefficient {r.coefficient:+.4f} per SD, 95% CI "
        f"{r.ci_low:+.4f} to {r.ci_high:+.4f})"
        for r in table[earned].itertuples()
    ]
    parts += [f"{name} 0" for name in table.loc[~earned, "score"]]
    return (
        f"learned weights from {sizes[0]} runs in {sizes[1]} cells: {'; '.join(parts)} (scaled "
        f"to the current weights' sum, {table['weight_current'].sum():.3g})"
    )


def _fit_inputs(study: Path) -> tuple[StudyConfig, pd.DataFrame, dict[str, tuple[float, float]]]:
    """The config, the two arms' runs with accuracy and score means, the standardization."""
    config = read_study_config(study)
    runs = ablation_runs(study, config)
    check_cells(runs)
    accuracy = target_accuracy(study, runs, target_groups(config))
    standard = standardization(candidate_scores(study, runs))
    if not any(sd > 0 for _, sd in standard.values()):
        raise DermsynthError(
            f"no selection score varies over the candidates of {study}; nothing to learn from"
        )
    runs = run_score_means(study, runs.assign(accuracy=runs["run_id"].map(accuracy)), standard)
    return config, runs, standard


def _fit_notes(
    n_runs: int, complete: pd.DataFrame, used: pd.DataFrame, covariance: str
) -> list[str]:
    """What was left out of the fit, and how far to trust its intervals."""
    notes = []
    if len(complete) < n_runs:
        notes.append(
            f"{n_runs - len(complete)} run(s) trained only on images without some score are "
            "left out of the fit"
        )
    n_cells = int(used["cell"].nunique())
    left = complete["cell"].nunique() - n_cells
    if left:
        notes.append(
            f"{left} cell(s) ({len(complete) - len(used)} runs) where every run trained on the "
            "same synthetic images inform no score and are left out of the fit"
        )
    if covariance.startswith(CLUSTERED) and n_cells < FEW_CELLS:
        notes.append(
            f"with {n_cells} cells (fewer than {FEW_CELLS}) cluster-robust intervals tend to be "
            "too narrow: read them as optimistic"
        )
    return notes


def learn_weights(study: str | Path) -> WeightFit:
    """Fit accuracy on the selection scores over a finished study's ranked and random runs."""
    study = Path(study)
    config, runs, standard = _fit_inputs(study)
    candidates = [f"z_{s}" for s, (_, sd) in standard.items() if sd > 0]
    complete = runs.dropna(subset=candidates)
    used = informative_runs(complete, candidates)
    if used.empty:
        raise DermsynthError(
            "in every cell all runs trained on the same synthetic images: nothing to learn from; "
            "generate more candidates per seed than are kept (candidates_per_seed > "
            "synthetic_per_seed)"
        )
    spread = _spread(used, candidates)
    varying = [c.removeprefix("z_") for c in candidates if (spread[c] > SPREAD_TOLERANCE).any()]
    scores, together = separable_scores(used, varying)
    effects, covariance = score_effects(used, scores)
    weights: dict[str, float] = {
        str(name): float(w) for name, w in config.selection.weights.items()
    }
    current = {name: weights[name] for name in SCORES if name in weights}
    learned = learned_weights(effects, current, standard)
    sizes = (len(used), int(used["cell"].nunique()))
    table = _effects_table(effects, standard, current, learned, sizes, together)
    notes = _fit_notes(len(runs), complete, used, covariance)
    return WeightFit(
        study=study,
        effects=table,
        runs=runs,
        current=current,
        learned=learned,
        covariance=covariance,
        verdict=_verdict(table, qualifying(effects).empty, sizes),
        n_runs=sizes[0],
        n_cells=sizes[1],
        qualified=tuple(qualifying(effects)["score"]),
        notes=notes,
    )


def render_fit(fit: WeightFit) -> str:
    """The fit as text: the table of every score, how it was fitted, the verdict, the YAML."""
    shown = fit.effects.copy()
    for column in ("coefficient", "ci_low", "ci_high"):
        shown[column] = shown[column].map(lambda v: "" if math.isnan(v) else f"{v:+.4f}")
    shown["p"] = shown["p"].map(lambda v: "" if math.isnan(v) else f"{v:.3f}")
    shown["candidate_sd"] = shown["candidate_sd"].map(lambda v: "" if math.isnan(v) else f"{v:.4f}")
    lines = [
        "accuracy of the augmented condition in the target group ~ mean selection scores of the "
        "run's synthetic images (per SD over the study's candidates) + one effect per cell "
        "(direction x condition x dose)",
        f"standard errors: {fit.covariance}; {fit.n_runs} runs in {fit.n_cells} cells",
        "",
        shown.to_string(index=False),
        "",
        *fit.notes,
        fit.verdict,
        "",
        "paste into a study config:",
        fit.yaml(),
    ]
    return "\n".join(lines)
