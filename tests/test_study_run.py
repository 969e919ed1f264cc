"""`dermsynth study run`: the whole protocol end to end on a tiny simulated set; resume; refusal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dermsynth.config import load_config
from dermsynth.data.manifest import PAPER_CONDITIONS, load_manifest
from dermsynth.data.simulate import simulate_dataset
from dermsynth.demo import DEMO_CONFIG
from dermsynth.errors import DermsynthError
from dermsynth.study import layout
from dermsynth.study.grid import RunSpec
from dermsynth.study.runner import StudyRunner, run_manifest

CONDITIONS = list(PAPER_CONDITIONS)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sim")
    return simulate_dataset(folder, scale=0.06, random_seed=3, image_size=96, progress=False)


def _config(folder: Path, csv: Path, **overrides: object) -> Path:
    config = {
        "name": "tiny",
        "simulated": True,
        "dataset": {"csv": str(csv)},
        "conditions": CONDITIONS,
        "augmented": ["psoriasis"],
        "directions": [{"train": [1, 2], "test": [[3, 4], [5, 6]]}],
        "seeds_per_group": 2,
        "candidates_per_seed": 3,
        "synthetic_per_seed": 2,
        "doses": [2],
        "generator": {
            "backend": "demo",
            "model": "",
            "mode": "img2img",
            "params": {"steps": 4, "strength": 0.6, "batch_size": 8},
        },
        "classifier": {
            "backbone": "colour-texture",
            "weights": "none",
            "epochs": 3,
            "image_size": 64,
            "train_views": 2,
            "batch_size": 16,
        },
    }
    config.update(overrides)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_whole_study_end_to_end_then_resume_does_nothing(
    tiny_data: Path, tmp_path: Path, run_cli
) -> None:
    config = _config(tmp_path, tiny_data)
    out = tmp_path / "run"
    result = run_cli("study", "run", config, "--out", out)
    assert result.code == 0, result.stderr
    runs = pd.read_csv(out / "results" / "runs.csv")
    # 1 direction x (real + real+seed + dose 2 + full dose 4)
    assert len(runs) == 4 and (runs["status"] == "done").all()
    accuracy = pd.read_csv(out / "results" / "accuracy.csv", dtype={"fst_group": str})
    assert set(accuracy["fst_group"]) == {"3-4", "5-6"}
    assert set(accuracy["condition"]) == set(CONDITIONS)
    plan = pd.read_csv(layout.splits_path(out, "train_1-2"))
    test_ids = set(plan[plan["split"] == "test"]["image_id"])
    seed_ids = set(plan[plan["split"] == "seed"]["image_id"])
    for run_id in runs["run_id"]:
        preds = pd.read_csv(layout.run_dir(out, run_id) / "predictions.csv")
        assert set(preds["image_id"]) == test_ids  # every arm scored on the same test rows
    synthetic_run = runs[(runs["arm"] == "real+seed+synthetic") & (runs["dose"] == 4)][
        "run_id"
    ].iloc[0]
    trained_on = pd.read_csv(layout.run_dir(out, synthetic_run) / "manifest.csv")
    assert (trained_on["origin"] == "synthetic").sum() == 4
    assert set(trained_on[trained_on["split"] == "seed"]["image_id"]) == seed_ids
    assert not test_ids & set(trained_on[trained_on["split"] != "test"]["image_id"])
    paired = pd.read_csv(out / "results" / "paired.csv")
    assert {"mcnemar_p", "diff_ci_low", "diff_ci_high"} <= set(paired.columns)
    figure2 = pd.read_csv(out / "results" / "figure2.csv")
    assert len(figure2) == 2 * 2  # two seeds, two kept each
    # Pathology was scored by the condition's real+seed model (it has seen the target skin
    # type); with one augmented condition there is nothing to tell its candidates from.
    signal = pd.read_csv(out / "results" / "selection_signal.csv", keep_default_na=False)
    assert signal["classifier"].tolist() == ["train_1-2__real_seed__psoriasis__rep0"]
    assert signal["n_intended"].tolist() == [6] and signal["auroc"].tolist() == [""]
    assert "one augmented condition only" in signal["note"].iloc[0]
    # Without a reserve, the selected images are measured against the seeds (and say so).
    quality = pd.read_csv(out / "results" / "synthetic_quality.csv")
    assert quality["pool"].tolist() == ["synthetic"] and quality["n_synthetic"].tolist() == [4]
    assert quality["reference"].tolist() == ["seeds, N=2"]

    models = sorted(out.glob("runs/*/model.pt"))
    stamps = [m.stat().st_mtime_ns for m in models]
    again = run_cli("study", "run", config, "--out", out)
    assert again.code == 0, again.stderr
    assert "training" not in again.stderr and "generating" not in again.stderr
    assert [m.stat().st_mtime_ns for m in models] == stamps

    # A reviewer rejects a kept candidate: only the runs trained on it are trained again.
    selected_csv = layout.selection_path(out, "train_1-2", "psoriasis")
    frame = pd.read_csv(selected_csv, keep_default_na=False)
    kept = frame.index[
        (frame["selected"].astype(str).str.lower() == "true") & (frame["rank"] == 2)
    ][0]
    frame.loc[kept, "reviewed"] = "rejected"
    frame.to_csv(selected_csv, index=False)
    reviewed = run_cli("study", "run", config, "--out", out)
    assert reviewed.code == 0, reviewed.stderr
    retrained = {
        m.parent.name for m, s in zip(models, stamps, strict=True) if m.stat().st_mtime_ns != s
    }
    assert retrained == {synthetic_run}  # dose 2 takes the rank-1 images of each seed
    dose4 = pd.read_csv(layout.run_dir(out, synthetic_run) / "manifest.csv")
    synthetic = set(dose4[dose4["origin"] == "synthetic"]["image_id"])
    assert (
        frame.loc[kept, "image_id"] not in synthetic and len(synthetic) == 4
    )  # next-best took its place

    report = run_cli("report", out)
    assert report.code == 0, report.stderr
    html = (out / "report" / "index.html").read_text()
    assert "simulated" in html.lower()

    # The study's manifests name its own files relative to themselves: a moved study folder
    # resumes with nothing made or trained again, and the review page still finds every image.
    for manifest in [selected_csv, *out.glob("generation/*/*/manifest.csv")]:
        paths = pd.read_csv(manifest)["path"]
        assert not paths.str.startswith("/").any() and not paths.str.contains(str(tmp_path)).any()
    run_paths = dose4[dose4["origin"] == "synthetic"]["path"]
    assert run_paths.str.startswith("../../generation/").all()
    moved = tmp_path / "moved"
    out.rename(moved)
    stamps = [(moved / m.relative_to(out)).stat().st_mtime_ns for m in models]
    resumed = run_cli("study", "run", config, "--out", moved)
    assert resumed.code == 0, resumed.stderr
    assert "training" not in resumed.stderr and "generating" not in resumed.stderr
    assert [(moved / m.relative_to(out)).stat().st_mtime_ns for m in models] == stamps
    from dermsynth.select.review_app import ManifestStore

    moved_selected = layout.selection_path(moved, "train_1-2", "psoriasis")
    state = ManifestStore(moved_selected.parent, moved_selected).state()
    images = [c["image"] for seed in state["seeds"] for c in seed["candidates"]]
    assert len(images) == 6 and all(i and i.startswith("/files/generation/") for i in images)
    assert run_cli("report", moved).code == 0

    # A run an earlier version finished names its images by absolute path: same images, so it
    # is kept (its manifest rewritten), not trained again.
    legacy = layout.run_dir(moved, synthetic_run) / "manifest.csv"
    legacy.write_text(legacy.read_text().replace("../../generation/", f"{moved}/generation/"))
    assert "/generation/" in legacy.read_text() and "../../generation/" not in legacy.read_text()
    upgraded = run_cli("study", "run", config, "--out", moved)
    assert upgraded.code == 0, upgraded.stderr
    assert "training" not in upgraded.stderr
    assert [(moved / m.relative_to(out)).stat().st_mtime_ns for m in models] == stamps
    assert "../../generation/" in legacy.read_text()


def test_a_folder_of_another_config_is_refused(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = load_config(_config(tmp_path, tiny_data, arms=["real"]))
    StudyRunner(first, out)
    other = load_config(_config(tmp_path, tiny_data, arms=["real"], random_seed=5))
    with pytest.raises(DermsynthError, match="another config"):
        StudyRunner(other, out)
    StudyRunner(other, out, force=True)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(DermsynthError, match="not a dermsynth study folder"):
        StudyRunner(first, stranger)


def test_killed_study_resumes_without_redoing_finished_runs(
    tiny_data: Path, tmp_path: Path, run_cli
) -> None:
    config = _config(tmp_path, tiny_data, arms=["real", "real+seed"], repeats=3)
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-c",
        "from dermsynth.cli import main; main()",
        "study",
        "run",
        str(config),
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 240
    while time.time() < deadline and len(list(out.glob("runs/*/done.json"))) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("runs/*/done.json")}
    assert 2 <= len(finished) < 6
    # The resume runs in this process: what is tested is the folder the killed process left.
    done = run_cli(*command[3:])
    assert done.code == 0, done.stderr
    assert "training [" in done.stderr  # the unfinished runs were trained, and said so
    for name, stamp in finished.items():
        assert (out / "runs" / name / "done.json").stat().st_mtime_ns == stamp
        assert f"] {name}" not in done.stderr
    runs = pd.read_csv(out / "results" / "runs.csv")
    assert len(runs) == 6 and (runs["status"] == "done").all()
    assert not list(out.rglob("*.tmp"))


def test_dose_rows_spread_over_seeds() -> None:
    plan = pd.DataFrame(
        {
            "image_id": ["t1", "s1", "s2", "x1"],
            "label": ["a", "a", "a", "a"],
            "fst": [1, 5, 6, 3],
            "split": ["train", "seed", "seed", "test"],
            "test_group": ["", "", "", "3-4"],
            "origin": ["real", "seed", "seed", "real"],
            "parent_id": ["", "", "", ""],
            "path": [""] * 4,
        }
    )
    selected = pd.DataFrame(
        {
            "image_id": ["s1_c00", "s1_c01", "s2_c00", "s2_c01"],
            "parent_id": ["s1", "s1", "s2", "s2"],
            "rank": [1, 2, 1, 2],
            "label": ["a"] * 4,
            "fst": [5, 5, 6, 6],
            "origin": ["synthetic"] * 4,
            "path": [""] * 4,
        }
    )
    rows = run_manifest(plan, RunSpec("train_1-2", "real+seed+synthetic", "a", 2), selected)
    assert sorted(rows[rows["origin"] == "synthetic"]["image_id"]) == ["s1_c00", "s2_c00"]
    with pytest.raises(DermsynthError, match="dose8__rep0: 8 images asked, 4 available"):
        run_manifest(plan, RunSpec("train_1-2", "real+seed+synthetic", "a", 8), selected)


def test_examples_demo_is_the_packaged_demo_config() -> None:
    examples = Path(__file__).resolve().parents[1] / "examples" / "demo.yaml"
    assert examples.read_text() == DEMO_CONFIG.read_text()
    config = load_config(examples)
    assert config.simulated and config.generator.backend == "demo"


def test_full_disk_mid_study_leaves_nothing_corrupt_and_resumes(
    tiny_data: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import dermsynth.train.run as train_module

    config = _config(tmp_path, tiny_data, arms=["real", "real+seed"], repeats=2)
    out = tmp_path / "run"
    real_write = train_module.atomic_write_csv
    calls = {"n": 0}

    def filling_disk(path, frame):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 7:  # the first epoch of the third run (3 epochs a run)
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, frame)

    monkeypatch.setattr(train_module, "atomic_write_csv", filling_disk)
    full = run_cli("study", "run", config, "--out", out)
    assert full.code == 1
    assert "no space left on device" in full.stderr and "run the same command again" in full.stderr
    assert not list(out.rglob("*.tmp"))
    finished = {p.parent.name for p in out.glob("runs/*/done.json")}
    assert 1 <= len(finished) < 4
    monkeypatch.setattr(train_module, "atomic_write_csv", real_write)
    resumed = run_cli("study", "run", config, "--out", out)
    assert resumed.code == 0, resumed.stderr
    runs = pd.read_csv(out / "results" / "runs.csv")
    assert len(runs) == 4 and (runs["status"] == "done").all()


def test_ray_executor_trains_the_grid(tiny_data: Path, tmp_path: Path, run_cli, local_ray) -> None:
    config = _config(
        tmp_path,
        tiny_data,
        arms=["real", "real+seed"],
        executor={"kind": "ray", "workers": 2},
    )
    out = tmp_path / "run"
    result = run_cli("study", "run", config, "--out", out)
    assert result.code == 0, result.stderr
    assert "on Ray" in result.stderr
    runs = pd.read_csv(out / "results" / "runs.csv")
    assert len(runs) == 2 and (runs["status"] == "done").all()


def test_demo_refuses_a_folder_of_other_files(tmp_path: Path, run_cli) -> None:
    (tmp_path / "thesis.tex").write_text("mine")
    result = run_cli("demo", "--out", tmp_path)
    assert result.code == 2
    assert "holds other files (thesis.tex)" in result.stderr
    assert not (tmp_path / "data").exists()
    (tmp_path / "thesis.tex").unlink()
    (tmp_path / "file").write_text("x")
    assert run_cli("demo", "--out", tmp_path / "file").code == 2


def test_a_rerun_clears_what_a_killed_writer_left(tiny_data: Path, tmp_path: Path, run_cli) -> None:
    config = _config(tmp_path, tiny_data, arms=["real"])
    out = tmp_path / "run"
    assert run_cli("study", "run", config, "--out", out).code == 0
    run = layout.run_dir(out, RunSpec("train_1-2", "real").run_id)
    leftovers = [
        run / ".last.pt.k2j3x.tmp",
        layout.cache_dir(out) / "features" / ".f00d.npy.q1w2e3.tmp",
        layout.results_dir(out) / ".accuracy.csv.zz11.tmp",
    ]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half-written")
    again = run_cli("study", "run", config, "--out", out)
    assert again.code == 0, again.stderr
    assert "training" not in again.stderr
    assert not list(out.rglob("*.tmp"))


HOLD_LOCK = """
import sys, time
from dermsynth.io import FolderLock
lock = FolderLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_study_writer_is_refused_naming_the_first(
    tiny_data: Path, tmp_path: Path, run_cli
) -> None:
    config = _config(tmp_path, tiny_data, arms=["real"])
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        refused = run_cli("study", "run", config, "--out", out)
        assert refused.code == 2
        assert f"in use by another dermsynth process {holder.pid}" in refused.stderr
        assert not (out / "runs").exists()
    finally:
        holder.kill()
        holder.wait()
    # The first writer is gone (killed): its lock is taken over.
    assert run_cli("study", "run", config, "--out", out).code == 0


