"""Loading tables into manifests: the schemas understood and every bad input refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import write_f17k_csv
from dermsynth.data.manifest import (
    MANIFEST_COLUMNS,
    load_manifest,
    parse_conditions,
    resolve_conditions,
    write_manifest,
)
from dermsynth.errors import DermsynthError


def test_fitzpatrick17k_table_loads_with_both_fst_columns(f17k_csv: Path) -> None:
    scale = load_manifest(f17k_csv)
    assert list(scale.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert len(scale) == 16577
    assert scale["image_id"].is_unique
    assert set(scale["fst"].unique()) == {-1, 1, 2, 3, 4, 5, 6}
    assert (scale["origin"] == "real").all()
    assert scale["path"].iloc[0].endswith(f"{scale['image_id'].iloc[0]}.jpg")
    assert "url" in scale.columns and "fitzpatrick_centaur" in scale.columns

    centaur = load_manifest(f17k_csv, fst_column="fitzpatrick_centaur")
    assert centaur.attrs["fst_column"] == "fitzpatrick_centaur"
    assert (centaur["fst"] != scale["fst"]).sum() > 1000  # the two annotator teams disagree often


def test_images_dir_sets_paths(tmp_path: Path) -> None:
    csv = write_f17k_csv(tmp_path / "t.csv", [("a1", 1, "psoriasis")])
    manifest = load_manifest(csv, images_dir=tmp_path / "imgs")
    assert manifest["path"].iloc[0] == str(tmp_path / "imgs" / "a1.jpg")


def test_generic_csv_with_named_columns(tmp_path: Path) -> None:
    csv = tmp_path / "ddi.csv"
    csv.write_text("DDI_file,disease,skin_tone,extra\nx.png,melanoma,5,a\ny.png,nevus,-1,b\n")
    manifest = load_manifest(
        csv,
        id_column="DDI_file",
        label_column="disease",
        fst_column="skin_tone",
        path_column="DDI_file",
        images_dir=tmp_path,
    )
    assert manifest["image_id"].tolist() == ["x.png", "y.png"]
    assert manifest["fst"].tolist() == [5, -1]
    assert manifest["path"].tolist() == [str(tmp_path / "x.png"), str(tmp_path / "y.png")]
    assert manifest["extra"].tolist() == ["a", "b"]


def test_manifest_round_trips(tmp_path: Path) -> None:
    csv = write_f17k_csv(tmp_path / "t.csv", [("a1", 1, "psoriasis"), ("a2", 6, "folliculitis")])
    manifest = load_manifest(csv)
    out = write_manifest(manifest, tmp_path / "m.csv")
    again = load_manifest(out)
    assert again[list(MANIFEST_COLUMNS)].equals(manifest[list(MANIFEST_COLUMNS)])
    assert again.attrs["source"] == "manifest"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [("a1", 7, "psoriasis")],
            "row 1 (line 2): fitzpatrick_scale must be 1..6 or -1 (unknown), got '7'",
        ),
        (
            [("a1", 1, "psoriasis"), ("a2", "x", "psoriasis")],
            "row 2 (line 3): fitzpatrick_scale must be 1..6 or -1",
        ),
        ([("a1", 1, "psoriasis"), ("a2", 2.5, "psoriasis")], "got '2.5'"),
        ([("a1", 1, "psoriasis"), ("a1", 2, "psoriasis")], "duplicate md5hash 'a1' in rows 1, 2"),
        ([("a1", 1, "psoriasis"), ("a2", 2, "")], "row 2 (line 3): empty label"),
        ([("", 1, "psoriasis")], "row 1 (line 2): empty md5hash"),
    ],
)
def test_bad_values_name_file_row_and_value(tmp_path: Path, rows, message: str) -> None:
    csv = write_f17k_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DermsynthError) as info:
        load_manifest(csv)
    assert message in str(info.value)
    assert str(csv) in str(info.value)


def test_missing_file_and_columns(tmp_path: Path) -> None:
    with pytest.raises(DermsynthError, match="no such file"):
        load_manifest(tmp_path / "absent.csv")
    csv = write_f17k_csv(tmp_path / "t.csv", [("a1", 1, "psoriasis")])
    with pytest.raises(
        DermsynthError, match="missing column.*'fst_type'.*FST columns of Fitzpatrick 17k"
    ):
        load_manifest(csv, fst_column="fst_type")
    other = tmp_path / "other.csv"
    other.write_text("file,dx\na,b\n")
    with pytest.raises(DermsynthError, match="--id-column, --label-column and --fst-column"):
        load_manifest(other)
    with pytest.raises(DermsynthError, match=r"missing column\(s\) 'tone'"):
        load_manifest(other, id_column="file", label_column="dx", fst_column="tone")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DermsynthError, match="empty"):
        load_manifest(empty)


def test_unknown_condition_suggests_closest() -> None:
    labels = ["psoriasis", "pustular psoriasis", "folliculitis"]
    assert resolve_conditions(["Psoriasis", " folliculitis "], labels) == [
        "psoriasis",
        "folliculitis",
    ]
    with pytest.raises(
        DermsynthError, match="unknown condition 'psoriasiss'; closest: 'psoriasis'"
    ):
        resolve_conditions(["psoriasiss"], labels)
    with pytest.raises(DermsynthError, match="given twice"):
        parse_conditions("psoriasis,Psoriasis")
