"""Near-duplicates: perceptual hashes, groups, cross-split reports, and the plan's leakage guard."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageEnhance

import dermsynth.data.dedup as dedup
from dermsynth.data.dedup import cross_split_groups, hash_images, near_duplicate_groups
from dermsynth.errors import DermsynthError

# ---------------------------------------------------------------------------- made-up images


def textured(seed: int, size: int = 128) -> Image.Image:
    """A distinct image: smooth random colour blobs (which set the hash) plus pixel noise."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC)
    noisy = np.asarray(image).astype(np.int16) + rng.integers(-20, 21, (size, size, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def save_jpeg(image: Image.Image, path: Path, quality: int = 95) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=quality)
    return path


def reencoded(path: Path, quality: int = 40) -> Image.Image:
    """The same photograph as a re-saved JPEG at another quality."""
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def resized(path: Path) -> Image.Image:
    return Image.open(path).convert("RGB").resize((116, 116), Image.Resampling.BILINEAR)


def cropped(path: Path, px: int = 2) -> Image.Image:
    """A re-framed copy: ``px`` pixels trimmed off each side, scaled back to size."""
    image = Image.open(path).convert("RGB")
    width, height = image.size
    box = (px, px, width - px, height - px)
    return image.crop(box).resize((width, height), Image.Resampling.BICUBIC)


def brighter(path: Path) -> Image.Image:
    return ImageEnhance.Brightness(Image.open(path).convert("RGB")).enhance(1.06)


def manifest_of(paths: dict[str, Path | str]) -> pd.DataFrame:
    return pd.DataFrame({"image_id": list(paths), "path": [str(p) for p in paths.values()]})


@pytest.fixture(scope="module")
def photo_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Eight distinct images, and three near-copies of a, one of b, each a different edit."""
    root = tmp_path_factory.mktemp("photos")
    paths = {c: save_jpeg(textured(k), root / f"{c}.jpg") for k, c in enumerate("abcdefgh")}
    paths["a_q40"] = save_jpeg(reencoded(paths["a"], 40), root / "a_q40.jpg", 90)
    paths["a_small"] = save_jpeg(resized(paths["a"]), root / "a_small.jpg", 90)
    paths["a_bright"] = save_jpeg(brighter(paths["a"]), root / "a_bright.jpg", 90)
    paths["b_q40"] = save_jpeg(reencoded(paths["b"], 40), root / "b_q40.jpg", 90)
    return paths


# ---------------------------------------------------------------------------- hashing


def test_hashes_are_hex_in_manifest_order_and_serial_equals_threaded(photo_set) -> None:
    manifest = manifest_of(photo_set)
    serial = hash_images(manifest, workers=1, progress=False)
    assert list(serial.columns) == ["image_id", "path", "phash"]
    assert serial["image_id"].tolist() == list(photo_set)
    assert serial["phash"].str.fullmatch(r"[0-9a-f]{16}").all()
    assert serial.attrs["skipped"] == []
    # Enough rows to go through the pool; results must come back in input order all the same.
    big = pd.concat([manifest.assign(image_id=manifest["image_id"] + f"_{k}") for k in range(3)])
    threaded = hash_images(big, workers=4, progress=False)
    assert threaded["image_id"].tolist() == big["image_id"].tolist()
    assert threaded["phash"].tolist() == serial["phash"].tolist() * 3
    assert hash_images(manifest, hash_size=16, progress=False)["phash"].str.len().eq(64).all()


def test_missing_corrupt_tiny_and_pathless_images_are_skipped(photo_set, tmp_path) -> None:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(photo_set["a"].read_bytes()[:200])
    tiny = save_jpeg(textured(99, size=16), tmp_path / "tiny.jpg")
    manifest = manifest_of(
        {
            "a": photo_set["a"],
            "gone": tmp_path / "gone.jpg",
            "corrupt": corrupt,
            "tiny": tiny,
            "nopath": "",
            "b": photo_set["b"],
        }
    )
    hashes = hash_images(manifest, progress=False)
    assert hashes["image_id"].tolist() == ["a", "b"]
    reasons = dict(hashes.attrs["skipped"])
    assert list(reasons) == ["gone", "corrupt", "tiny", "nopath"]
    assert "gone.jpg: image file not found" in reasons["gone"]
    assert "corrupt.jpg: not a readable image" in reasons["corrupt"]
    assert "smaller than the 32 px minimum side" in reasons["tiny"]
    assert "no image path" in reasons["nopath"]
    lines = dedup.skipped_lines(hashes.attrs["skipped"], "hashing", limit=2)
    assert lines[0] == "4 unreadable image(s) left out of hashing:"
    assert lines[-1] == "  ... and 2 more"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hash_size": 1}, "hash_size must be between 2 and 64, got 1"),
        ({"hash_size": 2.5}, "hash_size must be a whole number, got 2.5"),
        ({"workers": -1}, "workers must be >= 0, got -1"),
    ],
)
def test_hash_images_refuses_bad_settings(photo_set, kwargs, message) -> None:
    with pytest.raises(DermsynthError, match=message):
        hash_images(manifest_of({"a": photo_set["a"]}), progress=False, **kwargs)


def test_hash_images_refuses_bad_manifests() -> None:
    missing = r"the manifest lacks column\(s\) 'path'.*load_manifest"
    with pytest.raises(DermsynthError, match=missing):
        hash_images(pd.DataFrame({"image_id": ["a"]}), progress=False)
    twice = pd.DataFrame({"image_id": ["a", "a"], "path": ["x.jpg", "y.jpg"]})
    with pytest.raises(DermsynthError, match="duplicate image_id 'a' in the manifest"):
        hash_images(twice, progress=False)


# ---------------------------------------------------------------------------- grouping


def test_edited_copies_group_with_their_original_and_distinct_images_stay_apart(photo_set) -> None:
    hashes = hash_images(manifest_of(photo_set), progress=False)
    groups = near_duplicate_groups(hashes, threshold=4)
    assert list(groups.columns) == ["group", "image_id", "path", "phash"]
    members = groups.groupby("group")["image_id"].apply(list).to_dict()
    assert members == {"g0001": ["a", "a_bright", "a_q40", "a_small"], "g0002": ["b", "b_q40"]}
    # Threshold 0 keeps only identical hashes; distinct photographs are never within 4 bits.
    assert set(near_duplicate_groups(hashes, threshold=0)["image_id"]) < set(groups["image_id"])
    distinct = hashes[hashes["image_id"].str.len() == 1]
    assert near_duplicate_groups(distinct, threshold=4).empty


def test_groups_are_connected_components_with_ids_independent_of_row_order() -> None:
    # x~y (2 bits) and y~z (2 bits) but x, z are 4 bits apart: one group at threshold 2.
    hashes = pd.DataFrame(
        {
            "image_id": ["z", "y", "x", "far", "w", "v"],
            "phash": [
                "000000000000000f",
                "0000000000000003",
                "0000000000000000",
                "ffffffffffffffff",
                "f0f0f0f0f0f0f0f0",
                "f0f0f0f0f0f0f0f0",
            ],
        }
    )
    groups = near_duplicate_groups(hashes, threshold=2)
    assert groups["group"].tolist() == ["g0001", "g0001", "g0002", "g0002", "g0002"]
    assert groups["image_id"].tolist() == ["v", "w", "x", "y", "z"]
    assert (groups["path"] == "").all()
    shuffled = hashes.sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(near_duplicate_groups(shuffled, threshold=2), groups)


def test_twenty_thousand_hashes_group_in_seconds() -> None:
    rng = np.random.default_rng(0)
    words = rng.integers(0, 2**63, 20_000, dtype=np.uint64)
    words[1::100] = words[0:-1:100] ^ np.uint64(0b1011)  # 200 planted pairs, 3 bits apart
    words[5000:5300] = words[5000] ^ rng.integers(0, 4, 300).astype(np.uint64)  # one 300-blob
    ids = [f"i{k:05d}" for k in range(len(words))]
    hashes = pd.DataFrame({"image_id": ids, "phash": [f"{w:016x}" for w in words]})
    start = time.perf_counter()
    groups = near_duplicate_groups(hashes, threshold=3)
    assert time.perf_counter() - start < 10
    sizes = groups.groupby("group").size()
    # Three planted pairs fall inside the blob's rows and were overwritten by it.
    assert (sizes == 2).sum() == 197 and sizes.max() == 300 and len(sizes) == 198


def test_folding_edges_under_a_small_budget_keeps_the_same_groups(monkeypatch) -> None:
    # 12 random low bits: about 7% of pairs lie within 3 bits, thousands of edges in all.
    low = np.random.default_rng(2).integers(0, 2**12, 400)
    hashes = pd.DataFrame(
        {"image_id": [f"k{k:03d}" for k in range(400)], "phash": [f"{int(w):016x}" for w in low]}
    )
    expected = near_duplicate_groups(hashes, threshold=3)
    monkeypatch.setattr(dedup, "_EDGE_BUDGET", 50)
    pd.testing.assert_frame_equal(near_duplicate_groups(hashes, threshold=3), expected)
    assert expected["group"].nunique() >= 1


def test_popcount_fallback_matches_numpy(monkeypatch) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2**63, 1000, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    x[:2] = [np.uint64(0), np.uint64(2**64 - 1)]
    slow = np.array([bin(int(v)).count("1") for v in x])
    assert (dedup._popcount(x) == slow).all()
    monkeypatch.delattr(np, "bitwise_count", raising=False)  # as on numpy < 2
    assert (dedup._popcount(x) == slow).all()


def _hashes(*pairs: str) -> pd.DataFrame:
    return pd.DataFrame({"image_id": list(pairs[::2]), "phash": list(pairs[1::2])})


@pytest.mark.parametrize(
    ("hashes", "threshold", "message"),
    [
        (_hashes("a", "00ff"), -1, "threshold must be >= 0, got -1"),
        (_hashes("a", "00ff"), 16, "threshold 16 links every pair of 16-bit hashes"),
        (pd.DataFrame({"image_id": ["a"]}), 4, r"lacks column\(s\) 'phash'.*hash_images"),
        (_hashes("a", "00", "a", "01"), 1, "image 'a' appears twice in the hash table"),
        (_hashes("a", "00ff", "b", ""), 1, "image 'b' has phash '', not a hex string"),
        (_hashes("a", "00ff", "b", "zz"), 1, "image 'b' has phash 'zz', not a hex string"),
        (_hashes("a", "00ff", "b", "00ff00"), 1, r"mixes hash lengths \(4, 6 hex digits\)"),
    ],
)
def test_near_duplicate_groups_refuses_bad_input(hashes, threshold, message) -> None:
    with pytest.raises(DermsynthError, match=message):
        near_duplicate_groups(hashes, threshold=threshold)


# ---------------------------------------------------------------------------- cross-split report


def small_plan() -> pd.DataFrame:
    rows = [
        ("t1", "train", "", "psoriasis", 1),
        ("t2", "train", "", "psoriasis", 2),
        ("s1", "seed", "", "psoriasis", 5),
        ("x1", "test", "3-4", "psoriasis", 3),
        ("x2", "test", "3-4", "folliculitis", 4),
        ("y1", "test", "5-6", "psoriasis", 6),
        ("y2", "test", "5-6", "folliculitis", 5),
    ]
    plan = pd.DataFrame(rows, columns=["image_id", "split", "test_group", "label", "fst"])
    return plan.assign(path=plan["image_id"] + ".jpg")


def test_cross_split_report_keeps_only_groups_that_cross_lines() -> None:
    groups = pd.DataFrame(
        {
            "group": ["g1", "g1", "g2", "g2", "g3", "g3", "g4", "g4", "g5", "g5", "g6", "g6"],
            "image_id": ["x1", "t1", "s1", "t2", "x2", "y2", "t1", "t2", "y1", "gone", "x1", "s1"],
        }
    )
    crossing = cross_split_groups(small_plan(), groups)
    assert list(crossing.columns) == [
        "group",
        "image_id",
        "split",
        "test_group",
        "label",
        "fst",
        "path",
        "crossing",
    ]
    # g4: both train; g5: one member outside the plan. Neither crosses a line.
    assert crossing["group"].unique().tolist() == ["g1", "g2", "g3", "g6"]
    assert crossing["image_id"].tolist() == ["t1", "x1", "t2", "s1", "x2", "y2", "s1", "x1"]
    by_group = crossing.drop_duplicates("group").set_index("group")["crossing"].to_dict()
    assert by_group == {
        "g1": "train+test[3-4]",
        "g2": "train+seed",
        "g3": "test[3-4]+test[5-6]",
        "g6": "seed+test[3-4]",
    }
    assert crossing.loc[0, "path"] == "t1.jpg"
    assert cross_split_groups(small_plan(), groups.iloc[6:10]).empty


def test_cross_split_report_refuses_things_that_are_not_plans() -> None:
    groups = pd.DataFrame({"group": ["g1"], "image_id": ["t1"]})
    not_plan = r"the plan lacks column\(s\) 'split'.*dermsynth data plan"
    with pytest.raises(DermsynthError, match=not_plan):
        cross_split_groups(small_plan().drop(columns="split"), groups)
    bad = small_plan().assign(split="validation")
    with pytest.raises(DermsynthError, match=r"split value\(s\) 'validation'; expected train"):
        cross_split_groups(bad, groups)
    with pytest.raises(DermsynthError, match=r"near-duplicate table lacks column\(s\) 'group'"):
        cross_split_groups(small_plan(), groups.drop(columns="group"))


# ---------------------------------------------------------------------------- through the CLI

F17K_HEADER = [
    "md5hash",
    "fitzpatrick_scale",
    "fitzpatrick_centaur",
    "label",
    "nine_partition_label",
    "three_partition_label",
    "qc",
    "url",
    "url_alphanum",
]
AUGMENTED = "psoriasis"
OTHER = "folliculitis"
# Near-copies that the guard must keep out of the test sets: (id, FST, label, original id).
# Their hashes sit 2 bits from the originals': near, not identical.
LEAKS = [("leak3", 3, AUGMENTED, "psoriasis_f1_0"), ("leak5", 5, OTHER, "psoriasis_f2_1")]


@pytest.fixture(scope="module")
def f17k_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Fitzpatrick-17k-shaped table and its images/ folder, with two leaking near-copies."""
    root = tmp_path_factory.mktemp("f17k")
    images = root / "images"
    rows = []
    k = 0
    for label in (AUGMENTED, OTHER):
        for fst in range(1, 7):
            for n in range(4 if fst in (5, 6) and label == AUGMENTED else 2):
                image_id = f"{label}_f{fst}_{n}"
                save_jpeg(textured(1000 + k), images / f"{image_id}.jpg")
                rows.append((image_id, fst, label))
                k += 1
    for image_id, fst, label, original in LEAKS:
        save_jpeg(cropped(images / f"{original}.jpg"), images / f"{image_id}.jpg", 80)
        rows.append((image_id, fst, label))
    rows.append(("unknown_fst", -1, OTHER))  # never planned; its missing image is no matter
    with (root / "fitzpatrick17k.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(F17K_HEADER)
        for image_id, fst, label in rows:
            writer.writerow(
                [
                    image_id,
                    fst,
                    fst,
                    label,
                    "inflammatory",
                    "non-neoplastic",
                    "",
                    f"https://example.org/{image_id}.jpg",
                    f"{image_id}jpg",
                ]
            )
    return root


def plan_args(root: Path, out: Path, *extra: str) -> list[str | Path]:
    return [
        "data",
        "plan",
        "--csv",
        root / "fitzpatrick17k.csv",
        "--conditions",
        f"{AUGMENTED},{OTHER}",
        "--train-fst",
        "1,2",
        "--test-fst",
        "3,4",
        "--test-fst",
        "5,6",
        "--augment",
        AUGMENTED,
        "--seeds-per-condition",
        "2",
        *extra,
        "--out",
        out,
    ]


def test_plan_keeps_near_copies_of_train_images_out_of_test(f17k_dir, tmp_path, run_cli) -> None:
    out = tmp_path / "plan.csv"
    result = run_cli(*plan_args(f17k_dir, out))
    assert result.code == 0, result.stderr
    assert "left out 2 test image(s) near-identical to a train or seed image" in result.stdout
    plan = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert not {"leak3", "leak5"} & set(plan["image_id"])
    # Their originals train; every other test image is still there.
    assert set(plan.loc[plan["split"] == "train", "image_id"]) >= {o for *_, o in LEAKS}
    # FST 3-4: 8 (leak3 out); 5-6: 8 psoriasis - 2 seeds + 4 folliculitis (leak5 out).
    assert (plan["split"] == "test").sum() == 8 + 6 + 4
    seeds = set(plan.loc[plan["split"] == "seed", "image_id"])
    assert len(seeds) == 2 and not seeds & set(plan.loc[plan["split"] == "test", "image_id"])

    again = tmp_path / "again.csv"
    assert run_cli(*plan_args(f17k_dir, again)).code == 0
    assert again.read_bytes() == out.read_bytes()
    other = tmp_path / "other.csv"
    assert run_cli(*plan_args(f17k_dir, other, "--random-seed", "1")).code == 0
    other_plan = pd.read_csv(other, dtype=str, keep_default_na=False)
    assert set(other_plan.loc[other_plan["split"] == "seed", "image_id"]) != seeds
    assert not {"leak3", "leak5"} & set(other_plan["image_id"])


def test_plan_without_the_guard_would_have_leaked(f17k_dir, tmp_path, run_cli) -> None:
    # Threshold 0 only links identical hashes, so the re-encoded copies stay in test: the
    # guard above is what removes them (and the made-up data really holds a leak).
    out = tmp_path / "plan.csv"
    result = run_cli(*plan_args(f17k_dir, out, "--dedup-threshold", "0"))
    assert result.code == 0, result.stderr
    plan = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert set(plan.loc[plan["split"] == "test", "image_id"]) >= {"leak3", "leak5"}


def test_dedup_command_writes_groups_and_cross_split_report(f17k_dir, tmp_path, run_cli) -> None:
    unguarded = tmp_path / "plan.csv"
    assert run_cli(*plan_args(f17k_dir, unguarded, "--dedup-threshold", "0")).code == 0
    out = tmp_path / "dups.csv"
    result = run_cli(
        "data", "dedup", "--csv", f17k_dir / "fitzpatrick17k.csv", "--plan", unguarded, "--out", out
    )
    assert result.code == 0, result.stderr
    groups = pd.read_csv(out, dtype=str)
    assert groups["group"].tolist() == ["g0001"] * 2 + ["g0002"] * 2
    assert groups["image_id"].tolist() == ["leak3", "psoriasis_f1_0", "leak5", "psoriasis_f2_1"]
    assert groups.groupby("group")["phash"].nunique().eq(2).all()  # near, not identical
    summary = "2 near-duplicate group(s) (4 images) among 30 hashed image(s), 1 skipped"
    assert summary in result.stdout
    assert "1 unreadable image(s) left out of hashing" in result.stderr
    assert "unknown_fst.jpg: image file not found" in result.stderr
    crossing = pd.read_csv(tmp_path / "dups_cross_split.csv", dtype=str, keep_default_na=False)
    assert set(crossing["image_id"]) == {"psoriasis_f1_0", "leak3", "leak5", "psoriasis_f2_1"}
    assert set(crossing["crossing"]) == {"train+test[3-4]", "train+test[5-6]"}
    assert "2 group(s) cross train/seed/test lines" in result.stdout

    guarded = tmp_path / "guarded.csv"
    assert run_cli(*plan_args(f17k_dir, guarded)).code == 0
    result = run_cli(
        "data",
        "dedup",
        "--csv",
        f17k_dir / "fitzpatrick17k.csv",
        "--plan",
        guarded,
        "--out",
        tmp_path / "after.csv",
    )
    assert result.code == 0, result.stderr
    assert "0 group(s) cross train/seed/test lines" in result.stdout
    after = (tmp_path / "after_cross_split.csv").read_text()
    assert after == "group,image_id,split,test_group,label,fst,path,crossing\n"


def test_plan_reports_unreadable_images_and_still_runs(tmp_path, f17k_dir, run_cli) -> None:
    root = tmp_path / "copy"
    (root / "images").mkdir(parents=True)
    for image in (f17k_dir / "images").iterdir():
        (root / "images" / image.name).write_bytes(image.read_bytes())
    (root / "fitzpatrick17k.csv").write_bytes((f17k_dir / "fitzpatrick17k.csv").read_bytes())
    (root / "images" / "folliculitis_f4_0.jpg").write_bytes(b"not a jpeg")
    (root / "images" / "folliculitis_f4_1.jpg").unlink()
    result = run_cli(*plan_args(root, tmp_path / "plan.csv"))
    assert result.code == 0, result.stderr
    assert "1 of 30 image(s) not on disk: left out of the near-duplicate check" in result.stderr
    assert "1 unreadable image(s) left out of the near-duplicate check" in result.stderr
    assert "folliculitis_f4_0.jpg: not a readable image" in result.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--threshold", "-1"], "Invalid value for '--threshold'"),
        (["--threshold", "two"], "Invalid value for '--threshold'"),
        (["--hash-size", "1"], "Invalid value for '--hash-size'"),
        (["--hash-size", "65"], "Invalid value for '--hash-size'"),
        (["--workers", "-2"], "Invalid value for '--workers'"),
        (["--hash-size", "2"], "threshold 4 links every pair of 4-bit hashes"),
        (["--plan", "nowhere.csv"], "no such file: nowhere.csv"),
    ],
)
def test_dedup_command_refuses_bad_input(f17k_dir, tmp_path, run_cli, extra, message) -> None:
    result = run_cli(
        "data",
        "dedup",
        "--csv",
        f17k_dir / "fitzpatrick17k.csv",
        *extra,
        "--out",
        tmp_path / "dups.csv",
    )
    assert result.code == 2
    assert message in result.stderr
    assert not (tmp_path / "dups.csv").exists()


def test_dedup_command_refuses_a_table_that_is_not_a_plan(f17k_dir, tmp_path, run_cli) -> None:
    result = run_cli(
        "data",
        "dedup",
        "--csv",
        f17k_dir / "fitzpatrick17k.csv",
        "--plan",
        f17k_dir / "fitzpatrick17k.csv",
        "--out",
        tmp_path / "dups.csv",
    )
    assert result.code == 2
    assert "the plan lacks column(s) 'split', 'test_group'" in result.stderr


def test_plan_refuses_a_negative_dedup_threshold(f17k_dir, tmp_path, run_cli) -> None:
    result = run_cli(*plan_args(f17k_dir, tmp_path / "plan.csv", "--dedup-threshold", "-1"))
    assert result.code == 2
    assert "Invalid value for '--dedup-threshold'" in result.stderr
