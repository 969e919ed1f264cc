"""``dermsynth report RUN``: a made-up but consistent study run in, a self-contained page out.

The run folder is what a study leaves: predictions of every finished run go through the same
collect step a study uses (metrics, evidence, findings), so the page is checked against numbers
the pipeline computed, not against numbers typed here.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermsynth.config import StudyConfig
from dermsynth.data.fst import parse_fst_group
from dermsynth.data.simulate import SIMULATED_NOTE
from dermsynth.errors import DermsynthError
from dermsynth.evaluate.metrics import evaluate_predictions
from dermsynth.report import build_report, load_run, render_report
from dermsynth.report import tables as T
from dermsynth.study import evidence
from dermsynth.study.findings import findings_table
from dermsynth.study.grid import study_grid

CONDITIONS = ["folliculitis", "psoriasis", "squamous cell carcinoma"]
AUGMENTED = ["psoriasis", "squamous cell carcinoma"]
ARMS = ["real", "real+seed", "real+seed+synthetic", "real+seed+oversample"]
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
        arms=ARMS,
        seeds_per_group=2,
        synthetic_per_seed=2,
        candidates_per_seed=4,
        doses=[2, 4],
        repeats=repeats,
        simulated=simulated,
    )


def _test_images(direction: str) -> pd.DataFrame:
    """The direction's test images: 12-20 per condition and group, the paper cell's 177.

    Few images keep the bootstrap of every cell quick; no check here depends on how many.
    """
    rows = []
    for group in TESTS[direction]:
        fsts = parse_fst_group(group)
        for k, condition in enumerate(CONDITIONS):
            n = 12 + 4 * k
            if (direction, condition, group) == (PAPER_CELL[0], PAPER_CELL[2], PAPER_CELL[3]):
                n = PAPER_CELL[5]
            rows += [
                (f"{direction}-{group}-{condition[:3]}-{i}", condition, fsts[i % len(fsts)])
                for i in range(n)
            ]
    return pd.DataFrame(rows, columns=["image_id", "label", "fst"])


def _predictions(images: pd.DataFrame, spec: object, rng: np.random.Generator) -> pd.DataFrame:
    right = rng.random(len(images)) < rng.uniform(0.3, 0.7)
    key = (spec.direction, spec.arm)  # type: ignore[attr-defined]
    if key == PAPER_CELL[:2] and spec.repeat == 0:  # type: ignore[attr-defined]
        cell = (images["label"] == PAPER_CELL[2]) & images["fst"].isin(parse_fst_group("1-2"))
        right[cell.to_numpy()] = np.arange(cell.sum()) < PAPER_CELL[4]
    wrong = [CONDITIONS[(CONDITIONS.index(c) + 1) % 3] for c in images["label"]]
    frame = images.assign(prediction=np.where(right, images["label"], wrong))
    for c in CONDITIONS:
        frame[f"p_{c}"] = np.where(frame["prediction"] == c, 0.7, 0.15)
    return frame


def make_run(root: Path, repeats: int = 2, simulated: bool = True, unfinished: str = "") -> Path:
    """A study run folder as a study leaves it, runs of arm ``unfinished`` not done."""
    config = _config(repeats, simulated)
    run = root / "run"
    (run / "results").mkdir(parents=True)
    (run / "study.json").write_text(
        json.dumps({"config": config.model_dump(mode="json"), "fingerprint": config.fingerprint()})
    )
    rng = np.random.default_rng(0)
    images = {d: _test_images(d) for d in TESTS}
    statuses, finished, accuracy, groups = [], [], [], []
    for spec in study_grid(config):
        done = spec.arm != unfinished
        keys = {"run_id": spec.run_id, **dataclasses.asdict(spec)}
        statuses.append({**keys, "status": "done" if done else "pending"})
        if not done:
            continue
        preds = _predictions(images[spec.direction], spec, rng)
        key = (spec.direction, spec.arm, spec.augmented, spec.dose)
        finished.append((key, spec.repeat, preds))
        evaluation = evaluate_predictions(
            preds, [parse_fst_group(g) for g in TESTS[spec.direction]]
        )
        accuracy.append(evaluation.table.assign(**keys))
        groups.append(evaluation.summary.assign(**keys))
    tests = {d: [parse_fst_group(g) for g in gs] for d, gs in TESTS.items()}
    table = evidence.cells(finished)
    comparisons = evidence.comparisons_table(table, CONDITIONS, tests)
    results = {
        "runs": pd.DataFrame(statuses),
        "accuracy": pd.concat(accuracy),
        "groups": pd.concat(groups),
        "summary": evidence.summary_table(table, CONDITIONS, tests),
        "comparisons": comparisons,
        "fairness": evidence.fairness_table(finished, tests),
        "findings": findings_table(comparisons, config.full_dose),
        "figure2": _figure2(run),
        "table1": pd.DataFrame(
            {
                "fst": ["1", "2", "3", "4", "5", "6", "total"],
                **{c: [10, 20, 30, 20, 8, 4, 92] for c in CONDITIONS},
                "total": [30, 60, 90, 60, 24, 12, 276],
            }
        ),
    }
    for name, frame in results.items():
        frame.to_csv(run / "results" / f"{name}.csv", index=False)
    return run


def _figure2(run: Path) -> pd.DataFrame:
    rows = []
    for direction in TESTS:
        for condition in AUGMENTED:
            for s in range(2):
                seed = f"{direction}_{condition[:4]}_{s}"
                seed_path = f"generation/{direction}/{seed}.png"
                _png(run / seed_path, (200, 140, 110))
                for rank in (1, 2):
                    synthetic = f"generation/{direction}/{seed}_c{rank}.png"
                    _png(run / synthetic, (90, 60, 40))
                    rows.append((direction, condition, seed, seed_path, synthetic, rank))
    columns = ["direction", "condition", "seed_id", "seed_path", "synthetic_path", "rank"]
    return pd.DataFrame(rows, columns=columns)


def _png(path: Path, color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 24), color).save(path)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished simulated run with two repeats, and its report."""
    run = make_run(tmp_path_factory.mktemp("finished"))
    return run, build_report(run)


