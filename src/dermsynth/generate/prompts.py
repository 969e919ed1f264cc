"""Prompts: the paper's template filled from a per-seed table the user can edit.

The table has one row per seed image: ``image_id``, ``label``, ``fst``, the template's fields
(``condition``, ``body_part``, ``noun``, ``skin_type_description``), the seed preparation
inputs (``crop_box``, ``mask_path``) and ``prompt``. An empty ``prompt`` cell means "fill the
template from this row's fields"; a non-empty one is used verbatim.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pandas as pd

from dermsynth.config import PAPER_TEMPLATE
from dermsynth.errors import DermsynthError
from dermsynth.io import atomic_write_csv

# Sagers et al. (2022), section 2.3.
TEMPLATE_FIELDS: tuple[str, ...] = ("condition", "body_part", "skin_type_description", "noun")

SKIN_TYPE_DESCRIPTIONS: dict[int, str] = {
    1: "light-skinned",
    2: "light-skinned",
    3: "medium-skinned",
    4: "medium-skinned",
    5: "dark-skinned",
    6: "dark-skinned",
}
DEFAULT_BODY_PART = "skin"
DEFAULT_NOUN = "person"

PROMPT_TABLE_COLUMNS: tuple[str, ...] = (
    "image_id",
    "label",
    "fst",
    "condition",
    "body_part",
    "noun",
    "skin_type_description",
    "crop_box",
    "mask_path",
    "prompt",
)


def default_prompt_table(seeds: pd.DataFrame) -> pd.DataFrame:
    """One editable row per seed, with defaults where the seed manifest has no value.

    A seed manifest column named like a template field (e.g. ``body_part``) or ``crop_box`` /
    ``mask_path`` is carried over, so a dataset that records body sites fills them itself.
    """
    rows = []
    for seed in seeds.itertuples(index=False):
        values = cast(Any, seed)._asdict()  # pandas-stubs' row tuple lacks namedtuple's _asdict
        fst = int(values["fst"])

        def given(column: str, default: str, values: dict = values) -> str:
            text = str(values.get(column, "") or "").strip()
            return text if text else default

        rows.append(
            {
                "image_id": values["image_id"],
                "label": values["label"],
                "fst": fst,
                "condition": given("condition", str(values["label"])),
                "body_part": given("body_part", DEFAULT_BODY_PART),
                "noun": given("noun", DEFAULT_NOUN),
                "skin_type_description": given(
                    "skin_type_description", SKIN_TYPE_DESCRIPTIONS.get(fst, "")
                ),
                "crop_box": given("crop_box", ""),
                "mask_path": given("mask_path", ""),
                "prompt": given("prompt", ""),
            }
        )
    return pd.DataFrame(rows, columns=list(PROMPT_TABLE_COLUMNS))


def render_prompt(row: Mapping[str, Any], template: str = PAPER_TEMPLATE) -> str:
    """The prompt of one table row: its ``prompt`` cell if set, else the filled template."""
    custom = str(row.get("prompt", "") or "").strip()
    if custom:
        return custom
    try:
        text = template.format(**{f: str(row.get(f, "") or "").strip() for f in TEMPLATE_FIELDS})
    except (KeyError, IndexError, ValueError) as exc:
        raise DermsynthError(
            f"prompt template {template!r} cannot be filled ({exc}); it may use only "
            f"{', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}"
        ) from None
    # An empty field (e.g. unknown skin type) must not leave a double space behind.
    return " ".join(text.split())


def write_prompt_table(table: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write the editable table atomically."""
    atomic_write_csv(path, table)
    return Path(path)


def read_prompt_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a table written by :func:`write_prompt_table` (and perhaps edited by hand)."""
    path = Path(path)
    if not path.is_file():
        raise DermsynthError(
            f"prompt table {path} not found; write one with `dermsynth generate prompts`"
        )
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DermsynthError(f"{path}: not a readable CSV ({exc})") from None
    if "image_id" not in table.columns:
        raise DermsynthError(f"{path}: the prompt table needs an 'image_id' column")
    table["image_id"] = table["image_id"].str.strip()
    dup = table["image_id"][table["image_id"].duplicated()]
    if not dup.empty:
        raise DermsynthError(f"{path}: seed {dup.iloc[0]!r} appears twice in the prompt table")
    return table


def resolve_prompts(
    seeds: pd.DataFrame,
    table: pd.DataFrame | None,
    template: str = PAPER_TEMPLATE,
    *,
    source: str = "prompt table",
) -> pd.DataFrame:
    """The per-seed table for exactly ``seeds``, with a final ``prompt`` for each.

    Without a table the defaults are used. With one, every seed must have a row (a missing
    seed is an error, not a silent default: the user meant to write its prompt).
    """
    defaults = default_prompt_table(seeds)
    if table is None:
        merged = defaults
    else:
        missing = [i for i in defaults["image_id"] if i not in set(table["image_id"])]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise DermsynthError(
                f"{source} has no row for seed {missing[0]!r}{more}; regenerate it with "
                "`dermsynth generate prompts` or add the rows"
            )
        by_id = table.set_index("image_id")
        merged = defaults.copy()
        for column in PROMPT_TABLE_COLUMNS[3:]:
            if column in by_id.columns:
                edited = merged["image_id"].map(by_id[column]).fillna("").astype(str).str.strip()
                # Template fields keep their default when the cell was emptied; the rest take
                # the table's value as is (an empty crop_box means "centre").
                if column in TEMPLATE_FIELDS:
                    merged[column] = edited.where(edited != "", merged[column])
                else:
                    merged[column] = edited
    # The table's column labels are text; pandas-stubs types them as any hashable.
    records = cast("list[dict[str, Any]]", merged.to_dict("records"))
    merged["prompt"] = [render_prompt(row, template) for row in records]
    return merged