def test_every_control_arm_runs_and_the_evidence_is_written(
    tiny_data: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, run_cli
) -> None:
    reserve = simulate_dataset(
        tmp_path_factory.mktemp("reserve"),
        scale=0.12,
        random_seed=11,
        image_size=96,
        progress=False,
    )
    from dermsynth.arms import ARM_NAMES

    config = _config(
        tmp_path,
        tiny_data,
        arms=list(ARM_NAMES),
        doses=[2],
        dataset={"csv": str(tiny_data), "reserve": str(reserve)},
    )
    planned = run_cli("study", "plan", config)
    assert planned.code == 0, planned.stderr
    assert "real+seed+extra-real" in planned.stdout and "skipped" not in planned.stdout
    out = tmp_path / "run"
    result = run_cli("study", "run", config, "--out", out)
    assert result.code == 0, result.stderr
    runs = pd.read_csv(out / "results" / "runs.csv")
    assert (runs["status"] == "done").all()
    # real, real+seed, synthetic at doses 2 and 4, and each control at the full dose (4).
    assert sorted(runs["arm"].value_counts().items()) == sorted(
        {"real": 1, "real+seed": 1, "real+seed+synthetic": 2}.items()
        | {a: 1 for a in ARM_NAMES if a not in ("real", "real+seed", "real+seed+synthetic")}.items()
    )
    plan = pd.read_csv(layout.splits_path(out, "train_1-2"))
    tests = set(plan.loc[plan["split"] == "test", "image_id"])
    for run_id in runs["run_id"]:
        trained = pd.read_csv(layout.run_dir(out, run_id) / "manifest.csv")
        training = trained[trained["split"] != "test"]
        assert not tests & set(training["image_id"]), run_id
    tone = pd.read_csv(out / "controls" / "train_1-2" / "psoriasis" / "tone-shift" / "manifest.csv")
    assert len(tone) >= 4 and tone["fst_estimated"].isin([5, 6]).all()
    # Read as every stage reads a manifest: its paths (stored relative to it) resolved.
    classical = load_manifest(
        out / "controls" / "train_1-2" / "psoriasis" / "classical" / "manifest.csv"
    )
    assert len(classical) >= 4 and all(Path(p).is_file() for p in classical["path"])
    comparisons = pd.read_csv(out / "results" / "comparisons.csv")
    compared = set(comparisons.loc[comparisons["dose_b"] == 4, "arm_a"])
    assert compared == set(ARM_NAMES) - {"real+seed+synthetic"}
    findings = pd.read_csv(out / "results" / "findings.csv")
    assert set(findings["kind"]) >= {"comparison", "ceiling"}
    assert (out / "results" / "findings.json").is_file()
    quality = pd.read_csv(out / "results" / "synthetic_quality.csv")
    # Every pool an arm adds, measured at the full dose against held-out reserve images.
    assert sorted(quality["pool"]) == sorted(
        ["synthetic", "synthetic-random", "classical", "tone-shift", "extra-real"]
    )
    assert (quality["n_synthetic"] == 4).all() and (quality["fst_group"] == "5-6").all()
    assert quality["reference"].str.startswith("reserve (held out)").all()
    assert quality["n_real"].min() >= 1
    # The distance to a seed is measured for the pools made from seeds, and only for them
    # (tone-shifted images come from the training group, extra real images from the reserve).
    by_pool = quality.set_index("pool")
    seeded = by_pool.index[by_pool["nn_seed_median"].notna()]
    assert set(seeded) == {"synthetic", "synthetic-random", "classical"}
    assert (by_pool.loc[list(seeded), "nn_seed_median"] > 0).all()
    report = run_cli("report", out)
    assert report.code == 0, report.stderr
    html = (out / "report" / "index.html").read_text()
    assert html.index('id="findings"') < html.index('id="table1"')
    assert 'id="quality"' in html and "Copy rate" in html
    for arm in ARM_NAMES:
        assert arm in html