def test_report_opens_with_findings_and_is_self_contained(finished) -> None:
    run, page = finished
    assert page == run / "report" / "index.html"
    text = page.read_text(encoding="utf-8")
    assert SIMULATED_NOTE in text
    assert text.index("SIMULATED DATA") < text.index("<h1>") < text.index('id="findings"')
    positions = [text.index(f'id="{anchor}"') for anchor in (
        "findings", "table1", "figure2", "table2", "arms", "figure3", "table3", "spillover",
        "comparisons", "fairness", "methods",
    )]  # fmt: skip
    assert positions == sorted(positions)
    assert "Of 24 comparisons of the synthetic arm" in text  # 2 x 2 x 2 groups x 3 other arms
    assert "hierarchical bootstrap" in text and "Holm" in text
    # Self-contained: every image inline, nothing fetched from elsewhere.
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text and "<link" not in text
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) >= 6 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "This report is incomplete" not in text


def test_csv_tables_are_the_results(finished) -> None:
    run, page = finished
    out = page.parent
    summary = load_run(run).table("summary")
    t2 = pd.read_csv(out / "table2.csv", keep_default_na=False)
    # 2 augmented conditions x 2 directions x 4 arms x 2 test groups.
    assert len(t2) == 2 * 2 * 4 * 2
    assert set(t2.loc[t2["arm"] == "real+seed+synthetic", "dose"]) == {4}
    for row in t2.itertuples():
        source = summary[
            (summary["direction"] == row.direction)
            & (summary["arm"] == row.arm)
            & (summary["condition"] == row.augmented)
            & (summary["fst_group"] == row.fst_group)
            & (summary["dose"] == row.dose)
        ]
        if row.arm != "real":
            source = source[source["augmented"] == row.augmented]
        assert len(source) == 1 and row.repeats == 2
        assert row.accuracy == pytest.approx(source["accuracy"].iloc[0])
        assert row.ci_low == pytest.approx(source["ci_low"].iloc[0])
    t3 = pd.read_csv(out / "table3.csv", keep_default_na=False)
    assert sorted(set(t3.loc[t3["arm"].isin(["real+seed", "real+seed+synthetic"]), "dose"])) == [
        0,
        2,
        4,
    ]
    spill = pd.read_csv(out / "supp_table1.csv", keep_default_na=False)
    # Every condition in every test group, for each direction x augmented condition.
    assert len(spill) == 2 * 2 * len(CONDITIONS) * 2
    assert (spill["arm_a"] == "real").all()
    comparisons = pd.read_csv(out / "comparisons.csv")
    pd.testing.assert_frame_equal(
        comparisons, pd.read_csv(run / "results" / "comparisons.csv"), check_dtype=False
    )
    table1 = pd.read_csv(out / "table1.csv", keep_default_na=False)
    assert list(table1["total"]) == [30, 60, 90, 60, 24, 12, 276]


