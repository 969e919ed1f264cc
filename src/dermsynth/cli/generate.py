"""``dermsynth generate ...``: commands of the generate stage (heavy imports stay inside the commands)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the root app."""
