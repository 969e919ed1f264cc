"""The study's evidence: summaries over repeats, comparisons between arms with corrected p-values,
and the findings drawn from them by fixed rules, on predictions with a planted effect or none."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from dermsynth.study.evidence import cells, comparisons_table, summary_table
from dermsynth.study.findings import findings_table, headline, verdict

CONDITIONS = ["a", "b", "c"]
TESTS = {"train_1-2": [(3, 4), (5, 6)]}
ARMS_RUN = [
    ("real", "", 0),
    ("real+seed", "a", 0),
    ("real+seed+synthetic", "a", 32),
    ("real+seed+oversample", "a", 32),
    ("real+seed+classical", "a", 32),
]


def _images() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 240
    return pd.DataFrame(
        {
            "image_id": [f"t{i:03d}" for i in range(n)],
            "label": rng.choice(CONDITIONS, n),
            "fst": rng.choice([3, 4, 5, 6], n),
        }
    )


def _predictions(images: pd.DataFrame, accuracy: np.ndarray, seed: int) -> pd.DataFrame:
    """Each image right with its own probability; a wrong guess is another condition."""
    rng = np.random.default_rng(seed)
    right = rng.random(len(images)) < accuracy
    wrong = [CONDITIONS[(CONDITIONS.index(lbl) + 1) % 3] for lbl in images["label"]]
    prediction = np.where(right, images["label"], wrong)
    frame = images.assign(prediction=prediction)
    for c in CONDITIONS:
        frame[f"p_{c}"] = np.where(frame["prediction"] == c, 0.8, 0.1)
    return frame


def _runs(planted: bool) -> list[tuple[tuple[str, str, str, int], int, pd.DataFrame]]:
    images = _images()
    base = np.full(len(images), 0.5)
    runs = []
    for k, (arm, augmented, dose) in enumerate(ARMS_RUN):
        accuracy = base.copy()
        if planted and arm == "real+seed+synthetic":
            # The synthetic images carry the label: condition a in FST V-VI is nearly always right.
            target = (images["label"] == "a") & images["fst"].isin([5, 6])
            accuracy[target.to_numpy()] = 0.97
        for repeat in range(3):
            preds = _predictions(images, accuracy, seed=100 * k + repeat)
            runs.append((("train_1-2", arm, augmented, dose), repeat, preds))
    return runs


@pytest.fixture(scope="module")
def planted() -> tuple[pd.DataFrame, pd.DataFrame]:
    table = cells(_runs(planted=True))
    return summary_table(table, CONDITIONS, TESTS), comparisons_table(table, CONDITIONS, TESTS)


def test_a_planted_effect_is_found_after_correction(planted) -> None:
    _, comparisons = planted
    findings = findings_table(comparisons, full_dose=32)
    target = findings[(findings["kind"] == "comparison") & (findings["fst_group"] == "5-6")]
    assert set(target["arm_other"]) == {
        "real",
        "real+seed",
        "real+seed+oversample",
        "real+seed+classical",
    }
    assert (target["verdict"] == "better").all(), target[["arm_other", "p", "p_holm"]]
    other_group = findings[(findings["kind"] == "comparison") & (findings["fst_group"] == "3-4")]
    assert (other_group["verdict"] == "no significant difference").all()
    assert headline(findings)["better"] == 4 and headline(findings)["worse"] == 0
    assert all("synthetic" in s and "Holm p=" in s for s in target["sentence"])


def test_no_effect_declares_nothing_significant_after_correction() -> None:
    table = cells(_runs(planted=False))
    comparisons = comparisons_table(table, CONDITIONS, TESTS)
    assert not comparisons["significant_holm"].any()
    findings = findings_table(comparisons, full_dose=32)
    primary = findings[findings["kind"] == "comparison"]
    assert len(primary) == 8 and (primary["verdict"] == "no significant difference").all()
    assert not (findings.loc[findings["kind"] == "harm", "p_holm"] < 0.05).any()


def test_corrected_p_values_equal_statsmodels_per_family(planted) -> None:
    _, comparisons = planted
    for family, rows in comparisons.groupby("family"):
        finite = rows["p"].notna()
        _, holm, _, _ = multipletests(rows.loc[finite, "p"], method="holm")
        _, bh, _, _ = multipletests(rows.loc[finite, "p"], method="fdr_bh")
        assert np.allclose(rows.loc[finite, "p_holm"], holm), family
        assert np.allclose(rows.loc[finite, "p_bh"], bh), family
    primary = comparisons[comparisons["family"] == "primary"]
    assert set(primary["condition"]) == {"a"}
    spill = comparisons[comparisons["family"] == "spillover"]
    assert set(spill["condition"]) == {"b", "c", "(all)"}


def test_summary_intervals_say_what_they_are(planted) -> None:
    summary, _ = planted
    cell = summary[
        (summary["arm"] == "real+seed+synthetic")
        & (summary["condition"] == "a")
        & (summary["fst_group"] == "5-6")
    ].iloc[0]
    assert cell["repeats"] == 3 and cell["interval"].startswith("hierarchical bootstrap (3 repeats")
    assert cell["ci_low"] < cell["accuracy"] < cell["ci_high"] and cell["accuracy"] > 0.9
    single = summary_table(cells(_runs(False)[:1]), CONDITIONS, TESTS)
    assert (single["interval"].isin(["Wald (one run)", ""])).all()


def test_verdict_rule() -> None:
    assert verdict(0.2, 0.01) == "better" and verdict(-0.2, 0.01) == "worse"
    assert verdict(0.2, 0.2) == "no significant difference"
    assert verdict(float("nan"), 0.01) == "no significant difference"
