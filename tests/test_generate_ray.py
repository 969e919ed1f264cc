"""`--executor ray`: seeds sharded over local Ray workers (2 CPUs), manifests merged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermsynth.data.manifest import load_manifest

pytest.importorskip("ray")


@pytest.mark.slow
def test_ray_shards_seeds_and_merges_the_manifests(tmp_path, run_cli, local_ray):
    rows = []
    for i in range(3):
        path = tmp_path / f"s{i}.png"
        Image.fromarray((np.random.default_rng(i).random((40, 40, 3)) * 255).astype("uint8")).save(
            path
        )
        rows.append({"image_id": f"s{i}", "path": str(path), "label": "psoriasis", "fst": 5})
    pd.DataFrame(rows).to_csv(tmp_path / "seeds.csv", index=False)
    out = tmp_path / "run"
    args = [
        "generate",
        "--seeds",
        tmp_path / "seeds.csv",
        "--backend",
        "tiny",
        "--n",
        "2",
        "--steps",
        "2",
        "--resolution",
        "32",
        "--out",
        out,
        "--no-progress",
    ]
    result = run_cli(*args, "--executor", "ray", "--workers", "2")
    assert result.code == 0, result.stderr
    assert "made 6 image(s)" in result.stdout
    manifest = load_manifest(out / "manifest.csv")
    assert list(manifest["image_id"]) == [f"s{i}_c0{k}" for i in range(3) for k in range(2)]
    assert sorted(p.name for p in (out / "shards").glob("*.csv")) == [
        "manifest_0.csv",
        "manifest_1.csv",
    ]

    # The shards used the random seeds a local run uses, so they make the same images (up to
    # float rounding: shards batch fewer images and run on one thread each).
    local = tmp_path / "local"
    assert run_cli(*args[:-3], "--out", local, "--no-progress").code == 0
    local_manifest = load_manifest(local / "manifest.csv")
    assert list(local_manifest["random_seed"]) == list(manifest["random_seed"])
    for image_id in manifest["image_id"]:
        a = np.asarray(Image.open(out / "images" / f"{image_id}.png"), dtype=int)
        b = np.asarray(Image.open(local / "images" / f"{image_id}.png"), dtype=int)
        assert np.abs(a - b).max() <= 3, image_id
