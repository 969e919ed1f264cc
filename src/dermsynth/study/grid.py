"""The study grid: direction x augmented condition x arm x dose x repeat, and what it costs.

``real`` runs do not depend on the augmented condition (every arm of a direction is tested
on the same rows, with all seeds left out), so a direction has one ``real`` run per repeat,
one ``real+seed`` run per augmented condition, and one run per augmented condition and dose
of each dosed arm (:meth:`dermsynth.config.StudyConfig.doses_of`; the full dose, seeds x
synthetic per seed, is the paper's arm). The arms are those of :mod:`dermsynth.arms`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import pandas as pd

from dermsynth.arms import (
    ARMS,
    POOL_EXTRA_REAL,
    POOL_SYNTHETIC,
    POOL_SYNTHETIC_RANDOM,
    POOL_TONE_SHIFT,
)
from dermsynth.config import StudyConfig
from dermsynth.data.fst import group_label
from dermsynth.data.manifest import resolve_conditions
from dermsynth.data.splits import Direction, plan_splits
from dermsynth.errors import DermsynthError
from dermsynth.schema import SEED, TEST, TRAIN, TRAIN_SPLITS

# Pools made from the generator's candidates: a study with one of these arms generates.
SYNTHETIC_POOLS = frozenset({POOL_SYNTHETIC, POOL_SYNTHETIC_RANDOM})
EXTRA_REAL = "real+seed+extra-real"


@dataclass(frozen=True)
class RunSpec:
    """One classifier to train and evaluate."""

    direction: str
    arm: str
    augmented: str = ""
    dose: int = 0
    repeat: int = 0

    @property
    def run_id(self) -> str:
        """A folder-safe name, unique within a study."""
        parts = [self.direction, self.arm.replace("+", "_")]
        if self.augmented:
            parts.append(self.augmented.replace(" ", "_"))
        if self.dose:
            parts.append(f"dose{self.dose}")
        parts.append(f"rep{self.repeat}")
        return "__".join(parts)


def skipped_arms(config: StudyConfig) -> dict[str, str]:
    """Arms of the config that cannot run, with the reason (shown by ``study plan``)."""
    skipped = {}
    if POOL_EXTRA_REAL in {ARMS[a].pool for a in config.arms} and config.dataset.reserve is None:
        skipped[EXTRA_REAL] = (
            "no real images are set aside for it: give dataset.reserve, a table of further real "
            "images of the seed groups that no test set holds"
        )
    return skipped


def study_arms(config: StudyConfig) -> list[str]:
    """The config's arms that run (see :func:`skipped_arms`)."""
    skipped = skipped_arms(config)
    return [a for a in config.arms if a not in skipped]


def real_count(plan: pd.DataFrame, condition: str) -> int:
    """Real training images of a condition in a direction's plan (what a ratio dose counts)."""
    return int(((plan["split"] == TRAIN) & (plan["label"] == condition)).sum())


def study_grid(config: StudyConfig, splits: dict[str, pd.DataFrame] | None = None) -> list[RunSpec]:
    """Every run of the study, in a stable order: direction, repeat, then the shared arms, then
    per augmented condition each arm at each of its doses (ratio doses need ``splits``, the
    directions' plans, to count the real images)."""
    if splits is None and any(isinstance(d, str) for d in config.doses):
        raise DermsynthError("internal: a study with ratio doses is laid out on its plans")
    arms = study_arms(config)
    shared = [a for a in arms if not ARMS[a].augmented]
    per_condition = [a for a in arms if ARMS[a].augmented]
    runs: list[RunSpec] = []
    for direction in config.directions:
        for repeat in range(config.repeats):
            runs.extend(RunSpec(direction.name, name, repeat=repeat) for name in shared)
            for condition in config.augmented:
                real = real_count(splits[direction.name], condition) if splits else None
                for name in per_condition:
                    doses = config.doses_of(name, real) or [0]
                    runs.extend(
                        RunSpec(direction.name, name, condition, dose, repeat) for dose in doses
                    )
    return runs


def directions_of(config: StudyConfig) -> list[Direction]:
    """The config's directions as checked :class:`Direction` objects."""
    return [Direction.build(d.train, d.test, d.seed) for d in config.directions]


@dataclass
class StudyPlan:
    """What a study will do: its runs with image counts, its generation work, the images each
    arm can draw on, and its cost."""

    runs: pd.DataFrame
    generation: pd.DataFrame
    cost: dict[str, float] = field(default_factory=dict)
    splits: dict[str, pd.DataFrame] = field(default_factory=dict)
    arms: pd.DataFrame = field(default_factory=pd.DataFrame)

    def summary(self) -> dict[str, object]:
        """Headline numbers for printing."""
        return {
            "runs": len(self.runs),
            "candidates_to_generate": int(self.generation["candidates"].sum()),
            "synthetic_selected": int(self.generation["selected"].sum()),
            **{k: round(v, 1) for k, v in self.cost.items()},
        }