def test_extra_real_without_a_reserve_is_skipped_with_the_reason(
    tiny_data: Path, tmp_path: Path, run_cli
) -> None:
    config = _config(tmp_path, tiny_data, arms=["real", "real+seed", "real+seed+extra-real"])
    planned = run_cli("study", "plan", config)
    assert planned.code == 0, planned.stderr
    assert "skipped: real+seed+extra-real: no real images are set aside for it" in planned.stdout
    bad = _config(tmp_path, tiny_data, arms=["real", "real+gan"])
    refused = run_cli("study", "plan", bad)
    assert refused.code == 2 and "unknown arm(s) ['real+gan']; known arms: real," in refused.stderr


def test_tone_shift_reuses_a_source_only_towards_another_seeds_tone() -> None:
    import numpy as np

    from dermsynth.study.pools import _tone_shift_pairs

    for n_sources, n_seeds in ((3, 4), (24, 8), (8, 8), (5, 2)):
        pairs = _tone_shift_pairs(n_sources, n_seeds, np.random.default_rng(0))
        # every (source, seed tone) once, also when the counts share a factor
        assert len(pairs) == len(set(pairs)) == n_sources * n_seeds
    pairs = _tone_shift_pairs(3, 4, np.random.default_rng(0))
    first_round = pairs[:3]
    assert sorted(s for s, _ in first_round) == [0, 1, 2]  # every source before any repeat
    assert [t for _, t in first_round] == [0, 1, 2]  # seeds' tones in turn
