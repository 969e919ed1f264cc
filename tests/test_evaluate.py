"""``dermsynth evaluate``: accuracy by condition x FST group, Wald and Wilson CIs, summaries."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from dermsynth.errors import DermsynthError
from dermsynth.evaluate.metrics import (
    ACCURACY_COLUMNS,
    SUMMARY_COLUMNS,
    accuracy_table,
    evaluate_predictions,
    group_gaps,
    group_summary,
    load_predictions,
    parse_groups,
    wald_interval,
    wilson_interval,
)

Z95 = 1.959963984540054  # the 97.5% standard normal quantile
CLASSES = ("neutrophilic dermatoses", "psoriasis", "squamous cell carcinoma")


def write_predictions(
    path: Path,
    rows: list[tuple[str, int, str]],
    classes: tuple[str, ...] | None = CLASSES,
) -> Path:
    """Write (label, fst, prediction) rows as a predictions CSV; p_* columns unless classes=None."""
    frame = pd.DataFrame(rows, columns=["label", "fst", "prediction"])
    frame.insert(0, "image_id", [f"img{i:04d}" for i in range(len(frame))])
    for name in classes or ():
        frame[f"p_{name}"] = (frame["prediction"] == name).astype(float)
    frame.to_csv(path, index=False)
    return path


def paper_rows() -> list[tuple[str, int, str]]:
    """The paper's example: 177 FST I-II images of neutrophilic dermatoses, 31 right (0.175)."""
    nd = "neutrophilic dermatoses"
    return [(nd, 1 + i % 2, nd if i < 31 else "psoriasis") for i in range(177)]


# --------------------------------------------------------------------------- intervals


def test_wald_matches_the_paper_example_and_the_hand_formula() -> None:
    p, n = 31 / 177, 177
    half = Z95 * math.sqrt(p * (1 - p) / n)
    low, high = wald_interval(31, 177)
    assert round(p, 3) == 0.175
    assert low == pytest.approx(p - half, abs=1e-9)
    assert high == pytest.approx(p + half, abs=1e-9)
    assert (round(low, 3), round(high, 3)) == (0.119, 0.231)
    assert (round(low, 2), round(high, 2)) == (0.12, 0.23)  # the paper's "0.175 (0.12-0.23)"


def test_wald_is_clipped_to_zero_one() -> None:
    assert wald_interval(1, 1) == (1.0, 1.0)
    assert wald_interval(0, 5) == (0.0, 0.0)
    # 4/5: 0.8 +- 1.96 * sqrt(0.8 * 0.2 / 5) = 0.449 .. 1.151, clipped above at 1.
    low, high = wald_interval(4, 5)
    assert low == pytest.approx(0.8 - Z95 * math.sqrt(0.8 * 0.2 / 5), abs=1e-9)
    assert high == 1.0


def test_wilson_matches_the_hand_formula() -> None:
    # Wilson: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n); 3 of 10 right.
    k, n = 3, 10
    p, z2 = k / n, Z95**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(centre - half, abs=1e-9)
    assert high == pytest.approx(centre + half, abs=1e-9)
    assert (round(low, 4), round(high, 4)) == (0.1078, 0.6032)
    # At 0/5 Wilson stays informative where Wald collapses to a point.
    low0, high0 = wilson_interval(0, 5)
    assert low0 == pytest.approx(0.0, abs=1e-12)
    assert high0 == pytest.approx(z2 / 5 / (1 + z2 / 5), abs=1e-9)


def test_empty_cell_gives_nan_not_a_division_error() -> None:
    assert all(math.isnan(v) for v in wald_interval(0, 0))
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


# --------------------------------------------------------------------------- tables