def plan_study(config: StudyConfig, manifest: pd.DataFrame | None = None) -> StudyPlan:
    """Lay out the grid on the real table (no images needed) and check it is feasible.

    Every problem (an unknown condition, too few seed candidates, a class with no training
    images) is collected and reported in one error, each with where it comes from.
    """
    if manifest is None:
        manifest = config.dataset.load()
    conditions, augmented = resolve_study_conditions(config, manifest)
    splits = plan_directions(config, manifest, conditions, augmented)
    runs = _run_table(config, splits)
    generation = _generation_table(config, splits)
    cost = _estimate_cost(config, runs, generation, splits)
    arms = arm_table(config, splits, augmented)
    short = arms[arms["short"]]
    if len(short):
        raise DermsynthError(
            "the study is not feasible: "
            + "; ".join(
                f"{r.arm} ({r.direction}, {r.augmented}): dose {r.largest_dose} asked, at most "
                f"{r.available} images available ({r.note}){_per_seed_hint(config, r)}"
                for r in short.itertuples()
            )
        )
    return StudyPlan(runs, generation, cost, splits, arms)


def _available(
    config: StudyConfig,
    arm: str,
    plan: pd.DataFrame,
    condition: str,
    reserve: pd.DataFrame | None,
    seed_group: tuple[int, ...],
) -> tuple[int | None, str]:
    """How many images ``arm`` can add (None: as many as asked), and where they come from."""
    pool = ARMS[arm].pool
    seeds = plan[(plan["split"] == SEED) & (plan["label"] == condition)]
    if pool in SYNTHETIC_POOLS:
        return len(seeds) * config.synthetic_per_seed, "seeds x synthetic_per_seed"
    if pool == POOL_TONE_SHIFT:
        n = int(((plan["split"] == TRAIN) & (plan["label"] == condition)).sum())
        return n * len(seeds), (
            "training images of the condition x seeds' tones (fewer if shifted tones miss the group)"
        )
    if pool == POOL_EXTRA_REAL:
        if reserve is None:
            return 0, "no reserve table"
        rows = reserve[(reserve["label"] == condition) & reserve["fst"].isin(seed_group)]
        return len(rows), "reserve images of the condition in the seed group"
    if pool is None:
        return None, "the seeds themselves"
    return None, "made as needed"


def _per_seed_hint(config: StudyConfig, row: object) -> str:
    """For a synthetic arm short of images: the kept and generated counts per seed its
    largest dose needs (candidates per seed keep the config's ratio to those kept)."""
    need = getattr(row, "per_seed", 0)
    if not need:
        return ""
    made = math.ceil(need * config.candidates_per_seed / config.synthetic_per_seed)
    return (
        f"; it needs {need} kept of {made} generated per seed: set synthetic_per_seed >= {need} "
        f"and candidates_per_seed >= {made} (now {config.synthetic_per_seed} of "
        f"{config.candidates_per_seed})"
    )


def arm_table(
    config: StudyConfig, splits: dict[str, pd.DataFrame], augmented: list[str]
) -> pd.DataFrame:
    """Per arm, direction and augmented condition: doses, images available, and whether the
    largest dose fits; skipped arms with their reason."""
    reserve = None
    if config.dataset.reserve is not None and any(
        ARMS[a].pool == POOL_EXTRA_REAL for a in config.arms
    ):
        reserve = config.dataset.updated(csv=config.dataset.reserve).load()
    skipped = skipped_arms(config)
    seed_groups = {d.name: d.seed_group for d in directions_of(config)}
    rows = []
    for arm in config.arms:
        for name, plan in splits.items():
            for condition in augmented if ARMS[arm].augmented else [""]:
                doses = config.doses_of(arm, real_count(plan, condition))
                available, note = _available(
                    config, arm, plan, condition, reserve, seed_groups[name]
                )
                largest = max(doses, default=0)
                seeds = int(((plan["split"] == SEED) & (plan["label"] == condition)).sum())
                synthetic = ARMS[arm].pool in SYNTHETIC_POOLS and seeds > 0
                rows.append(
                    {
                        "arm": arm,
                        "direction": name,
                        "augmented": condition,
                        "doses": " ".join(map(str, doses)),
                        "largest_dose": largest,
                        "per_seed": math.ceil(largest / seeds) if synthetic else 0,
                        "available": "" if available is None else available,
                        "note": skipped.get(arm, note),
                        "skipped": arm in skipped,
                        "short": arm not in skipped
                        and available is not None
                        and available < largest,
                    }
                )
    return pd.DataFrame(rows)


def resolve_study_conditions(
    config: StudyConfig, manifest: pd.DataFrame
) -> tuple[list[str], list[str]]:
    """The config's conditions and augmented conditions as the table spells them; every unknown
    name is reported at once, with its YAML path."""
    labels = manifest["label"].unique()
    problems: list[str] = []
    resolved: dict[str, list[str]] = {"conditions": [], "augmented": []}
    for key, names in (("conditions", config.conditions), ("augmented", config.augmented)):
        for i, name in enumerate(names):
            try:
                resolved[key] += resolve_conditions([name], labels)
            except DermsynthError as exc:
                problems.append(f"{key}[{i}]: {exc}")
    if problems:
        raise DermsynthError(
            f"{len(problems)} problem(s) with the conditions of {config.dataset.csv}: "
            + "; ".join(problems)
        )
    return resolved["conditions"], resolved["augmented"]


