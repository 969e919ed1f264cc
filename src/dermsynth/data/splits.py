"""Train / seed / test splits of one direction, and the seed images drawn for augmentation.

A direction trains on one FST group and tests on others (paper: train I-II, test III-IV and
V-VI; or train V-VI, test I-II and III-IV). For each augmented condition, seed images are drawn
at random from the group at the opposite FST extreme; seeds never enter a test set, so every
arm of a direction (real, real+seed, real+seed+synthetic) is scored on the same test rows.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dermsynth.data.fst import FSTGroup, group_label, opposite_extreme, parse_fst_group
from dermsynth.data.manifest import known_fst, resolve_conditions
from dermsynth.errors import DermsynthError
from dermsynth.schema import PLAN_COLUMNS, SEED, SPLITS, TEST, TRAIN


@dataclass(frozen=True)
class Direction:
    """Train on ``train``; test on each group of ``tests``; draw seeds from ``seed_group``."""

    train: FSTGroup
    tests: tuple[FSTGroup, ...]
    seed_group: FSTGroup

    @classmethod
    def build(
        cls,
        train: str | Sequence[int],
        tests: Sequence[str | Sequence[int]],
        seed_group: str | Sequence[int] | None = None,
    ) -> Direction:
        """Parse and check the groups: no skin type may sit in two roles."""
        train_g = parse_fst_group(train, option="--train-fst")
        if not tests:
            raise DermsynthError("give at least one test group (--test-fst 3,4)")
        test_gs = tuple(parse_fst_group(t, option="--test-fst") for t in tests)
        seed_g = (
            parse_fst_group(seed_group, option="--seed-fst")
            if seed_group is not None
            else opposite_extreme(train_g)
        )
        seen = set(train_g)
        for group in test_gs:
            clash = seen & set(group)
            if clash:
                raise DermsynthError(
                    f"test group {group_label(group)} shares skin type(s) "
                    f"{', '.join(map(str, sorted(clash)))} with the training group or another "
                    "test group; groups of one direction must not overlap"
                )
            seen |= set(group)
        if set(seed_g) & set(train_g):
            raise DermsynthError(
                f"seed group {group_label(seed_g)} overlaps the training group "
                f"{group_label(train_g)}; seeds must come from skin types the model is not trained on"
            )
        return cls(train_g, test_gs, seed_g)

    @property
    def name(self) -> str:
        """E.g. ``train_1-2``."""
        return f"train_{group_label(self.train)}"


def _seed_rng(random_seed: int, condition: str) -> np.random.Generator:
    # One stream per condition, so adding an augmented condition never changes another's seeds.
    return np.random.default_rng([int(random_seed), zlib.crc32(condition.encode("utf-8"))])


def draw_seeds(
    candidates: pd.DataFrame, condition: str, group: FSTGroup, n: int, random_seed: int
) -> list[str]:
    """Draw ``n`` image ids of ``condition`` at random from ``candidates`` (already in ``group``)."""
    ids = sorted(candidates.loc[candidates["label"] == condition, "image_id"])
    if len(ids) < n:
        raise DermsynthError(
            f"too few seed candidates: {condition!r} has {len(ids)} images in FST "
            f"{group_label(group)}, {n} seeds asked; lower --seeds-per-condition or choose "
            "another condition or seed group"
        )
    picks = _seed_rng(random_seed, condition).choice(len(ids), size=n, replace=False)
    return sorted(ids[i] for i in picks)


def plan_splits(
    manifest: pd.DataFrame,
    conditions: Sequence[str],
    direction: Direction,
    augment: Sequence[str] = (),
    *,
    seeds_per_condition: int = 8,
    random_seed: int = 0,
    near_duplicate_groups: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Assign each image of ``conditions`` to ``train``, ``seed`` or ``test`` for one direction.

    Images outside the direction's groups, and of unknown FST, are left out. With
    ``near_duplicate_groups`` (columns ``image_id``, ``group``; see :mod:`dermsynth.data.dedup`),
    a test image near-identical to a train or seed image is removed from the test set; the
    removed ids are in ``plan.attrs["leakage_removed"]``.
    """
    if seeds_per_condition < 1 and augment:
        raise DermsynthError(f"--seeds-per-condition must be >= 1, got {seeds_per_condition}")
    labels = manifest["label"].unique()
    conditions = resolve_conditions(conditions, labels)
    augment = resolve_conditions(augment, labels)
    outside = [c for c in augment if c not in conditions]
    if outside:
        raise DermsynthError(
            f"augmented condition {outside[0]!r} is not among the classifier's conditions "
            f"({', '.join(conditions)}); add it to --conditions"
        )
    rows = known_fst(manifest)
    rows = rows[rows["label"].isin(conditions)]

    seed_pool = rows[rows["fst"].isin(direction.seed_group)]
    seed_ids: set[str] = set()
    for condition in augment:
        seed_ids.update(
            draw_seeds(seed_pool, condition, direction.seed_group, seeds_per_condition, random_seed)
        )

    split = pd.Series("", index=rows.index, dtype=object)
    test_group = pd.Series("", index=rows.index, dtype=object)
    split[rows["fst"].isin(direction.train)] = TRAIN
    for group in direction.tests:
        in_group = rows["fst"].isin(group)
        split[in_group] = TEST
        test_group[in_group] = group_label(group)
    is_seed = rows["image_id"].isin(seed_ids)
    split[is_seed] = SEED
    test_group[is_seed] = ""

    plan = rows.assign(split=split, test_group=test_group)
    plan = plan[plan["split"] != ""].copy()
    plan["train_group"] = group_label(direction.train)
    plan.loc[plan["split"] == SEED, "origin"] = SEED

    removed: list[str] = []
    if near_duplicate_groups is not None and not near_duplicate_groups.empty:
        removed = _leaking_test_ids(plan, near_duplicate_groups)
        plan = plan[~plan["image_id"].isin(removed)]

    order = {s: i for i, s in enumerate(SPLITS)}
    plan = plan.assign(_order=plan["split"].map(order))
    plan = plan.sort_values(["_order", "test_group", "label", "image_id"], kind="stable")
    extra = [c for c in plan.columns if c not in PLAN_COLUMNS and c != "_order"]
    plan = plan[list(PLAN_COLUMNS) + extra].reset_index(drop=True)
    plan.attrs["leakage_removed"] = removed
    plan.attrs["direction"] = direction
    return plan


def _leaking_test_ids(plan: pd.DataFrame, groups: pd.DataFrame) -> list[str]:
    split_of = dict(zip(plan["image_id"], plan["split"], strict=True))
    members = groups[groups["image_id"].isin(split_of)]
    leaking: list[str] = []
    for _, group in members.groupby("group", sort=True):
        splits = {split_of[i] for i in group["image_id"]}
        if TEST in splits and splits & {TRAIN, SEED}:
            leaking.extend(i for i in group["image_id"] if split_of[i] == TEST)
    return sorted(leaking)
