"""The study grid: direction x augmented condition x arm x dose x repeat, and what it costs.

``real`` runs do not depend on the augmented condition (every arm of a direction is tested
on the same rows, with all seeds left out), so a direction has one ``real`` run per repeat,
one ``real+seed`` run per augmented condition, and one ``real+seed+synthetic`` run per
augmented condition and dose (the full dose, seeds x synthetic per seed, is the paper's arm).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pandas as pd

from dermsynth.config import StudyConfig
from dermsynth.data.fst import group_label
from dermsynth.data.manifest import resolve_conditions
from dermsynth.data.splits import Direction, plan_splits
from dermsynth.errors import DermsynthError


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


def study_grid(config: StudyConfig) -> list[RunSpec]:
    """Every run of the study, in a stable order."""
    doses = sorted(set(config.doses) | {config.full_dose})
    runs: list[RunSpec] = []
    for direction in config.directions:
        for repeat in range(config.repeats):
            if "real" in config.arms:
                runs.append(RunSpec(direction.name, "real", repeat=repeat))
            for condition in config.augmented:
                if "real+seed" in config.arms:
                    runs.append(RunSpec(direction.name, "real+seed", condition, repeat=repeat))
                if "real+seed+synthetic" in config.arms:
                    runs.extend(
                        RunSpec(direction.name, "real+seed+synthetic", condition, dose, repeat)
                        for dose in doses
                    )
    return runs


def directions_of(config: StudyConfig) -> list[Direction]:
    """The config's directions as checked :class:`Direction` objects."""
    return [Direction.build(d.train, d.test, d.seed) for d in config.directions]


@dataclass
class StudyPlan:
    """What a study will do: its runs with image counts, its generation work, and its cost."""

    runs: pd.DataFrame
    generation: pd.DataFrame
    cost: dict[str, float] = field(default_factory=dict)
    splits: dict[str, pd.DataFrame] = field(default_factory=dict)

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

    Every infeasible part (a condition missing, too few seed candidates, a class with no
    training images) is collected and reported in one error.
    """
    if manifest is None:
        manifest = config.dataset.load()
    labels = manifest["label"].unique()
    conditions = resolve_conditions(config.conditions, labels)
    augmented = resolve_conditions(config.augmented, labels)

    problems: list[str] = []
    splits: dict[str, pd.DataFrame] = {}
    for direction in directions_of(config):
        try:
            splits[direction.name] = plan_splits(
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
        train = splits[direction.name]
        train_counts = train[train["split"] == "train"]["label"].value_counts()
        empty = [c for c in conditions if train_counts.get(c, 0) == 0]
        if empty:
            problems.append(
                f"{direction.name}: no training images of {', '.join(map(repr, empty))} in FST "
                f"{group_label(direction.train)}"
            )
    if problems:
        raise DermsynthError("the study is not feasible: " + "; ".join(problems))

    rows = []
    for spec in study_grid(config):
        plan = splits[spec.direction]
        n_train = int((plan["split"] == "train").sum())
        n_seed = 0
        if spec.arm != "real":
            n_seed = int(((plan["split"] == "seed") & (plan["label"] == spec.augmented)).sum())
        test = plan[plan["split"] == "test"]
        row = {
            "run_id": spec.run_id,
            **asdict(spec),
            "train_real": n_train,
            "train_seed": n_seed,
            "train_synthetic": spec.dose,
            "train_total": n_train + n_seed + spec.dose,
        }
        for group, n in test.groupby("test_group").size().items():
            row[f"test_{group}"] = int(n)
        rows.append(row)
    runs = pd.DataFrame(rows)
    test_columns = sorted(c for c in runs.columns if c.startswith("test_"))
    runs[test_columns] = runs[test_columns].fillna(0).astype(int)

    gen_rows = []
    if "real+seed+synthetic" in config.arms:
        for name, plan in splits.items():
            seeds = plan[plan["split"] == "seed"]
            for condition, group in seeds.groupby("label", sort=False):
                gen_rows.append(
                    {
                        "direction": name,
                        "condition": condition,
                        "seed_fst": group_label(sorted(group["fst"].unique())),
                        "seeds": len(group),
                        "candidates": len(group) * config.candidates_per_seed,
                        "selected": len(group) * config.synthetic_per_seed,
                    }
                )
    generation = pd.DataFrame(
        gen_rows, columns=["direction", "condition", "seed_fst", "seeds", "candidates", "selected"]
    )
    return StudyPlan(runs, generation, _estimate_cost(config, runs, generation, splits), splits)


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
    unshared = float((runs["train_total"] * clf.train_views + test_views).sum())
    if clf.fast_path and not clf.fine_tune:
        # Frozen features are computed once per image view and shared by every run.
        unique_train = pd.concat(
            [p[p["split"].isin(["train", "seed"])]["image_id"] for p in splits.values()]
        ).nunique()
        unique_test = pd.concat(
            [p[p["split"] == "test"]["image_id"] for p in splits.values()]
        ).nunique()
        views = (unique_train + int(generation["selected"].sum())) * clf.train_views + unique_test
        feature_seconds = views * clf.seconds_per_image
        shared = float(views)
        head_seconds = float(runs["train_total"].sum()) * clf.epochs * 1e-4
    else:
        feature_seconds = 0.0
        shared = unshared
        per_run = runs["train_total"] * clf.epochs + test_views
        head_seconds = (
            float(per_run.sum()) * clf.seconds_per_image * (3.0 if clf.fine_tune else 1.0)
        )
    return {
        "generation_seconds": gen_seconds,
        "feature_seconds": feature_seconds,
        "training_seconds": head_seconds,
        "total_seconds": gen_seconds + feature_seconds + head_seconds,
        "feature_views_shared": shared,
        "feature_views_unshared": unshared,
    }