def plan_directions(
    config: StudyConfig, manifest: pd.DataFrame, conditions: list[str], augmented: list[str]
) -> dict[str, pd.DataFrame]:
    """The train / seed / test plan of every direction; all infeasible parts in one error."""
    problems: list[str] = []
    splits: dict[str, pd.DataFrame] = {}
    for direction in directions_of(config):
        try:
            plan = plan_splits(
                manifest,
                conditions,
                direction,
                augmented,
                seeds_per_condition=config.seeds_per_group,
                random_seed=config.random_seed,
            )
        except DermsynthError as exc:
            problems.append(f"{direction.name}: {exc}")
            continue
        splits[direction.name] = plan
        counts = plan[plan["split"] == TRAIN]["label"].value_counts()
        empty = [c for c in conditions if counts.get(c, 0) == 0]
        if empty:
            problems.append(
                f"{direction.name}: no training images of {', '.join(map(repr, empty))} in FST "
                f"{group_label(direction.train)}"
            )
    if problems:
        raise DermsynthError("the study is not feasible: " + "; ".join(problems))
    return splits


def _run_table(config: StudyConfig, splits: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per run: its keys and how many images it trains and tests on."""
    rows = []
    for spec in study_grid(config, splits):
        plan = splits[spec.direction]
        n_train = int((plan["split"] == TRAIN).sum())
        n_seed = 0
        if ARMS[spec.arm].augmented:
            n_seed = int(((plan["split"] == SEED) & (plan["label"] == spec.augmented)).sum())
        row = {
            "run_id": spec.run_id,
            **asdict(spec),
            "train_real": n_train,
            "train_seed": n_seed,
            "train_added": spec.dose,
            "train_total": n_train + n_seed + spec.dose,
        }
        test = plan[plan["split"] == TEST]
        for group, n in test.groupby("test_group").size().items():
            row[f"test_{group}"] = int(n)
        rows.append(row)
    runs = pd.DataFrame(rows)
    test_columns = sorted(c for c in runs.columns if c.startswith("test_"))
    runs[test_columns] = runs[test_columns].fillna(0).astype(int)
    return runs


def _generation_table(config: StudyConfig, splits: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The candidates to generate per direction and augmented condition."""
    columns = ["direction", "condition", "seed_fst", "seeds", "candidates", "selected"]
    if not any(ARMS[a].pool in SYNTHETIC_POOLS for a in config.arms):
        return pd.DataFrame(columns=columns)
    rows = []
    for name, plan in splits.items():
        seeds = plan[plan["split"] == SEED]
        for condition, group in seeds.groupby("label", sort=False):
            rows.append(
                {
                    "direction": name,
                    "condition": condition,
                    "seed_fst": group_label(sorted(group["fst"].unique())),
                    "seeds": len(group),
                    "candidates": len(group) * config.candidates_per_seed,
                    "selected": len(group) * config.synthetic_per_seed,
                }
            )
    return pd.DataFrame(rows, columns=columns)


def _estimate_cost(
    config: StudyConfig,
    runs: pd.DataFrame,
    generation: pd.DataFrame,
    splits: dict[str, pd.DataFrame],
) -> dict[str, float]:
    """Rough seconds, from the per-image times the config states for your hardware."""
    clf = config.classifier
    gen_seconds = float(generation["candidates"].sum()) * config.generator.seconds_per_image
    test_views = runs.filter(like="test_").sum(axis=1)
    # Backbone passes if every run computed its own features, as a per-run script does.
    unshared = float((runs["train_total"] * clf.views + test_views).sum())
    if clf.uses_features:
        # Frozen features are computed once per image view and shared by every run.
        unique_train = pd.concat(
            [p[p["split"].isin(list(TRAIN_SPLITS))]["image_id"] for p in splits.values()]
        ).nunique()
        unique_test = pd.concat(
            [p[p["split"] == TEST]["image_id"] for p in splits.values()]
        ).nunique()
        views = (unique_train + int(generation["selected"].sum())) * clf.views + unique_test
        feature_seconds = views * clf.seconds_per_image
        shared = float(views)
        head_seconds = float(runs["train_total"].sum()) * clf.epochs * 1e-4
    else:
        feature_seconds = 0.0
        shared = unshared
        per_run = runs["train_total"] * clf.epochs + test_views
        head_seconds = float(per_run.sum()) * clf.seconds_per_image * (3.0 if clf.finetune else 1.0)
    return {
        "generation_seconds": gen_seconds,
        "feature_seconds": feature_seconds,
        "training_seconds": head_seconds,
        "total_seconds": gen_seconds + feature_seconds + head_seconds,
        "feature_views_shared": shared,
        "feature_views_unshared": unshared,
    }
