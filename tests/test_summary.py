"""`dermsynth data summary`: the paper's Table 1, from any table of the Fitzpatrick 17k schema."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from conftest import write_f17k_csv
from dermsynth.data.manifest import PAPER_CONDITIONS, load_manifest
from dermsynth.data.summary import fst_table, rank_extremes

# The paper's Table 1 (rows FST I..VI then Total; columns in PAPER_CONDITIONS order then Total).
PAPER_TABLE1 = """fst,basal cell carcinoma,folliculitis,nematode infection,neutrophilic dermatoses,prurigo nodularis,psoriasis,squamous cell carcinoma,total
1,85,30,15,70,7,113,100,420
2,156,97,56,115,28,232,180,864
3,112,99,79,68,39,101,122,620
4,76,51,60,51,56,91,71,456
5,24,31,32,31,29,64,40,251
6,7,9,12,15,9,21,23,96
total,460,317,254,350,168,622,536,2707
"""


def test_table1_reproduced_on_the_real_table(f17k_csv: Path, run_cli) -> None:
    start = time.perf_counter()
    result = run_cli(
        "data",
        "summary",
        "--csv",
        f17k_csv,
        "--conditions",
        ",".join(PAPER_CONDITIONS),
        "--format",
        "csv",
    )
    elapsed = time.perf_counter() - start
    assert result.code == 0, result.stderr
    assert result.stdout == PAPER_TABLE1
    assert "128 image(s) of unknown FST (-1)" in result.stderr
    assert elapsed < 5.0


def test_counts_are_computed_not_recalled(tmp_path: Path, run_cli) -> None:
    rows = [
        ("a", 1, "psoriasis"),
        ("b", 1, "psoriasis"),
        ("c", 6, "psoriasis"),
        ("d", 3, "folliculitis"),
        ("e", -1, "folliculitis"),
        ("f", 2, "acne"),
    ]
    csv = write_f17k_csv(tmp_path / "t.csv", rows)
    result = run_cli(
        "data", "summary", "--csv", csv, "--conditions", "folliculitis,psoriasis", "--format", "csv"
    )
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "fst,folliculitis,psoriasis,total",
        "1,0,2,2",
        "2,0,0,0",
        "3,1,0,1",
        "4,0,0,0",
        "5,0,0,0",
        "6,0,1,1",
        "total,1,3,4",
    ]
    assert "1 image(s) of unknown FST" in result.stderr


def test_json_and_table_formats(tmp_path: Path, run_cli) -> None:
    csv = write_f17k_csv(tmp_path / "t.csv", [("a", 5, "psoriasis"), ("b", -1, "psoriasis")])
    result = run_cli("data", "summary", "--csv", csv, "--format", "json")
    payload = json.loads(result.stdout)
    assert payload["counts"]["5"]["psoriasis"] == 1
    assert payload["counts"]["total"]["total"] == 1
    assert payload["unknown_fst"] == {"psoriasis": 1}
    table = run_cli("data", "summary", "--csv", csv)
    assert "psoriasis" in table.stdout and "unknown FST" in table.stdout


def test_centaur_column(f17k_csv: Path) -> None:
    manifest = load_manifest(f17k_csv, fst_column="fitzpatrick_centaur")
    table = fst_table(manifest, ["psoriasis"])
    raw = pd.read_csv(f17k_csv)
    psoriasis = raw[raw["label"] == "psoriasis"]
    for fst in range(1, 7):
        assert table.loc[str(fst), "psoriasis"] == (psoriasis["fitzpatrick_centaur"] == fst).sum()


def test_rank_extremes(tmp_path: Path, run_cli) -> None:
    rows = [(f"p{i}", 1 + i % 2, "psoriasis") for i in range(10)]
    rows += [(f"q{i}", 5 + i % 2, "psoriasis") for i in range(3)]
    rows += [(f"r{i}", 2, "acne") for i in range(50)]
    rows += [(f"s{i}", 6, "keloid") for i in range(4)] + [(f"t{i}", 1, "keloid") for i in range(4)]
    manifest = load_manifest(write_f17k_csv(tmp_path / "t.csv", rows))
    ranked = rank_extremes(manifest)
    assert ranked["condition"].tolist() == ["keloid", "psoriasis", "acne"]
    assert ranked["smaller_extreme"].tolist() == [4, 3, 0]
    result = run_cli(
        "data", "summary", "--csv", tmp_path / "t.csv", "--rank-extremes", "2", "--format", "csv"
    )
    assert result.stdout.splitlines()[0] == "rank,condition,fst_1-2,fst_5-6,smaller_extreme"
    assert len(result.stdout.splitlines()) == 3


def test_paper_conditions_rank_high_on_the_real_table(f17k_csv: Path) -> None:
    ranked = rank_extremes(load_manifest(f17k_csv))
    top = ranked.head(15)["condition"].tolist()
    for condition in ("psoriasis", "squamous cell carcinoma", "neutrophilic dermatoses"):
        assert condition in top


def test_bad_inputs_exit_2_with_one_line(tmp_path: Path, run_cli) -> None:
    csv = write_f17k_csv(tmp_path / "t.csv", [("a", 1, "psoriasis")])
    cases = [
        (("--csv", tmp_path / "none.csv"), "no such file"),
        (("--csv", csv, "--conditions", "psoriasiss"), "closest: 'psoriasis'"),
        (("--csv", csv, "--fst-column", "nope"), "missing column"),
        (("--csv", csv, "--format", "xml"), "--format"),
        (("--csv", csv, "--rank-extremes", "0"), "--rank-extremes"),
    ]
    for args, message in cases:
        result = run_cli("data", "summary", *args)
        assert result.code == 2, (args, result)
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr
