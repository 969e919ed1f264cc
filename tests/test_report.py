"""``dermsynth report RUN``: a made-up but consistent study run in, a self-contained page out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermsynth.config import StudyConfig
from dermsynth.data.simulate import SIMULATED_NOTE
from dermsynth.errors import DermsynthError
from dermsynth.evaluate.metrics import wald_interval, wilson_interval
from dermsynth.report import build_report, load_run, render_report
from dermsynth.report import tables as T
from dermsynth.study.grid import study_grid

CONDITIONS = ["psoriasis", "squamous cell carcinoma", "folliculitis"]
AUGMENTED = ["psoriasis", "squamous cell carcinoma"]
TESTS = {"train_1-2": ["3-4", "5-6"], "train_5-6": ["1-2", "3-4"]}
# The paper's first Table 2 cell: 31 of 177 right gives "0.175 (0.12-0.23)".
PAPER_CELL = ("train_5-6", "real", "psoriasis", "1-2", 31, 177)


def _config(repeats: int, simulated: bool) -> StudyConfig:
    return StudyConfig(
        name="tiny study",
        dataset={"csv": "data.csv"},
        conditions=CONDITIONS,
        augmented=AUGMENTED,
        directions=[
            {"train": [1, 2], "test": [[3, 4], [5, 6]]},
            {"train": [5, 6], "test": [[1, 2], [3, 4]]},
        ],
        seeds_per_group=2,
        synthetic_per_seed=2,
        candidates_per_seed=4,
        doses=[2, 4],
        repeats=repeats,
        simulated=simulated,
    )


def _cell(correct: int, n: int) -> dict[str, float]:
    low, high = wald_interval(correct, n)
    wlow, whigh = wilson_interval(correct, n)
    return {
        "n": n,
        "correct": correct,
        "accuracy": correct / n,
        "ci_low": low,
        "ci_high": high,
        "wilson_low": wlow,
        "wilson_high": whigh,
    }


def make_run(root: Path, repeats: int = 2, simulated: bool = True) -> Path:
    """A study run folder as the runner leaves it: study.json, results/*.csv, seed images."""
    config = _config(repeats, simulated)
    run = root / "run"
    (run / "results").mkdir(parents=True)
    (run / "study.json").write_text(
        json.dumps({"config": config.model_dump(mode="json"), "fingerprint": config.fingerprint()})
    )
    rng = np.random.default_rng(0)
    n_of = {c: 40 + 7 * i for i, c in enumerate(CONDITIONS)}
    runs, accuracy, groups = [], [], []
    for spec in study_grid(config):
        keys = {
            "run_id": spec.run_id,
            "direction": spec.direction,
            "arm": spec.arm,
            "augmented": spec.augmented,
            "dose": spec.dose,
            "repeat": spec.repeat,
        }
        runs.append({**keys, "status": "done"})
        for group in TESTS[spec.direction]:
            total = right = 0
            for condition in CONDITIONS:
                n = n_of[condition]
                correct = int(rng.integers(5, n - 5))
                if (spec.direction, spec.arm, condition, group) == PAPER_CELL[:4]:
                    correct, n = PAPER_CELL[4], PAPER_CELL[5]
                accuracy.append(
                    {**keys, "condition": condition, "fst_group": group, **_cell(correct, n)}
                )
                total, right = total + n, right + correct
            groups.append(
                {
                    **keys,
                    "fst_group": group,
                    **_cell(right, total),
                    "balanced_accuracy": right / total,
                    "macro_f1": 0.5,
                    "n_conditions": len(CONDITIONS),
                }
            )
    paired = []
    for spec in study_grid(config):
        if spec.arm == "real":
            continue
        for group in TESTS[spec.direction]:
            for condition in [*CONDITIONS, "(all)"]:
                a, b = rng.uniform(0.2, 0.6), rng.uniform(0.3, 0.8)
                paired.append(
                    {
                        "direction": spec.direction,
                        "augmented": spec.augmented,
                        "repeat": spec.repeat,
                        "arm_a": "real",
                        "arm_b": spec.arm,
                        "dose_b": spec.dose,
                        "condition": condition,
                        "fst_group": group,
                        "n": 50,
                        "accuracy_a": a,
                        "accuracy_b": b,
                        "difference": b - a,
                        "mcnemar_p": 0.0004 if spec.repeat == 0 else 0.2,
                        "diff_ci_low": b - a - 0.1,
                        "diff_ci_high": b - a + 0.1,
                    }
                )
    table1 = pd.DataFrame(
        {
            "fst": ["1", "2", "3", "4", "5", "6", "total"],
            **{c: [10, 20, 30, 20, 8, 4, 92] for c in CONDITIONS},
            "total": [30, 60, 90, 60, 24, 12, 276],
        }
    )
    figure2 = []
    for direction in TESTS:
        for condition in AUGMENTED:
            for s in range(2):
                seed = f"{direction}_{condition[:4]}_{s}"
                seed_path = f"generation/{direction}/{seed}.png"
                _png(run / seed_path, (200, 140, 110))
                for rank in (1, 2):
                    synthetic = f"generation/{direction}/{seed}_c{rank}.png"
                    _png(run / synthetic, (90, 60, 40))
                    figure2.append(
                        {
                            "direction": direction,
                            "condition": condition,
                            "seed_id": seed,
                            "seed_path": seed_path,
                            "synthetic_path": synthetic,
                            "rank": rank,
                        }
                    )
    for name, rows in [
        ("runs", runs),
        ("accuracy", accuracy),
        ("groups", groups),
        ("paired", paired),
        ("figure2", figure2),
    ]:
        pd.DataFrame(rows).to_csv(run / "results" / f"{name}.csv", index=False)
    table1.to_csv(run / "results" / "table1.csv", index=False)
    return run


def _png(path: Path, color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 24), color).save(path)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished simulated run with two repeats, and its report."""
    run = make_run(tmp_path_factory.mktemp("finished"))
    return run, build_report(run)


def test_report_is_self_contained_with_banner_and_paper_numbers(finished) -> None:
    run, page = finished
    assert page == run / "report" / "index.html"
    text = page.read_text(encoding="utf-8")
    assert "0.175 (0.12-0.23)" in text
    assert SIMULATED_NOTE in text
    assert text.index("SIMULATED DATA") < text.index("<h1>")
    for heading in (
        "Table 1",
        "Figure 2",
        "Table 2",
        "Figure 3",
        "Table 3",
        "Supplementary Table 1",
        "Paired tests",
        "Fairness gap",
    ):
        assert heading in text
    # Self-contained: every image inline, nothing fetched from elsewhere.
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text and "<link" not in text
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) >= 5
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "This report is incomplete" not in text


def test_csv_tables_match_the_results(finished) -> None:
    run, page = finished
    out = page.parent
    for name in ("table1", "table2", "table3", "supp_table1", "paired", "gaps"):
        assert (out / f"{name}.csv").is_file(), name
    accuracy = pd.read_csv(run / "results" / "accuracy.csv", keep_default_na=False)
    t2 = pd.read_csv(out / "table2.csv", keep_default_na=False)
    # 2 augmented conditions x 2 directions x 3 arms x 2 test groups.
    assert len(t2) == 2 * 2 * 3 * 2
    assert set(t2["dose"][t2["arm"] == "real+seed+synthetic"]) == {4}
    for row in t2.itertuples():
        source = accuracy[
            (accuracy["direction"] == row.direction)
            & (accuracy["arm"] == row.arm)
            & (accuracy["condition"] == row.augmented)
            & (accuracy["fst_group"] == row.fst_group)
        ]
        if row.arm != "real":
            source = source[(source["augmented"] == row.augmented) & (source["dose"] == row.dose)]
        assert len(source) == 2 and row.repeats == 2
        assert row.accuracy == pytest.approx(source["accuracy"].mean())
        assert row.accuracy_sd == pytest.approx(source["accuracy"].std())
        assert row.n == source["n"].max()
    t3 = pd.read_csv(out / "table3.csv", keep_default_na=False)
    assert sorted(set(t3["dose"])) == [0, 2, 4]
    spill = pd.read_csv(out / "supp_table1.csv", keep_default_na=False)
    # Every condition in every test group, for each direction x augmented condition.
    assert len(spill) == 2 * 2 * len(CONDITIONS) * 2
    assert (
        spill["change"] - (spill["accuracy_synthetic"] - spill["accuracy_real"])
    ).abs().max() < 1e-12
    paired = pd.read_csv(out / "paired.csv", keep_default_na=False)
    assert set(paired["repeats"]) == {2} and set(paired["significant_repeats"]) == {1}
    gaps = pd.read_csv(out / "gaps.csv", keep_default_na=False)
    assert set(gaps["metric"]) == {"accuracy", "balanced_accuracy"}
    table1 = pd.read_csv(out / "table1.csv", keep_default_na=False)
    assert list(table1["total"]) == [30, 60, 90, 60, 24, 12, 276]


def test_single_repeat_cells_are_the_runs_own(tmp_path: Path) -> None:
    run = make_run(tmp_path, repeats=1, simulated=False)
    report = render_report(run)
    assert "SIMULATED DATA" not in report.html
    t2 = report.tables["table2"]
    accuracy = load_run(run).table("accuracy")
    real = accuracy[(accuracy["arm"] == "real") & (accuracy["condition"] == "psoriasis")]
    mine = t2[(t2["arm"] == "real") & (t2["augmented"] == "psoriasis")]
    merged = mine.merge(real, on=["direction", "fst_group"], suffixes=("", "_in"))
    assert len(merged) == 4
    for column in ("accuracy", "ci_low", "ci_high", "n"):
        assert np.allclose(merged[column], merged[f"{column}_in"])
    assert mine["accuracy_sd"].isna().all()


def test_table2_display_is_the_paper_layout() -> None:
    t2 = pd.DataFrame(
        [
            {
                "augmented": "x",
                "direction": "train_5-6",
                "arm": arm,
                "dose": dose,
                "fst_group": g,
                "n": 177,
                "repeats": 1,
                "accuracy": acc,
                "ci_low": acc - 0.055,
                "ci_high": acc + 0.056,
                "accuracy_sd": np.nan,
                "accuracy_min": acc,
                "accuracy_max": acc,
            }
            for arm, dose, acc in [
                ("real", 0, 0.175),
                ("real+seed", 0, 0.31),
                ("real+seed+synthetic", 32, 0.61),
            ]
            for g in ("1-2", "3-4")
        ]
    )
    shown = T.table2_display(t2, "x")
    assert list(shown[("", "FST")]) == ["I-II", "III-IV"]
    assert ("Trained on FST V-VI", "real+seed+synthetic (+32)") in shown.columns
    assert shown[("Trained on FST V-VI", "real")].iloc[0] == "0.175 (0.12-0.23)"
    assert shown[("Trained on FST V-VI", "N")].iloc[0] == "177"


def test_unfinished_run_reports_what_is_missing(tmp_path: Path, run_cli) -> None:
    run = make_run(tmp_path, repeats=1)
    runs = pd.read_csv(run / "results" / "runs.csv", keep_default_na=False)
    pending = runs["arm"] == "real+seed+synthetic"
    runs.loc[pending, "status"] = "pending"
    runs.to_csv(run / "results" / "runs.csv", index=False)
    (run / "results" / "paired.csv").unlink()
    fig2 = pd.read_csv(run / "results" / "figure2.csv")
    (run / fig2["synthetic_path"].iloc[0]).unlink()

    result = run_cli("report", run, "--out", tmp_path / "out" / "page.html")
    assert result.code == 0, result.stderr
    page = Path(result.stdout.strip())
    assert page == tmp_path / "out" / "page.html"
    text = page.read_text(encoding="utf-8")
    assert "This report is incomplete" in text
    assert "results/paired.csv is missing" in text
    assert f"{int(pending.sum())} of {len(runs)} runs are not done (" in text
    assert "Figure 2 (psoriasis, train_1-2): 1 image(s) not found" in text
    assert "note: the run is incomplete" in result.stderr
    # What is finished is still reported: the real and seed arms of Table 2.
    t2 = pd.read_csv(tmp_path / "out" / "table2.csv", keep_default_na=False)
    assert set(t2["arm"]) == {"real", "real+seed"}
    assert not (tmp_path / "out" / "paired.csv").exists()


def test_not_a_run_folder(tmp_path: Path, run_cli) -> None:
    result = run_cli("report", tmp_path)
    assert result.code == 2
    assert "not a study run folder" in result.stderr and "study.json" in result.stderr
    with pytest.raises(DermsynthError, match="no such folder"):
        load_run(tmp_path / "nowhere")


def test_results_of_unfinished_runs_are_left_out(tmp_path: Path) -> None:
    run = make_run(tmp_path, repeats=1)
    runs = pd.read_csv(run / "results" / "runs.csv", keep_default_na=False)
    runs.loc[runs["arm"] == "real+seed+synthetic", "status"] = "failed"
    runs.to_csv(run / "results" / "runs.csv", index=False)
    report = render_report(run)
    assert set(report.tables["paired"]["arm_b"]) == {"real+seed"}
    assert set(report.tables["gaps"]["arm"]) == {"real", "real+seed"}
    assert "real+seed+synthetic (+4)" in report.html  # the pending column, shown empty
