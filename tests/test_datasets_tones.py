"""Skin-tone scales and raters: FST and Monk groupings, consensus rules, the ITA estimate from
the images as one more rater, and Cohen's kappa between raters (`dermsynth data raters`)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage.color import lab2rgb
from sklearn.metrics import cohen_kappa_score

from dermsynth.data.tones import (
    SCALES,
    consensus,
    ita_ratings,
    parse_tone_groups,
    rater_agreement,
)
from dermsynth.errors import DermsynthError
from test_datasets import write_f17k

FST, MST = SCALES["fst"], SCALES["mst"]


def _skin(path: Path, lightness: float, b_star: float) -> Path:
    """A uniform patch of skin of a given CIE-Lab L* and b* (a* = 12)."""
    lab = np.array([[[lightness, 12.0, b_star]]])
    rgb = (np.clip(lab2rgb(lab), 0, 1) * 255).round().astype(np.uint8)[0, 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), tuple(int(v) for v in rgb)).save(path)
    return path


def test_monk_and_fitzpatrick_groupings() -> None:
    assert MST.groups == ((1, 2, 3), (4, 5, 6, 7), (8, 9, 10))
    assert [MST.label(g) for g in MST.groups] == ["1-3", "4-7", "8-10"]
    assert parse_tone_groups("1-5, 6-10", MST) == [(1, 2, 3, 4, 5), (6, 7, 8, 9, 10)]
    assert parse_tone_groups(None, FST) == [(1, 2), (3, 4), (5, 6)]
    with pytest.raises(DermsynthError, match="Fitzpatrick skin type values are 1..6"):
        parse_tone_groups("1-3,4-8", FST)
    with pytest.raises(DermsynthError, match="overlaps"):
        parse_tone_groups("1-4,4-10", MST)


def test_consensus_rules() -> None:
    ratings = pd.DataFrame(
        [[1, 2, -1], [2, 2, 3], [5, -1, -1], [-1, -1, -1], [1, 3, 5]], columns=["a", "b", "c"]
    )
    assert list(consensus(ratings, "mean", FST)) == [2, 2, 5, -1, 3]  # 1.5 rounds up
    assert list(consensus(ratings, "median", FST)) == [2, 2, 5, -1, 3]
    assert list(consensus(ratings, "majority", FST)) == [-1, 2, 5, -1, -1]
    assert list(consensus(ratings, "first", FST)) == [1, 2, 5, -1, 1]
    with pytest.raises(DermsynthError, match="choose one of mean, median, majority, first"):
        consensus(ratings, "vote", FST)


def test_kappa_on_the_rows_both_raters_rated() -> None:
    # po = 3/4, pe = 1/2: kappa = 0.5; quadratic: one disagreement of one step, also 0.5
    ratings = pd.DataFrame({"a": [1, 1, 2, 2, -1], "b": [1, 2, 2, 2, 6]})
    table = rater_agreement(ratings, FST)
    row = table.iloc[0]
    assert (row["rater_a"], row["rater_b"], row["n"]) == ("a", "b", 4)
    assert row["agreement"] == pytest.approx(0.75)
    assert row["kappa"] == pytest.approx(0.5)
    assert row["kappa_quadratic"] == pytest.approx(0.5)
    # DDI-style pairs: 1 and 2 fall in one bin, so the raters agree fully there
    binned = rater_agreement(ratings, FST, bins=((1, 2), (3, 4), (5, 6)))
    assert binned.loc[0, "agreement"] == 1.0


def test_ita_rater_reads_light_and_dark_skin(tmp_path: Path) -> None:
    paths = pd.Series(
        [
            str(_skin(tmp_path / "light.png", 78.0, 14.0)),  # ITA ~ 63 deg -> I
            str(_skin(tmp_path / "dark.png", 35.0, 20.0)),  # ITA ~ -37 deg -> VI
            str(tmp_path / "absent.png"),
        ]
    )
    assert list(ita_ratings(paths)) == [1, 6, -1]


def test_data_raters_reports_kappa_with_the_ita_rater(tmp_path: Path, run_cli) -> None:
    csv = write_f17k(tmp_path)
    tones = {"a1": (78, 14), "a2": (70, 16), "a3": (60, 18), "a4": (45, 22), "a5": (35, 20)}
    for md5, (lightness, b_star) in tones.items():
        _skin(tmp_path / "images" / f"{md5}.jpg", lightness, b_star)
    out = tmp_path / "kappa.csv"
    result = run_cli(
        "data", "raters", "--csv", csv, "--dataset", "fitzpatrick17k", "--ita", "--out", out
    )
    assert result.code == 0, result.stderr
    table = pd.read_csv(out)
    assert list(table["rater_b"]) == ["fitzpatrick_centaur", "ita", "ita"]
    scale_centaur = table.iloc[0]
    # Scale AI 1,2,3,5,6,-1 vs Centaur 1,1,3,6,6,4: five rows both rated, three agree
    assert scale_centaur["n"] == 5 and scale_centaur["agreement"] == pytest.approx(0.6)
    expected = cohen_kappa_score([1, 2, 3, 5, 6], [1, 1, 3, 6, 6], labels=list(FST.values))
    assert scale_centaur["kappa"] == pytest.approx(expected)
    # no image for a6 (which Scale AI did not rate either); ITA reads I, II, III, VI, VI
    scale_ita = table.iloc[1]
    assert scale_ita["n"] == 5 and scale_ita["agreement"] == pytest.approx(0.8)
    assert table.iloc[2]["n"] == 5
    assert "kappa_quadratic" in result.stdout


def test_data_raters_needs_two_raters_of_one_scale(tmp_path: Path, run_cli) -> None:
    csv = write_f17k(tmp_path)
    result = run_cli(
        "data",
        "raters",
        "--csv",
        csv,
        "--dataset",
        "fitzpatrick17k",
        "--rater",
        "fitzpatrick_scale",
    )
    assert result.code == 2
    assert "agreement needs two or more raters of one scale" in result.stderr


def test_two_raters_without_a_consensus_rule_on_the_command_line(tmp_path: Path, run_cli) -> None:
    csv = write_f17k(tmp_path)
    args = ["data", "summary", "--csv", csv, "--rater", "fitzpatrick_scale"]
    result = run_cli(*args, "--rater", "fitzpatrick_centaur")
    assert result.code == 2 and "but no consensus rule" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_cli(*args, "--rater", "fitzpatrick_centaur", "--consensus", "majority")
    assert result.code == 0, result.stderr
    assert "majority of fitzpatrick_scale, fitzpatrick_centaur" in result.stderr


def test_data_raters_on_a_table_of_no_preset(tmp_path: Path, run_cli) -> None:
    csv = tmp_path / "mine.csv"
    csv.write_text("file,dx,monk_a,monk_b\nx1,acne,2,2\nx2,acne,9,10\nx3,wart,5,5\nx4,wart,,7\n")
    result = run_cli(
        "data",
        "raters",
        "--csv",
        csv,
        "--id-column",
        "file",
        "--label-column",
        "dx",
        "--rater",
        "monk_a",
        "--rater",
        "monk_b",
        "--scale",
        "mst",
        "--format",
        "csv",
    )
    assert result.code == 0, result.stderr
    row = pd.read_csv(io.StringIO(result.stdout)).iloc[0]
    assert (row["rater_a"], row["rater_b"], row["n"]) == ("monk_a", "monk_b", 3)
    assert row["agreement"] == pytest.approx(0.667, abs=1e-3)