def test_single_repeat_cells_are_the_runs_own(tmp_path: Path) -> None:
    run = make_run(tmp_path, repeats=1, simulated=False)
    report = render_report(run)
    assert "SIMULATED DATA" not in report.html
    assert "0.175 (0.12-0.23)" in report.html  # the paper's cell, as the paper computes it
    assert "one run&#39;s accuracy with its 95% Wald interval" in report.html
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
    cells = pd.DataFrame(
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
                "interval": "Wald (one run)",
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
    shown = T.table2_display(cells, "x", ["real", "real+seed", "real+seed+synthetic"])
    assert list(shown[("", "FST")]) == ["I-II", "III-IV"]
    assert ("Trained on FST V-VI", "real+seed+synthetic (+32)") in shown.columns
    assert shown[("Trained on FST V-VI", "real")].iloc[0] == "0.175 (0.12-0.23)"
    assert shown[("Trained on FST V-VI", "N")].iloc[0] == "177"


def test_unfinished_run_reports_what_is_missing(tmp_path: Path, run_cli) -> None:
    run = make_run(tmp_path, repeats=1, unfinished="real+seed+synthetic")
    (run / "results" / "fairness.csv").unlink()
    fig2 = pd.read_csv(run / "results" / "figure2.csv")
    (run / fig2["synthetic_path"].iloc[0]).unlink()

    result = run_cli("report", run, "--out", tmp_path / "out" / "page.html")
    assert result.code == 0, result.stderr
    page = Path(result.stdout.strip())
    assert page == tmp_path / "out" / "page.html"
    text = page.read_text(encoding="utf-8")
    assert "This report is incomplete" in text
    assert "results/fairness.csv is missing" in text
    runs = pd.read_csv(run / "results" / "runs.csv")
    pending = int((runs["status"] == "pending").sum())
    assert f"{pending} of {len(runs)} runs are not done (" in text
    assert "Figure 2 (psoriasis, train_1-2): 1 image(s) not found" in text
    assert "note: the run is incomplete" in result.stderr
    # What is finished is still reported: the other arms of Table 2.
    t2 = pd.read_csv(tmp_path / "out" / "table2.csv", keep_default_na=False)
    assert set(t2["arm"]) == {"real", "real+seed", "real+seed+oversample"}
    assert not (tmp_path / "out" / "fairness.csv").exists()


def test_not_a_run_folder(tmp_path: Path, run_cli) -> None:
    result = run_cli("report", tmp_path)
    assert result.code == 2
    assert "not a study run folder" in result.stderr and "study.json" in result.stderr
    with pytest.raises(DermsynthError, match="no such folder"):
        load_run(tmp_path / "nowhere")
