"""Dataset presets: each published schema loads from a small fixture table (no real rows) with
the right counts per skin-tone group; a table of another schema is refused in one line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from dermsynth.config import DatasetConfig, load_config
from dermsynth.data.presets import PRESET_NAMES, PRESETS, top_weighted_label
from dermsynth.data.summary import tone_table
from dermsynth.data.tones import SCALES, group_counts
from dermsynth.errors import DermsynthError

# -- fixture tables in each published schema ------------------------------------------------------

F17K_HEADER = (
    "md5hash,fitzpatrick_scale,fitzpatrick_centaur,label,nine_partition_label,"
    "three_partition_label,qc,url,url_alphanum"
)
DDI_HEADER = ",DDI_ID,DDI_file,skin_tone,malignant,disease"
PAD_HEADER = (
    "patient_id,lesion_id,smoke,drink,background_father,background_mother,age,pesticide,gender,"
    "skin_cancer_history,cancer_history,has_piped_water,has_sewage_system,fitspatrick,region,"
    "diameter_1,diameter_2,diagnostic,itch,grew,hurt,changed,bleed,elevation,img_id,biopsed"
)
SCIN_CASES_HEADER = (
    "case_id,source,release,year,age_group,sex_at_birth,fitzpatrick_skin_type,"
    "related_category,condition_duration,image_1_path,image_2_path,image_3_path,"
    "image_1_shot_type,image_2_shot_type,image_3_shot_type"
)
SCIN_LABELS_HEADER = (
    "case_id,dermatologist_gradable_for_skin_condition_1,"
    "dermatologist_skin_condition_on_label_name,dermatologist_skin_condition_confidence,"
    "weighted_skin_condition_label,dermatologist_gradable_for_fitzpatrick_skin_type_1,"
    "dermatologist_fitzpatrick_skin_type_label_1,dermatologist_fitzpatrick_skin_type_label_2,"
    "dermatologist_fitzpatrick_skin_type_label_3,gradable_for_monk_skin_tone_india,"
    "gradable_for_monk_skin_tone_us,monk_skin_tone_label_india,monk_skin_tone_label_us"
)


def write_f17k(folder: Path) -> Path:
    """Six images: Scale AI says 1,2,3,5,6,-1; Centaur mostly agrees."""
    rows = [
        ("a1", 1, 1, "psoriasis"),
        ("a2", 2, 1, "psoriasis"),
        ("a3", 3, 3, "folliculitis"),
        ("a4", 5, 6, "folliculitis"),
        ("a5", 6, 6, "psoriasis"),
        ("a6", -1, 4, "psoriasis"),
    ]
    lines = [F17K_HEADER] + [
        f"{h},{s},{c},{label},inflammatory,non-neoplastic,,https://x/{h}.jpg,x"
        for h, s, c, label in rows
    ]
    path = folder / "fitzpatrick17k.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_ddi(folder: Path) -> Path:
    """Five images as DDI publishes them: an unnamed index column, FST in pairs."""
    rows = [
        ("000001.png", "56", "True", "melanoma-in-situ"),
        ("000002.png", "12", "False", "seborrheic-keratosis-irritated"),
        ("000003.png", "34", "True", "basal-cell-carcinoma-nodular"),
        ("000004.png", "56", "False", "verruca-vulgaris"),
        ("000005.png", "56", "True", "basal-cell-carcinoma"),
    ]
    lines = [DDI_HEADER] + [
        f"{i},{i + 1},{f},{tone},{malignant},{disease}"
        for i, (f, tone, malignant, disease) in enumerate(rows)
    ]
    path = folder / "ddi_metadata.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_pad(folder: Path) -> Path:
    """Four images: fitspatrick as the published floats, one without clinical data."""
    rows = [
        ("PAT_1_1_1.png", "3.0", "BCC"),
        ("PAT_2_2_2.png", "2.0", "NEV"),
        ("PAT_3_3_3.png", "", "ACK"),
        ("PAT_4_4_4.png", "6.0", "SCC"),
    ]
    lines = [PAD_HEADER]
    for i, (img, fst, dx) in enumerate(rows, 1):
        lines.append(
            f"PAT_{i},{i},False,False,POMERANIA,POMERANIA,55,False,FEMALE,True,True,True,True,"
            f"{fst},FACE,6.0,5.0,{dx},True,False,False,False,False,True,{img},True"
        )
    path = folder / "metadata.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_scin(folder: Path) -> Path:
    """Three cases (five images) in two tables joined on case_id; one case unlabelled."""
    cases = [
        ("-101", "FST2", "dataset/images/-9001.png", "dataset/images/-9002.png", ""),
        ("-102", "NONE_SELECTED", "dataset/images/-9003.png", "", ""),
        ("-103", "FST5", "dataset/images/-9004.png", "", "dataset/images/-9005.png"),
    ]
    lines = [SCIN_CASES_HEADER] + [
        f"{cid},SCIN,1.0.0,2023,AGE_30_TO_39,FEMALE,{fst},RASH,ONE_DAY,{p1},{p2},{p3},"
        "CLOSE_UP,AT_AN_ANGLE,AT_DISTANCE"
        for cid, fst, p1, p2, p3 in cases
    ]
    labels = [
        ("-101", "\"{'Eczema': 0.7, 'Psoriasis': 0.3}\"", "FST2", "FST3", "", "2", "3"),
        ("-102", "", "", "", "", "", ""),
        ("-103", "\"{'Psoriasis': 1.0}\"", "FST5", "FST5", "FST6", "9", "8"),
    ]
    label_lines = [SCIN_LABELS_HEADER] + [
        f'{cid},True,"[\'x\']","[3]",{w},YES,{d1},{d2},{d3},True,True,{india},{us}'
        for cid, w, d1, d2, d3, india, us in labels
    ]
    cases_path = folder / "scin_cases.csv"
    cases_path.write_text("\n".join(lines) + "\n")
    (folder / "scin_labels.csv").write_text("\n".join(label_lines) + "\n")
    return cases_path


WRITERS = {
    "fitzpatrick17k": write_f17k,
    "ddi": write_ddi,
    "pad-ufes-20": write_pad,
    "scin": write_scin,
}


def counts(manifest: pd.DataFrame) -> dict[str, int]:
    scale = SCALES[manifest.attrs["scale"]]
    return group_counts(manifest[scale.column], scale, manifest.attrs["groups"]).to_dict()


# -- each preset ---------------------------------------------------------------------------------


def test_every_preset_has_a_fixture_licence_and_source() -> None:
    assert set(WRITERS) == set(PRESET_NAMES)
    for preset in PRESETS.values():
        assert preset.licence and preset.source
        assert preset.default_rater in preset.rater_names


def test_fitzpatrick17k_preset_counts_per_fst_group(tmp_path: Path) -> None:
    manifest = DatasetConfig(csv=write_f17k(tmp_path), preset="fitzpatrick17k").load()
    assert counts(manifest) == {"1-2": 2, "3-4": 1, "5-6": 2, "unknown": 1}
    # the <md5hash>.jpg convention, in the folder beside the table
    assert manifest.loc[0, "path"] == str(tmp_path / "a1.jpg")
    centaur = DatasetConfig(
        csv=tmp_path / "fitzpatrick17k.csv", preset="fitzpatrick17k", rater="fitzpatrick_centaur"
    ).load()
    assert counts(centaur) == {"1-2": 2, "3-4": 2, "5-6": 2, "unknown": 0}


def test_ddi_preset_reads_pairs_of_types_and_groups_by_them(tmp_path: Path) -> None:
    manifest = DatasetConfig(csv=write_ddi(tmp_path), preset="ddi").load()
    assert counts(manifest) == {"1-2": 1, "3-4": 1, "5-6": 3, "unknown": 0}
    assert manifest.attrs["groups"] == [(1, 2), (3, 4), (5, 6)]
    assert list(manifest["label"])[:2] == ["melanoma-in-situ", "seborrheic-keratosis-irritated"]
    assert manifest.loc[0, "path"] == str(tmp_path / "000001.png")
    # the malignant flag as the label field instead of the disease name
    flags = DatasetConfig(csv=tmp_path / "ddi_metadata.csv", preset="ddi", label_column="malignant")
    assert flags.load()["label"].value_counts().to_dict() == {"True": 3, "False": 2}
    # a grouping that splits DDI's pairs is refused
    with pytest.raises(DermsynthError, match="splits the rated group 5-6"):
        DatasetConfig(csv=tmp_path / "ddi_metadata.csv", preset="ddi", groups="1-4,5,6").load()


def test_pad_ufes_20_preset_reads_fitspatrick_floats_and_empty_cells(tmp_path: Path) -> None:
    manifest = DatasetConfig(csv=write_pad(tmp_path), preset="pad-ufes-20").load()
    assert counts(manifest) == {"1-2": 1, "3-4": 1, "5-6": 1, "unknown": 1}
    assert list(manifest["label"]) == ["BCC", "NEV", "ACK", "SCC"]
    assert list(manifest["image_id"])[0] == "PAT_1_1_1.png"


def test_scin_preset_joins_labels_one_row_per_image_on_the_monk_scale(tmp_path: Path) -> None:
    manifest = DatasetConfig(csv=write_scin(tmp_path), preset="scin").load()
    # case -102 has no condition label: its image is left out, and said so
    assert manifest.attrs["notes"] == [
        "1 image(s) without a weighted_skin_condition_label left out"
    ]
    assert list(manifest["image_id"]) == ["-9001", "-9002", "-9004", "-9005"]
    assert list(manifest["label"]) == ["Eczema", "Eczema", "Psoriasis", "Psoriasis"]
    assert manifest.attrs["scale"] == "mst"
    assert counts(manifest) == {"1-3": 2, "4-7": 0, "8-10": 2, "unknown": 0}
    assert (manifest["fst"] == -1).all()
    assert manifest.loc[0, "path"] == str(tmp_path / "-9001.png")
    table = tone_table(manifest, manifest.attrs["groups"], "mst")
    assert table.loc["8-10", "Psoriasis"] == 2 and table.loc["total", "total"] == 4
    # the dermatologists' FST instead, by consensus
    derm = DatasetConfig(
        csv=tmp_path / "scin_cases.csv",
        preset="scin",
        rater=[f"dermatologist_fitzpatrick_skin_type_label_{i}" for i in (1, 2, 3)],
        consensus="median",
    ).load()
    assert derm.attrs["scale"] == "fst"
    assert list(derm["fst"]) == [3, 3, 5, 5]  # median of (2, 3) rounds half up; of (5, 5, 6)


def test_scin_weighted_label_takes_the_heaviest_condition() -> None:
    assert top_weighted_label("{'Eczema': 0.2, 'Psoriasis': 0.8}") == "Psoriasis"
    assert top_weighted_label("") == ""
    with pytest.raises(DermsynthError, match="cannot read"):
        top_weighted_label("{broken")


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["ddi", "pad-ufes-20", "scin"])
def test_a_table_of_another_schema_is_refused_naming_expected_and_found(
    tmp_path: Path, preset: str
) -> None:
    f17k = write_f17k(tmp_path)
    with pytest.raises(DermsynthError) as info:
        DatasetConfig(csv=f17k, preset=preset).load()
    message = str(info.value)
    assert "\n" not in message
    assert f"not a {PRESETS[preset].title} table" in message
    assert f"expected columns {PRESETS[preset].id_column}" in message
    assert "found md5hash, fitzpatrick_scale" in message


def test_unknown_rater_and_two_raters_without_consensus_are_one_line(tmp_path: Path) -> None:
    csv = write_f17k(tmp_path)
    with pytest.raises(DermsynthError, match="no rater 'doctor'; its raters: fitzpatrick_scale"):
        DatasetConfig(csv=csv, preset="fitzpatrick17k", rater="doctor").load()
    both = ["fitzpatrick_scale", "fitzpatrick_centaur"]
    with pytest.raises(DermsynthError, match="2 raters given .* but no consensus rule") as info:
        DatasetConfig(csv=csv, preset="fitzpatrick17k", rater=both).load()
    assert "\n" not in str(info.value)
    scin = write_scin(tmp_path)
    mixed = ["fitzpatrick_skin_type", "monk_skin_tone_label_us"]
    with pytest.raises(DermsynthError, match="different scales"):
        DatasetConfig(csv=scin, preset="scin", rater=mixed, consensus="mean").load()


def test_a_bad_rating_names_its_row(tmp_path: Path) -> None:
    csv = write_ddi(tmp_path)
    csv.write_text(csv.read_text().replace(",12,", ",23,"))
    with pytest.raises(DermsynthError, match=r"row 2 \(line 3\): skin_tone must be 12, 34, 56"):
        DatasetConfig(csv=csv, preset="ddi").load()


def test_a_config_names_the_preset_and_its_paths_resolve(tmp_path: Path) -> None:
    write_ddi(tmp_path)
    config = {
        "dataset": {"csv": "ddi_metadata.csv", "preset": "ddi", "images": "pictures"},
        "conditions": ["melanoma-in-situ", "verruca-vulgaris"],
        "augmented": ["verruca-vulgaris"],
        "directions": [{"train": [5, 6], "test": [[1, 2]]}],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    study = load_config(path)
    assert study.dataset.preset == "ddi" and study.dataset.images == tmp_path / "pictures"
    manifest = study.dataset.load()
    assert manifest.loc[0, "path"] == str(tmp_path / "pictures" / "000001.png")
    path.write_text(yaml.safe_dump({**config, "dataset": {"csv": "x.csv", "preset": "isic"}}))
    with pytest.raises(DermsynthError, match="dataset.preset: Input should be"):
        load_config(path)


def test_generic_table_with_a_monk_column(tmp_path: Path) -> None:
    csv = tmp_path / "mine.csv"
    csv.write_text("file,dx,monk\nx1.png,acne,2\nx2.png,acne,10\nx3.png,wart,5\n")
    config = DatasetConfig(
        csv=csv, id_column="file", label_column="dx", path_column="file", rater="monk", scale="mst"
    )
    manifest = config.load()
    assert counts(manifest) == {"1-3": 1, "4-7": 1, "8-10": 1, "unknown": 0}
    assert manifest.loc[0, "path"] == str(tmp_path / "x1.png")


# -- the command line ------------------------------------------------------------------------------


def test_data_summary_dataset_prints_counts_per_group(tmp_path: Path, run_cli) -> None:
    csv = write_scin(tmp_path)
    result = run_cli("data", "summary", "--csv", csv, "--dataset", "scin", "--format", "csv")
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "mst,Eczema,Psoriasis,total"
    assert lines[1:4] == ["1-3,2,0,2", "4-7,0,0,0", "8-10,0,2,2"]
    assert "Monk skin tone (monk_skin_tone_label_us)" in result.stderr
    ddi = write_ddi(tmp_path)
    result = run_cli("data", "summary", "--csv", ddi, "--dataset", "ddi", "--format", "json")
    assert result.code == 0, result.stderr
    assert '"unknown": 0' in result.stdout and '"scale": "fst"' in result.stdout
    result = run_cli("data", "summary", "--csv", ddi, "--dataset", "pad-ufes-20")
    assert result.code == 2 and "not a PAD-UFES-20 table" in result.stderr


def test_data_presets_lists_licences(run_cli) -> None:
    result = run_cli("data", "presets")
    assert result.code == 0
    for preset in PRESETS.values():
        assert f"licence: {preset.licence}" in result.stdout
