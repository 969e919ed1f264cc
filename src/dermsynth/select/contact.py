"""Contact sheets: one PNG per seed, the seed then its candidates, kept ones marked.

Borders tell the decision at a glance: blue for the seed, green for kept, red for excluded
(leakage, unreadable), gray for dropped. Each tile is captioned with the candidate's rank and
score (or why it was excluded).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from dermsynth.io import atomic_write_bytes

TILE = 128
BORDER = 5
CAPTION = 28
COLUMNS = 5
COLOURS = {
    "seed": (40, 90, 220),
    "kept": (30, 160, 60),
    "excluded": (210, 40, 40),
    "dropped": (150, 150, 150),
}


@dataclass(frozen=True)
class Tile:
    """One image of a sheet: its file (None: unreadable), kind (a key of COLOURS), caption."""

    path: str | None
    kind: str
    lines: tuple[str, ...]


def _thumbnail(path: str | None) -> Image.Image:
    from dermsynth.data.images import load_rgb

    inner = TILE - 2 * BORDER
    placeholder = Image.new("RGB", (inner, inner), (235, 235, 235))
    if not path:
        return placeholder
    try:
        image = load_rgb(path, min_size=1)
    except (OSError, ValueError):
        ImageDraw.Draw(placeholder).text((6, inner // 2 - 6), "unreadable", fill=(120, 0, 0))
        return placeholder
    # Fit inside the tile, enlarging small images too (generators' test outputs are 64 px).
    scale = inner / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.LANCZOS)
    canvas = placeholder.copy()
    canvas.paste(image, ((inner - image.width) // 2, (inner - image.height) // 2))
    return canvas


def contact_sheet(tiles: Sequence[Tile], title: str = "") -> Image.Image:
    """A grid of captioned, bordered thumbnails with an optional title line."""
    font = ImageFont.load_default()
    columns = max(1, min(COLUMNS, len(tiles)))
    rows = -(-len(tiles) // columns) if tiles else 1
    head = 18 if title else 0
    sheet = Image.new("RGB", (columns * TILE, head + rows * (TILE + CAPTION)), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((4, 3), title, fill=(0, 0, 0), font=font)
    for k, tile in enumerate(tiles):
        x = (k % columns) * TILE
        y = head + (k // columns) * (TILE + CAPTION)
        draw.rectangle([x, y, x + TILE - 1, y + TILE - 1], fill=COLOURS.get(tile.kind, (0, 0, 0)))
        sheet.paste(_thumbnail(tile.path), (x + BORDER, y + BORDER))
        for line_no, text in enumerate(tile.lines[:2]):
            draw.text((x + 3, y + TILE + 2 + 12 * line_no), text[:22], fill=(0, 0, 0), font=font)
    return sheet


def write_contact_sheet(
    tiles: Sequence[Tile], path: str | os.PathLike[str], title: str = ""
) -> Path:
    """Render and write a sheet as PNG, atomically."""
    buffer = io.BytesIO()
    contact_sheet(tiles, title).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
