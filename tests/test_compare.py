"""``dermsynth compare``: paired McNemar exact test and bootstrap CI of the accuracy difference."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from dermsynth.errors import DermsynthError
from dermsynth.evaluate.metrics import load_predictions, parse_groups
from dermsynth.evaluate.paired import (
    ALL_CONDITIONS,
    COMPARE_COLUMNS,
    bootstrap_difference_ci,
    compare_predictions,
    mcnemar_exact_p,
)

CLASSES = ("psoriasis", "squamous cell carcinoma")


def write_pair(
    tmp_path: Path, label: list[str], fst: list[int], pred_a: list[str], pred_b: list[str]
) -> tuple[Path, Path]:
    """Two predictions CSVs over the same images, differing only in the prediction."""
    paths = []
    for name, pred in (("a.csv", pred_a), ("b.csv", pred_b)):
        frame = pd.DataFrame(
            {
                "image_id": [f"img{i:04d}" for i in range(len(label))],
                "label": label,
                "fst": fst,
                "prediction": pred,
            }
        )
        for cls in CLASSES:
            frame[f"p_{cls}"] = (frame["prediction"] == cls).astype(float)
        frame.to_csv(tmp_path / name, index=False)
        paths.append(tmp_path / name)
    return paths[0], paths[1]


def constructed_case(tmp_path: Path) -> tuple[Path, Path]:
    """20 psoriasis images in FST 1-2: 5 both right, 1 only A, 9 only B, 5 neither."""
    ps, scc = CLASSES
    a = [ps] * 5 + [ps] * 1 + [scc] * 9 + [scc] * 5
    b = [ps] * 5 + [scc] * 1 + [ps] * 9 + [scc] * 5
    return write_pair(tmp_path, [ps] * 20, [1, 2] * 10, a, b)


def test_mcnemar_exact_matches_the_binomial_by_hand() -> None:
    a = np.array([True] * 5 + [True] + [False] * 9 + [False] * 5)
    b = np.array([True] * 5 + [False] + [True] * 9 + [False] * 5)
    # Exact two-sided McNemar: 2 * P(Binomial(b + c = 10, 1/2) <= min(b, c) = 1) = 22 / 1024.
    expected = 2 * binom.cdf(1, 10, 0.5)
    assert expected == pytest.approx(22 / 1024)
    assert mcnemar_exact_p(a, b) == pytest.approx(expected, abs=1e-12)
    assert round(mcnemar_exact_p(a, b), 4) == 0.0215
    # No discordant pair: nothing to test, p = 1; no images: NaN.
    assert mcnemar_exact_p(a, a) == 1.0
    assert math.isnan(mcnemar_exact_p(np.array([], bool), np.array([], bool)))


def test_bootstrap_ci_is_deterministic_and_covers_the_truth() -> None:
    rng = np.random.default_rng(7)
    n = 400
    # B is right whenever A is, and on 20% of the rest more: true difference 0.5 * 0.2 = 0.10.
    a = rng.random(n) < 0.5
    b = a | (rng.random(n) < 0.2)
    low, high = bootstrap_difference_ci(a, b, n_boot=2000, random_seed=0)
    assert low < 0.10 < high
    observed = b.mean() - a.mean()
    assert low < observed < high
    assert (low, high) == bootstrap_difference_ci(a, b, n_boot=2000, random_seed=0)
    # Percentiles sit on a 1/n grid, so two seeds can agree at the ends; the raw draws do not.
    few = {bootstrap_difference_ci(a, b, n_boot=20, random_seed=s) for s in range(5)}
    assert len(few) > 1
    # Close to the paired normal approximation: se = sqrt((b + c)/n - d^2) / sqrt(n).
    only_a, only_b = (a & ~b).sum(), (~a & b).sum()
    se = math.sqrt((only_a + only_b) / n - observed**2) / math.sqrt(n)
    assert low == pytest.approx(observed - 1.96 * se, abs=0.01)
    assert high == pytest.approx(observed + 1.96 * se, abs=0.01)
    none = np.array([], dtype=bool)
    assert all(math.isnan(v) for v in bootstrap_difference_ci(none, none))


def test_compare_predictions_constructed_case(tmp_path: Path) -> None:
    path_a, path_b = constructed_case(tmp_path)
    table = compare_predictions(
        load_predictions(path_a), load_predictions(path_b), parse_groups("1-2,5-6"), n_boot=500
    )
    assert tuple(table.columns) == COMPARE_COLUMNS
    cell = table.set_index(["condition", "fst_group"])
    row = cell.loc[("psoriasis", "1-2")]
    assert (row["n"], row["correct_a"], row["correct_b"]) == (20, 6, 14)
    assert (row["only_a_correct"], row["only_b_correct"], row["neither_correct"]) == (1, 9, 5)
    assert row["difference"] == pytest.approx(0.4)
    assert row["mcnemar_p"] == pytest.approx(22 / 1024)
    assert row["diff_ci_low"] <= 0.4 <= row["diff_ci_high"]
    assert cell.loc[(ALL_CONDITIONS, "1-2"), "mcnemar_p"] == pytest.approx(22 / 1024)
    empty = cell.loc[("squamous cell carcinoma", "1-2")]
    assert empty["n"] == 0 and math.isnan(empty["mcnemar_p"]) and math.isnan(empty["diff_ci_low"])


def test_cli_compare_csv_and_table(tmp_path: Path, run_cli) -> None:
    path_a, path_b = constructed_case(tmp_path)
    out = tmp_path / "cmp.csv"
    result = run_cli("compare", path_a, path_b, "--format", "csv", "--n-boot", "300", "--out", out)
    assert result.code == 0, result.stderr
    table = pd.read_csv(io.StringIO(result.stdout))
    assert tuple(table.columns) == COMPARE_COLUMNS
    row = table[(table["condition"] == "psoriasis") & (table["fst_group"] == "1-2")]
    assert row["mcnemar_p"].item() == pytest.approx(0.021484375)
    assert "warning: FST group 5-6 has no images" in result.stderr
    pd.testing.assert_frame_equal(pd.read_csv(out), table)  # same seed, same numbers

    shown = run_cli("compare", path_a, path_b, "--n-boot", "300")
    assert shown.code == 0 and "0.0215" in shown.stdout
    assert "difference = accuracy B - accuracy A" in shown.stdout


def test_compare_needs_the_same_test_images(tmp_path: Path, run_cli) -> None:
    path_a, path_b = constructed_case(tmp_path)
    frame = pd.read_csv(path_b)
    frame.iloc[:18].to_csv(path_b, index=False)  # B lost two images
    result = run_cli("compare", path_a, path_b)
    assert result.code == 2
    assert "do not cover the same test images: 2 image(s) only in a.csv" in result.stderr
    assert "img0018, img0019" in result.stderr and "0 only in b.csv" in result.stderr

    frame = pd.read_csv(path_a)
    frame.loc[0, "label"] = "squamous cell carcinoma"
    frame.to_csv(path_b, index=False)
    with pytest.raises(DermsynthError, match="1 image\\(s\\) have a different label"):
        compare_predictions(load_predictions(path_a), load_predictions(path_b), parse_groups("1-2"))


def test_compare_with_no_image_in_any_group_is_an_error(tmp_path: Path) -> None:
    path_a, path_b = constructed_case(tmp_path)
    with pytest.raises(DermsynthError, match="no test image falls in any of the groups 5-6"):
        compare_predictions(load_predictions(path_a), load_predictions(path_b), parse_groups("5-6"))
