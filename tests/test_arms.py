"""The arm registry: what each arm trains on, built from a constructed plan."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dermsynth.arms import ARMS, CONTROL_ARMS, PAPER_ARMS, first_by_rank, get_arm
from dermsynth.errors import DermsynthError
from dermsynth.schema import VIEW_SET, WEIGHT
from dermsynth.study.grid import RunSpec
from dermsynth.study.runner import run_manifest
from dermsynth.train.datasets import class_balanced_sampler

SEEDS = ["s1", "s2", "s3", "s4"]


def _plan() -> pd.DataFrame:
    rows = []
    for i in range(6):
        rows.append((f"ta{i}", "a", 1, "train", ""))
        rows.append((f"tb{i}", "b", 2, "train", ""))
    rows += [(s, "a", 5, "seed", "") for s in SEEDS]
    rows += [(f"x{i}", "a" if i % 2 else "b", 5, "test", "5-6") for i in range(5)]
    rows += [(f"y{i}", "b", 3, "test", "3-4") for i in range(3)]
    frame = pd.DataFrame(rows, columns=["image_id", "label", "fst", "split", "test_group"])
    return frame.assign(
        train_group="1-2",
        path=frame["image_id"] + ".png",
        origin=np.where(frame["split"] == "seed", "seed", "real"),
        parent_id="",
    )


def _pool(prefix: str, per_seed: int = 3) -> pd.DataFrame:
    rows = [
        {
            "image_id": f"{s}_{prefix}{k}",
            "path": f"{s}_{prefix}{k}.png",
            "label": "a",
            "fst": 5,
            "origin": "synthetic",
            "parent_id": s,
            "rank": k,
        }
        for s in SEEDS
        for k in range(1, per_seed + 1)
    ]
    return pd.DataFrame(rows)


def _build(arm: str, dose: int = 6, pool: pd.DataFrame | None = None) -> pd.DataFrame:
    augmented = "a" if ARMS[arm].augmented else ""
    spec = RunSpec("train_1-2", arm, augmented, dose if ARMS[arm].dosed else 0)
    if pool is None and ARMS[arm].pool is not None:
        pool = _pool(ARMS[arm].pool[:3])
    return run_manifest(_plan(), spec, pool)


def _training(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["split"] != "test"]


@pytest.mark.parametrize("arm", list(ARMS))
def test_every_arm_tests_on_the_same_rows_and_never_trains_on_them(arm: str) -> None:
    rows = _build(arm)
    plan = _plan()
    test_ids = set(plan.loc[plan["split"] == "test", "image_id"])
    assert list(rows.loc[rows["split"] == "test", "image_id"]) == list(
        plan.loc[plan["split"] == "test", "image_id"]
    )
    training = _training(rows)
    assert not test_ids & set(training["image_id"])
    assert not test_ids & set(training["parent_id"])
    assert rows["image_id"].is_unique
    assert (rows[WEIGHT] > 0).all() and rows[VIEW_SET].min() >= 0


def test_row_counts_and_weights_of_each_arm() -> None:
    n_train, n_seeds, dose = 12, 4, 6
    real = _training(_build("real"))
    assert len(real) == n_train and not (real["split"] == "seed").any()
    seed = _training(_build("real+seed"))
    assert len(seed) == n_train + n_seeds and set(
        seed.loc[seed["split"] == "seed", "image_id"]
    ) == set(SEEDS)
    for arm in ["real+seed+synthetic", *[a for a in CONTROL_ARMS if a != "real+seed+reweight"]]:
        rows = _training(_build(arm, dose))
        assert len(rows) == n_train + n_seeds + dose, arm
        assert (rows[WEIGHT] == 1.0).all(), arm
    reweight = _training(_build("real+seed+reweight", dose))
    assert len(reweight) == n_train + n_seeds
    seeds = reweight[reweight["split"] == "seed"]
    assert seeds[WEIGHT].sum() == pytest.approx(n_seeds + dose)  # the same effective count
    assert (reweight.loc[reweight["split"] == "train", WEIGHT] == 1.0).all()


def test_dosed_arms_take_every_seeds_best_first() -> None:
    rows = _training(_build("real+seed+synthetic", 6))
    added = rows[rows["origin"] == "synthetic"]
    # Rank 1 of every seed (4), then rank 2 of the first two seeds by id.
    assert list(added["image_id"]) == [
        "s1_syn1",
        "s2_syn1",
        "s3_syn1",
        "s4_syn1",
        "s1_syn2",
        "s2_syn2",
    ]
    assert list(first_by_rank(_pool("x"), 5)["parent_id"]) == ["s1", "s2", "s3", "s4", "s1"]


def test_oversampled_copies_each_get_views_of_their_own() -> None:
    rows = _training(_build("real+seed+oversample", 6))
    copies = rows[rows["image_id"].str.contains("#copy")]
    assert list(copies["parent_id"]) == ["s1", "s2", "s3", "s4", "s1", "s2"]
    assert list(copies[VIEW_SET]) == [1, 1, 1, 1, 2, 2]
    assert (rows.loc[~rows["image_id"].str.contains("#copy"), VIEW_SET] == 0).all()
    assert set(copies["path"]) <= {f"{s}.png" for s in SEEDS}


def test_a_dose_beyond_the_pool_is_refused_naming_the_run() -> None:
    with pytest.raises(DermsynthError, match=r"dose20__rep0: 20 images asked, 12 available"):
        _build("real+seed+classical", 20)


def test_reweighting_samples_like_oversampling() -> None:
    # Class 0: 8 rows, 2 of them seeds weighing 3 each (1 + 2 copies); class 1: 8 rows.
    targets = [0] * 8 + [1] * 8
    weights = np.array([1.0] * 6 + [3.0, 3.0] + [1.0] * 8)
    sampler = class_balanced_sampler(targets, 2, torch.Generator().manual_seed(0), weights)
    assert sampler.num_samples == 20
    per_row = sampler.weights.numpy()
    assert per_row[:8].sum() == pytest.approx(1.0) and per_row[8:].sum() == pytest.approx(1.0)
    assert per_row[6] == pytest.approx(3 * per_row[0])
    plain = class_balanced_sampler(targets, 2, torch.Generator().manual_seed(0))
    assert plain.num_samples == 16 and np.allclose(plain.weights.numpy(), 1 / 8)


def test_unknown_arms_are_refused_with_the_known_ones() -> None:
    with pytest.raises(
        DermsynthError, match=r"unknown arm .real\+gan.; known arms: real, real\+seed,"
    ):
        get_arm("real+gan")
    assert PAPER_ARMS == ("real", "real+seed", "real+seed+synthetic")
    assert set(CONTROL_ARMS) == {
        "real+seed+oversample",
        "real+seed+reweight",
        "real+seed+classical",
        "real+seed+tone-shift",
        "real+seed+extra-real",
        "real+seed+synthetic-random",
    }