def test_accuracy_table_and_group_summary(tmp_path: Path) -> None:
    nd, ps, scc = CLASSES
    rows = [
        # FST 1-2: nd 2/3 right, ps 1/1 right
        (nd, 1, nd),
        (nd, 2, nd),
        (nd, 1, ps),
        (ps, 2, ps),
        # FST 3-4: nd 0/2, scc 1/2
        (nd, 3, ps),
        (nd, 4, scc),
        (scc, 3, scc),
        (scc, 4, nd),
        # unknown skin type: in no group
        (ps, -1, ps),
    ]
    preds = load_predictions(write_predictions(tmp_path / "p.csv", rows))
    groups = parse_groups("1-2,3-4,5-6")
    table = accuracy_table(preds, groups)
    assert tuple(table.columns) == ACCURACY_COLUMNS
    assert len(table) == len(CLASSES) * 3
    cell = table.set_index(["condition", "fst_group"])
    assert cell.loc[(nd, "1-2"), "n"] == 3
    assert cell.loc[(nd, "1-2"), "accuracy"] == pytest.approx(2 / 3)
    assert cell.loc[(nd, "3-4"), "accuracy"] == 0.0
    assert cell.loc[(nd, "3-4"), ["ci_low", "ci_high"]].tolist() == [0.0, 0.0]
    assert cell.loc[(ps, "1-2"), ["ci_low", "ci_high"]].tolist() == [1.0, 1.0]
    assert cell.loc[(scc, "1-2"), "n"] == 0
    assert math.isnan(cell.loc[(scc, "1-2"), "accuracy"])

    summary = group_summary(preds, groups).set_index("fst_group")
    assert list(summary.reset_index().columns) == list(SUMMARY_COLUMNS)
    assert summary.loc["1-2", "accuracy"] == pytest.approx(3 / 4)
    # Balanced accuracy = mean of the group's non-empty cells: (2/3 + 1) / 2 and (0 + 1/2) / 2.
    assert summary.loc["1-2", "balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert summary.loc["3-4", "balanced_accuracy"] == pytest.approx(0.25)
    # Macro-F1 over present conditions, 1-2: nd P=1 R=2/3 -> 0.8; ps P=1/2 R=1 -> 2/3.
    assert summary.loc["1-2", "macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    # 3-4: nd P=0 -> 0; scc P=1/2 (scc predicted twice, once right) R=1/2 -> 1/2.
    assert summary.loc["3-4", "macro_f1"] == pytest.approx(0.25)
    assert summary.loc["5-6", "n"] == 0 and math.isnan(summary.loc["5-6", "accuracy"])

    gaps = group_gaps(summary.reset_index())
    assert gaps["accuracy"]["best_group"] == "1-2"
    assert gaps["accuracy"]["worst_group"] == "3-4"
    assert gaps["accuracy"]["gap"] == pytest.approx(3 / 4 - 1 / 4)

    result = evaluate_predictions(preds, groups)
    assert result.n_unknown_fst == 1
    assert result.warnings == ["FST group 5-6 has no images: its rows show n=0 and no accuracy"]


def test_cli_csv_reproduces_the_paper_cell(tmp_path: Path, run_cli) -> None:
    path = write_predictions(tmp_path / "p.csv", paper_rows())
    result = run_cli("evaluate", path, "--format", "csv")
    assert result.code == 0, result.stderr
    table = pd.read_csv(io.StringIO(result.stdout))
    assert tuple(table.columns) == ACCURACY_COLUMNS
    row = table[(table["condition"] == "neutrophilic dermatoses") & (table["fst_group"] == "1-2")]
    assert row["n"].item() == 177 and row["correct"].item() == 31
    assert round(row["accuracy"].item(), 3) == 0.175
    assert (round(row["ci_low"].item(), 2), round(row["ci_high"].item(), 2)) == (0.12, 0.23)
    # Groups 3-4 and 5-6 have no images: n=0 rows with empty accuracy, and a warning.
    empty = table[table["fst_group"] == "5-6"]
    assert (empty["n"] == 0).all() and empty["accuracy"].isna().all()
    assert "warning: FST group 5-6 has no images" in result.stderr


def test_cli_table_json_and_out_files(tmp_path: Path, run_cli) -> None:
    nd = "neutrophilic dermatoses"
    rows = [*paper_rows(), (nd, 5, nd), (nd, 6, "psoriasis"), ("psoriasis", -1, "psoriasis")]
    path = write_predictions(tmp_path / "p.csv", rows)
    out = tmp_path / "metrics" / "acc.csv"

    table = run_cli("evaluate", path, "--out", out)
    assert table.code == 0, table.stderr
    assert "0.175" in table.stdout and "0.119-0.231" in table.stdout
    assert "gap between best and worst FST group" in table.stdout
    assert "1 image(s) of unknown FST (-1) left out" in table.stderr
    written = pd.read_csv(out)
    assert tuple(written.columns) == ACCURACY_COLUMNS
    groups = pd.read_csv(tmp_path / "metrics" / "acc_groups.csv")
    assert groups["fst_group"].tolist() == ["1-2", "3-4", "5-6", "gap"]
    assert groups.loc[3, "accuracy"] == pytest.approx(0.5 - 31 / 177)

    as_json = run_cli("evaluate", path, "--format", "json", "--groups", "1-2,5-6")
    assert as_json.code == 0, as_json.stderr
    payload = json.loads(as_json.stdout)
    assert payload["groups"] == ["1-2", "5-6"]
    assert payload["unknown_fst_left_out"] == 1
    assert payload["gap"]["accuracy"]["best_group"] == "5-6"
    cells = {(c["condition"], c["fst_group"]): c for c in payload["conditions"]}
    assert cells[("psoriasis", "1-2")]["accuracy"] is None  # n = 0 -> null


# --------------------------------------------------------------------------- bad input


def test_missing_columns_are_named(tmp_path: Path, run_cli) -> None:
    path = tmp_path / "p.csv"
    pd.DataFrame({"image_id": ["a"], "label": ["psoriasis"]}).to_csv(path, index=False)
    result = run_cli("evaluate", path)
    assert result.code == 2
    assert result.stderr.startswith("error: ")
    assert "missing column(s) fst, prediction" in result.stderr


def test_labels_unknown_to_the_model_are_named_with_lines(tmp_path: Path, run_cli) -> None:
    ps = "psoriasis"
    rows = [(ps, 1, ps), ("eczema", 2, ps), ("Psoriasis", 3, ps)]
    path = write_predictions(tmp_path / "p.csv", rows)
    result = run_cli("evaluate", path)
    assert result.code == 2
    message = result.stderr
    assert "label(s) unknown to the model" in message
    assert "'eczema' (line 3)" in message
    assert "'Psoriasis' (line 4; did you mean 'psoriasis'?)" in message

    # Without p_* columns the model's classes are the predictions it made.
    bare = write_predictions(tmp_path / "bare.csv", rows, classes=None)
    with pytest.raises(DermsynthError, match="the set of predictions"):
        load_predictions(bare)


def test_an_empty_group_warns_but_all_empty_is_an_error(tmp_path: Path, run_cli) -> None:
    path = write_predictions(tmp_path / "p.csv", [("psoriasis", 1, "psoriasis")])
    partly = run_cli("evaluate", path, "--groups", "1,6", "--format", "csv")
    assert partly.code == 0
    assert "warning: FST group 6 has no images: its rows show n=0" in partly.stderr
    nothing = run_cli("evaluate", path, "--groups", "5-6")
    assert nothing.code == 2
    assert "no image falls in any of the groups 5-6 (the file's skin types: 1)" in nothing.stderr


def test_other_bad_inputs(tmp_path: Path, run_cli) -> None:
    path = write_predictions(tmp_path / "p.csv", [("psoriasis", 1, "psoriasis")])
    overlap = run_cli("evaluate", path, "--groups", "1-3,3-4")
    assert overlap.code == 2 and "skin type 3 is in both 1-3 and 3-4" in overlap.stderr

    bad_fst = tmp_path / "fst.csv"
    pd.DataFrame(
        {"image_id": ["a", "b"], "label": ["x", "x"], "fst": ["1", "7"], "prediction": ["x", "x"]}
    ).to_csv(bad_fst, index=False)
    result = run_cli("evaluate", bad_fst)
    assert result.code == 2
    assert "fst must be 1..6 or -1 (unknown); got '7' on line 3" in result.stderr

    dup = tmp_path / "dup.csv"
    pd.DataFrame(
        {
            "image_id": ["a", "a"],
            "label": ["x", "x"],
            "fst": [1, 1],
            "prediction": ["x", "x"],
            "run": ["r1", "r2"],
        }
    ).to_csv(dup, index=False)
    result = run_cli("evaluate", dup)
    assert result.code == 2 and "several runs (column run: r1, r2)" in result.stderr

    missing = run_cli("evaluate", tmp_path / "nope.csv")
    assert missing.code == 2 and "no such file" in missing.stderr
