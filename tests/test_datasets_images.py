"""Local image folders: rows without an image are counted and listed; a missing folder is
reported as a missing folder; the messages say folder or `data fetch`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image

from dermsynth.config import DatasetConfig
from dermsynth.data.datasets import check_images, image_check_lines
from test_datasets import write_ddi, write_f17k


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (48, 48), (190, 150, 120)).save(path)


def test_rows_without_images_are_counted_and_listed(tmp_path: Path, run_cli) -> None:
    csv = write_f17k(tmp_path)
    folder = tmp_path / "images"
    for md5 in ("a1", "a2", "a4", "a5"):
        _image(folder / f"{md5}.jpg")
    listing = tmp_path / "missing.csv"
    result = run_cli(
        "data", "images", "--csv", csv, "--dataset", "fitzpatrick17k", "--out", listing
    )
    assert result.code == 1, result.stderr
    assert "2 of 6 row(s) have no image file; listed in" in result.stdout
    # Fitzpatrick 17k has URLs: the message offers both ways
    assert "copy those files into the image folder" in result.stdout
    assert "`dermsynth data fetch --out FOLDER`" in result.stdout
    missing = pd.read_csv(listing)
    assert list(missing.columns) == ["image_id", "label", "path"]
    assert list(missing["image_id"]) == ["a3", "a6"]
    assert missing.loc[0, "path"] == str(folder / "a3.jpg")
    for md5 in ("a3", "a6"):
        _image(folder / f"{md5}.jpg")
    result = run_cli(
        "data", "images", "--csv", csv, "--dataset", "fitzpatrick17k", "--out", listing
    )
    assert result.code == 0 and "all 6 image(s) found" in result.stdout
    assert pd.read_csv(listing).empty


def test_a_missing_folder_is_a_missing_folder_not_n_missing_images(tmp_path: Path, run_cli) -> None:
    csv = write_ddi(tmp_path)
    gone = tmp_path / "nowhere"
    result = run_cli(
        "data",
        "images",
        "--csv",
        csv,
        "--dataset",
        "ddi",
        "--images",
        gone,
        "--out",
        tmp_path / "missing.csv",
    )
    assert result.code == 2
    assert f"image folder {gone} does not exist" in result.stderr
    assert "row(s) have no image" not in result.stderr
    # DDI publishes no URLs: no fetch advice
    assert "data fetch" not in result.stderr


def test_image_check_in_code_for_a_configured_folder(tmp_path: Path) -> None:
    csv = write_ddi(tmp_path)
    folder = tmp_path / "ddi_images"
    _image(folder / "000001.png")
    manifest = DatasetConfig(csv=csv, preset="ddi", images=folder).load()
    check = check_images(manifest)
    assert check.n_rows == 5 and check.n_missing == 4 and check.folders == [folder]
    assert not check.missing_folders
    lines = image_check_lines(check, fetchable=False)
    assert lines == ["4 of 5 row(s) have no image file: copy those files into the image folder"]


def test_fetch_failures_point_at_the_folder_alternative(tmp_path: Path, run_cli) -> None:
    csv = write_f17k(tmp_path)
    csv.write_text(csv.read_text().replace("https://x/", "file:///nonexistent/"))
    result = run_cli(
        "data",
        "fetch",
        "--csv",
        csv,
        "--out",
        tmp_path / "got",
        "--retries",
        "0",
        "--deadline",
        "5",
    )
    assert "failed 6" in result.stdout
    assert "give the folder as --images" in result.stderr
