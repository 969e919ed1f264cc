"""The benchmark scripts a GPU session runs work end to end here, on the CPU and tiny settings
(the numbers are meaningless at this size; that they run, compare and report is the point)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )


def test_sd_generation_benchmarks_run_on_the_tiny_pipeline(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    presets = _run(
        "bench_sd_presets.py",
        "--tiny",
        "--images",
        "2",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--batch-size",
        "2",
        tmp_path=tmp_path,
    )
    assert presets.returncode == 0, presets.stderr[-2000:]
    assert "ours" in presets.stdout and "reference" in presets.stdout
    generation = _run(
        "bench_generation.py",
        "--images",
        "2",
        "--warmup",
        "1",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        tmp_path=tmp_path,
    )
    assert generation.returncode == 0, generation.stderr[-2000:]
    assert "images/s" in generation.stdout or "images_per_s" in generation.stdout


def test_feature_pass_benchmark_compares_every_variant_with_the_plain_loop(
    tmp_path: Path,
) -> None:
    out = tmp_path / "features.json"
    result = _run(
        "bench_features_cpu.py",
        "--backbones",
        "resnet18",
        "--images",
        "2",
        "--batches",
        "2",
        "--plain-batch",
        "2",
        "--repeats",
        "1",
        "--json",
        str(out),
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(out.read_text())["summary"]
    assert summary[0]["variant"].startswith("plain") and summary[0]["speedup_median"] == 1.0
    assert len(summary) >= 3
    # Same trunk, same images: every variant's features agree with the plain loop's.
    assert all(row["cos_min"] > 0.999 for row in summary)


def test_input_pipeline_benchmark_runs_both_loaders_side_by_side(tmp_path: Path) -> None:
    result = _run(
        "bench_input_pipeline.py",
        "--out",
        str(tmp_path / "bench"),
        "--scale",
        "0.02",
        "--image-size",
        "160",
        "--epochs",
        "1",
        "--repeats",
        "2",
        "--workers",
        "0",
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert [(r["repeat"], r["workers"]) for r in results["runs"]] == [(1, 0), (2, 0)]
    assert all(r["groh_img_s"] > 0 and r["ours_img_s"] > 0 for r in results["runs"])
    (summary,) = results["summary"]
    assert summary["repeats"] == 2 and summary["speedup_min"] <= summary["speedup_median"]
