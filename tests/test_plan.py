"""`dermsynth data plan`: deterministic, leakage-free splits with seeds from the opposite extreme."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import write_f17k_csv
from dermsynth.data.manifest import PAPER_AUGMENTED, PAPER_CONDITIONS, load_manifest
from dermsynth.data.splits import Direction, plan_splits
from dermsynth.errors import DermsynthError

CONDITIONS = ",".join(PAPER_CONDITIONS)


def _plan_args(csv: Path, out: Path, *extra: str) -> list[str | Path]:
    args: list[str | Path] = [
        "data",
        "plan",
        "--csv",
        csv,
        "--conditions",
        CONDITIONS,
        "--train-fst",
        "1,2",
        "--test-fst",
        "3,4",
        "--test-fst",
        "5,6",
    ]
    for condition in PAPER_AUGMENTED:
        args += ["--augment", condition]
    return [*args, "--seeds-per-condition", "8", "--random-seed", "0", *extra, "--out", out]


def test_plan_on_the_real_table_matches_the_papers_test_sizes(
    f17k_csv: Path, tmp_path: Path, run_cli
) -> None:
    out = tmp_path / "plan.csv"
    result = run_cli(*_plan_args(f17k_csv, out))
    assert result.code == 0, result.stderr
    plan = pd.read_csv(out, dtype={"test_group": str})
    assert list(plan.columns[:5]) == ["image_id", "label", "fst", "split", "test_group"]
    seeds = plan[plan["split"] == "seed"]
    assert sorted(seeds["label"].value_counts().items()) == sorted((c, 8) for c in PAPER_AUGMENTED)
    assert seeds["fst"].isin([5, 6]).all()
    test = plan[plan["split"] == "test"]
    assert not set(seeds["image_id"]) & set(test["image_id"])
    # Paper Table 2, trained on FST I-II: N of the V-VI test group after removing 8 seeds.
    v_vi = test[test["test_group"] == "5-6"]["label"].value_counts()
    assert v_vi["psoriasis"] == 77 and v_vi["squamous cell carcinoma"] == 55
    iii_iv = test[test["test_group"] == "3-4"]["label"].value_counts()
    assert iii_iv["psoriasis"] == 192 and iii_iv["squamous cell carcinoma"] == 193
    assert iii_iv["neutrophilic dermatoses"] == 119
    train = plan[plan["split"] == "train"]
    assert train["fst"].isin([1, 2]).all() and len(train) == 420 + 864


def test_reverse_direction_draws_seeds_from_light_skin(f17k_csv: Path) -> None:
    manifest = load_manifest(f17k_csv)
    direction = Direction.build("5,6", ["1,2", "3,4"])
    assert direction.seed_group == (1, 2)
    plan = plan_splits(manifest, PAPER_CONDITIONS, direction, PAPER_AUGMENTED)
    seeds = plan[plan["split"] == "seed"]
    assert seeds["fst"].isin([1, 2]).all() and len(seeds) == 24
    i_ii = plan[(plan["split"] == "test") & (plan["test_group"] == "1-2")]["label"].value_counts()
    # Paper Table 2, trained on FST V-VI: N of the I-II test group.
    assert i_ii["psoriasis"] == 337 and i_ii["squamous cell carcinoma"] == 272
    assert i_ii["neutrophilic dermatoses"] == 177


def test_byte_identical_for_same_inputs_and_seed(f17k_csv: Path, tmp_path: Path, run_cli) -> None:
    outputs = []
    for name, seed in (("a.csv", "0"), ("b.csv", "0"), ("c.csv", "1")):
        args = _plan_args(f17k_csv, tmp_path / name)
        args[args.index("--random-seed") + 1] = seed
        assert run_cli(*args).code == 0
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]
    assert outputs[0] != outputs[2]


def test_seeds_of_one_condition_do_not_depend_on_other_augmented_conditions(f17k_csv: Path) -> None:
    manifest = load_manifest(f17k_csv)
    direction = Direction.build("1,2", ["3,4", "5,6"])
    alone = plan_splits(manifest, PAPER_CONDITIONS, direction, ["psoriasis"])
    together = plan_splits(manifest, PAPER_CONDITIONS, direction, PAPER_AUGMENTED)

    def seeds(plan: pd.DataFrame) -> list[str]:
        return sorted(plan[(plan["split"] == "seed") & (plan["label"] == "psoriasis")]["image_id"])

    assert seeds(alone) == seeds(together)


def test_input_row_order_does_not_change_the_plan(tmp_path: Path) -> None:
    rows = [(f"id{i:03d}", 1 + i % 6, "psoriasis" if i % 2 else "folliculitis") for i in range(120)]
    forward = load_manifest(write_f17k_csv(tmp_path / "f.csv", rows))
    backward = load_manifest(write_f17k_csv(tmp_path / "b.csv", rows[::-1]))
    direction = Direction.build("1-2", ["3-4", "5-6"])
    a = plan_splits(
        forward, ["psoriasis", "folliculitis"], direction, ["psoriasis"], seeds_per_condition=3
    )
    b = plan_splits(
        backward, ["psoriasis", "folliculitis"], direction, ["psoriasis"], seeds_per_condition=3
    )
    pd.testing.assert_frame_equal(a.drop(columns="path"), b.drop(columns="path"))


def test_unknown_fst_and_other_conditions_are_left_out(tmp_path: Path) -> None:
    rows = [("a", -1, "psoriasis"), ("b", 1, "psoriasis"), ("c", 3, "acne"), ("d", 4, "psoriasis")]
    manifest = load_manifest(write_f17k_csv(tmp_path / "t.csv", rows))
    plan = plan_splits(manifest, ["psoriasis"], Direction.build("1,2", ["3,4"]))
    assert plan["image_id"].tolist() == ["b", "d"]
    assert plan["split"].tolist() == ["train", "test"]
    assert plan["test_group"].tolist() == ["", "3-4"]


def test_too_few_seed_candidates_names_condition_and_group(tmp_path: Path, run_cli) -> None:
    rows = [(f"p{i}", 1, "psoriasis") for i in range(5)] + [
        ("q1", 5, "psoriasis"),
        ("q2", 6, "psoriasis"),
    ]
    csv = write_f17k_csv(tmp_path / "t.csv", rows)
    result = run_cli(
        "data",
        "plan",
        "--csv",
        csv,
        "--conditions",
        "psoriasis",
        "--train-fst",
        "1,2",
        "--test-fst",
        "5,6",
        "--augment",
        "psoriasis",
        "--seeds-per-condition",
        "3",
        "--out",
        tmp_path / "p.csv",
    )
    assert result.code == 2
    assert "'psoriasis' has 2 images in FST 5-6, 3 seeds asked" in result.stderr
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize(
    ("train", "tests", "seed", "message"),
    [
        ("1,2", ["2,3"], None, "shares skin type(s) 2"),
        ("3,4", ["5,6"], None, "not at an FST extreme"),
        ("1,2", ["5,6"], "2,3", "overlaps the training group"),
        ("1,7", ["5,6"], None, "skin types must be 1..6"),
        ("6-5", ["1,2"], None, "runs backwards"),
        ("1,2", [], None, "at least one test group"),
    ],
)
def test_bad_groups(train: str, tests: list[str], seed: str | None, message: str) -> None:
    with pytest.raises(DermsynthError) as info:
        Direction.build(train, tests, seed)
    assert message in str(info.value)


def test_augmented_condition_must_be_a_class(tmp_path: Path, run_cli) -> None:
    rows = [("a", 1, "psoriasis"), ("b", 5, "folliculitis")]
    csv = write_f17k_csv(tmp_path / "t.csv", rows)
    result = run_cli(
        "data",
        "plan",
        "--csv",
        csv,
        "--conditions",
        "psoriasis",
        "--train-fst",
        "1,2",
        "--test-fst",
        "5,6",
        "--augment",
        "folliculitis",
        "--out",
        tmp_path / "p.csv",
    )
    assert result.code == 2
    assert "'folliculitis' is not among the classifier's conditions" in result.stderr
    result = run_cli(
        "data",
        "plan",
        "--csv",
        csv,
        "--conditions",
        "psoriasis",
        "--train-fst",
        "1,2",
        "--test-fst",
        "5,6",
        "--augment",
        "psoriasiss",
        "--out",
        tmp_path / "p.csv",
    )
    assert result.code == 2 and "closest: 'psoriasis'" in result.stderr
