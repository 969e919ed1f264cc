"""``dermsynth generate --shard-size``: WebDataset shards with one JSON record per image,
resumed shard by shard; a truncated shard is detected and made again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermsynth.generate.shards import is_whole, read_sidecar, sidecar_path
from test_generate_tiny import FAST, make_seeds

wds = pytest.importorskip("webdataset")


def generate(run_cli, seeds: Path, out: Path) -> str:
    result = run_cli(
        "generate", "--seeds", seeds, "--backend", "tiny", "--n", "2", "--shard-size", "2",
        "--out", out, *FAST,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    return result.stdout


def read(tars: list[Path]) -> dict[str, tuple[np.ndarray, dict]]:
    dataset = wds.WebDataset([str(t) for t in tars], shardshuffle=False).decode("rgb8")
    return {s["__key__"]: (s["png"], s["json"]) for s in dataset}


def test_generation_writes_resumable_webdataset_shards(run_cli, tmp_path: Path) -> None:
    seeds = make_seeds(tmp_path, 3)
    out = tmp_path / "run"
    assert "made 6 image(s), 0 already there, of 6" in generate(run_cli, seeds, out)

    tars = sorted((out / "webdataset").glob("shard-*.tar"))
    assert [t.name for t in tars] == [f"shard-00000{i}.tar" for i in range(3)]  # a seed each
    assert not (out / "images").exists() and not (out / "candidates").exists()
    samples = read(tars)
    assert sorted(samples) == [f"s{i}_c0{c}" for i in range(3) for c in range(2)]
    image, record = samples["s1_c01"]
    assert image.shape == (32, 32, 3)
    assert record["parent_id"] == "s1" and record["label"] == "psoriasis" and record["fst"] == 5
    assert record["origin"] == "synthetic" and record["backend"] == "tiny"
    assert record["prompt"] and isinstance(record["random_seed"], int) and record["steps"] == 2
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert manifest["image_id"].tolist() == sorted(samples)
    assert manifest["path"].iloc[0] == "webdataset/shard-000000.tar#s0_c00.png"

    assert "made 0 image(s), 6 already there" in generate(run_cli, seeds, out)  # resumed
    # A crash (or a copy) cut shard 1 short: detected, and only that shard is made again.
    stamps = {t: t.stat().st_mtime_ns for t in tars}
    with open(tars[1], "r+b") as handle:
        handle.truncate(tars[1].stat().st_size // 2)
    assert not is_whole(tars[1])
    assert "made 2 image(s), 4 already there" in generate(run_cli, seeds, out)
    assert is_whole(tars[1], checksum=True)
    assert tars[0].stat().st_mtime_ns == stamps[tars[0]]
    again = read(tars)
    for key, (image, _) in samples.items():  # the same images (seeds derived, not drawn)
        assert np.array_equal(again[key][0], image)
    info = read_sidecar(tars[1])
    assert info is not None and info["keys"] == ["s1_c00", "s1_c01"] and info["samples"] == 2
    assert len(json.loads(sidecar_path(tars[1]).read_text())["records"]) == 2


def test_a_shard_without_its_sidecar_is_made_again(run_cli, tmp_path: Path) -> None:
    seeds = make_seeds(tmp_path, 2)
    out = tmp_path / "run"
    generate(run_cli, seeds, out)
    sidecar_path(out / "webdataset" / "shard-000000.tar").unlink()  # killed between tar and sidecar
    (out / "webdataset" / ".shard-000001.tar.x1y2.tmp").write_bytes(b"half")  # killed mid-write
    assert "made 2 image(s), 2 already there" in generate(run_cli, seeds, out)
    assert not list(out.rglob("*.tmp"))
    assert (
        run_cli(
            "generate", "--seeds", seeds, "--backend", "tiny", "--out", out, "--shard-size", "0"
        ).code
        == 2
    )
