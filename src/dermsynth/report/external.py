"""Table 2's blocks for a study's external test datasets: one per dataset, in the layout of
the study's own Table 2, grouped by that dataset's skin-tone scale."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import pandas as pd

from dermsynth.report import tables
from dermsynth.report.build import Block, note, table_block
from dermsynth.report.load import StudyRun
from dermsynth.study.external import read_external, set_names


class _Keeps(Protocol):
    """What the report builder offers: the run, the study's numbers, a CSV keeper."""

    run: StudyRun
    augmented: list[str]
    full_dose: int
    arms: list[str]

    def keep(self, name: str, frame: pd.DataFrame) -> str: ...


def _heading(name: str, about: dict[str, Any]) -> str:
    per_group = ", ".join(f"{g}: {n}" for g, n in about["images_per_group"].items())
    return (
        f"External test set {name} ({about['scale_title']}): {about['images']} images ({per_group})"
    )


def _notes(about: dict[str, Any]) -> list[Block]:
    out = [note(line) for line in about.get("notes", [])]
    empty = about.get("cells_without_images", [])
    if empty:
        out.append(note(f"No images, so no accuracy, for: {'; '.join(empty)}."))
    return out


def _display(cells: pd.DataFrame, condition: str, arms: Sequence[str], scale: str) -> pd.DataFrame:
    shown = tables.table2_display(cells, condition, arms)
    if scale != "fst":
        shown = shown.rename(columns={"FST": "Monk skin tone"}, level=1)
    return shown


def external_blocks(builder: _Keeps, arms: Sequence[str]) -> tuple[list[Block], list[str]]:
    """Table 2's blocks for each external dataset with results, and their CSV file names."""
    blocks: list[Block] = []
    files: list[str] = []
    found = read_external(builder.run.path, set_names(builder.run.config))
    for name, (summary, about) in found.items():
        cells = tables.arm_cells(summary, builder.augmented, builder.full_dose, builder.arms)
        blocks.append(Block("heading", _heading(name, about)))
        for condition in dict.fromkeys(cells["augmented"]):
            blocks.append(
                table_block(
                    _display(cells, condition, arms, about["scale"]),
                    f"{condition} on {name}: classification accuracy (95% CI), N",
                )
            )
        blocks += _notes(about)
        files.append(builder.keep(f"table2_{name}", cells))
    return blocks, files
