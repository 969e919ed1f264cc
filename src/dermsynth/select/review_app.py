"""The review page: a person accepts or rejects candidates; each decision lands in the manifest.

``create_app(run_dir)`` builds a FastAPI app over one run folder and its selected manifest:

* ``GET /`` the page (plain HTML and a little JavaScript, no build step);
* ``GET /api/state`` every seed with its candidates, scores and decisions;
* ``POST /api/decision`` ``{"image_id": ..., "decision": "accept" | "reject" | "reset"}``:
  sets the ``reviewed`` column (``accepted`` / ``rejected`` / empty) and ``final`` (reviewed
  overriding ``selected``), writes the manifest atomically under a lock and returns the
  candidate's new state; an unknown id is 404, a malformed body 422;
* ``GET /files/{path}`` a file inside the run folder, nothing outside it (403).

Every request reads the manifest from disk, so decisions survive a restart, a second tab sees
the first one's decisions, and a manifest edited by hand is respected. The lock is a file lock
(``fcntl``, where the platform has it) plus a thread lock, so two servers on one run folder do
not lose each other's writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict

from dermsynth.errors import DermsynthError
from dermsynth.io import atomic_write_csv
from dermsynth.select.selection import REVIEWED, SELECTION_FILE, final_selection, safe_name

DEFAULT_MANIFEST = "selected.csv"
DECISIONS = {"accept": "accepted", "reject": "rejected", "reset": ""}
SCORE_COLUMNS = (
    "score",
    "score_tone",
    "score_pathology",
    "score_similarity",
    "score_quality",
    "ita",
    "fst_estimated",
    "similarity",
    "flag_similarity",
    "blur",
    "leak_distance",
)


class Decision(BaseModel):
    """The body of ``POST /api/decision``."""

    model_config = ConfigDict(extra="forbid")
    image_id: str
    decision: Literal["accept", "reject", "reset"]


def manifest_path(run_dir: str | os.PathLike[str], manifest: str | None = None) -> Path:
    """The selected manifest of a run folder: ``manifest`` (a name inside it), else the one
    ``selection.json`` names, else ``selected.csv``."""
    run = Path(run_dir)
    if not run.is_dir():
        raise DermsynthError(f"{run}: no such run folder")
    if manifest is None:
        info = run / SELECTION_FILE
        name = DEFAULT_MANIFEST
        if info.is_file():
            with contextlib.suppress(OSError, ValueError, AttributeError):
                name = json.loads(info.read_text(encoding="utf-8")).get("manifest") or name
    else:
        name = manifest
    path = (run / name).resolve()
    if not path.is_relative_to(run.resolve()):
        raise DermsynthError(f"--manifest {name!r} is outside the run folder {run}")
    if not path.is_file():
        raise DermsynthError(
            f"{path}: no selected manifest here; run `dermsynth select --out {run}/{DEFAULT_MANIFEST}` "
            "first, or name it with --manifest"
        )
    return path


class ManifestStore:
    """Reads and writes the selected manifest, one decision at a time, under a lock."""

    def __init__(self, run_dir: Path, path: Path) -> None:
        self.run_dir = run_dir.resolve()
        self.path = path
        self._lock = threading.Lock()
        self._lock_file = path.parent / f".{path.name}.lock"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive access among threads of this server and other processes."""
        with self._lock, open(self._lock_file, "a+") as handle:
            try:
                import fcntl
            except ImportError:  # Windows: the thread lock alone
                yield
                return
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def read(self) -> pd.DataFrame:
        """The manifest as text columns (values are written back exactly as read)."""
        try:
            frame = pd.read_csv(self.path, dtype=str, keep_default_na=False)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise DermsynthError(
                f"{self.path}: cannot read the selected manifest ({exc})"
            ) from None
        missing = [c for c in ("image_id", "parent_id", "path") if c not in frame.columns]
        if missing:
            raise DermsynthError(
                f"{self.path}: not a selected manifest (lacks {', '.join(missing)})"
            )
        if REVIEWED not in frame.columns:
            frame[REVIEWED] = ""
        if "selected" not in frame.columns:
            frame["selected"] = "False"
        return frame

    def decide(self, image_id: str, decision: str) -> dict[str, Any] | None:
        """Apply one decision; the candidate's new state, or None for an unknown id."""
        with self.locked():
            frame = self.read()
            hits = frame.index[frame["image_id"] == image_id]
            if len(hits) == 0:
                return None
            frame.loc[hits, REVIEWED] = DECISIONS[decision]
            frame["final"] = final_selection(frame).map(str)
            atomic_write_csv(self.path, frame)
            return self.candidate(frame.loc[hits[0]])

    def url(self, path: str) -> str | None:
        """``/files/...`` URL of an image inside the run folder; None outside it."""
        if not path:
            return None
        target = Path(path)
        if not target.is_absolute():
            target = self.path.parent / target
        target = target.resolve()
        if not target.is_relative_to(self.run_dir) or not target.is_file():
            return None
        return "/files/" + target.relative_to(self.run_dir).as_posix()

    def candidate(self, row: pd.Series) -> dict[str, Any]:
        """One candidate as the page shows it."""
        scores = {}
        for column in SCORE_COLUMNS:
            if column in row.index and str(row[column]) != "":
                scores[column] = _number(row[column])
        selected = str(row.get("selected", "")).lower() == "true"
        reviewed = str(row.get(REVIEWED, ""))
        final = True if reviewed == "accepted" else False if reviewed == "rejected" else selected
        return {
            "image_id": str(row["image_id"]),
            "image": self.url(str(row["path"])),
            "selected": selected,
            "excluded": str(row.get("excluded", "")).lower() == "true",
            "rank": str(row.get("rank", "")),
            "reviewed": reviewed,
            "final": final,
            "reason": str(row.get("reason", "")),
            "scores": scores,
        }

    def state(self) -> dict[str, Any]:
        """Every seed with its candidates, in manifest order."""
        frame = self.read()
        seeds = []
        sheets = self.path.parent / "contact_sheets"
        for parent, group in frame.groupby("parent_id", sort=False):
            first = group.iloc[0]
            seed_image = None
            if "seed_crop" in group.columns:
                seed_image = self.url(str(first["seed_crop"]))
            seeds.append(
                {
                    "seed_id": str(parent),
                    "label": str(first.get("label", "")),
                    "fst": str(first.get("fst", "")),
                    "seed_image": seed_image,
                    "contact_sheet": self.url(str(sheets / f"{safe_name(str(parent))}.png")),
                    "candidates": [self.candidate(row) for _, row in group.iterrows()],
                }
            )
        return {"manifest": self.path.name, "seeds": seeds}


def _number(value: str) -> Any:
    try:
        number = float(value)
    except ValueError:
        return value
    return None if math.isnan(number) else number


def create_app(run_dir: str | os.PathLike[str], manifest: str | None = None) -> Any:
    """The FastAPI app of a run folder (see the module docstring)."""
    try:
        from fastapi import FastAPI, HTTPException
        from fastapi.responses import FileResponse, HTMLResponse
    except ImportError:
        raise DermsynthError(
            "the review page needs FastAPI and uvicorn: pip install 'dermsynth[review]'"
        ) from None
    from dermsynth.select.review_page import PAGE

    run = Path(run_dir).resolve()
    store = ManifestStore(run, manifest_path(run, manifest))
    store.read()  # a broken manifest is refused at start, not on the first click

    app = FastAPI(title="dermsynth review", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE

    @app.get("/api/state")
    def state() -> dict[str, Any]:
        return store.state()

    @app.post("/api/decision")
    def decision(body: Decision) -> dict[str, Any]:
        result = store.decide(body.image_id, body.decision)
        if result is None:
            raise HTTPException(
                status_code=404, detail=f"no candidate {body.image_id!r} in {store.path.name}"
            )
        return result

    @app.get("/files/{path:path}")
    def files(path: str) -> Any:
        # Resolve first (symlinks and '..' included), then require the result inside the run.
        try:
            target = (run / path).resolve()
        except (OSError, ValueError):
            raise HTTPException(status_code=404, detail="not found") from None
        if not target.is_relative_to(run):
            raise HTTPException(status_code=403, detail="outside the run folder")
        if not target.is_file():
            raise HTTPException(status_code=404, detail="not found")
        return FileResponse(target)

    app.state.store = store
    return app


def serve(
    run_dir: str | os.PathLike[str],
    *,
    manifest: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
) -> None:
    """Run the review page until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise DermsynthError(
            "the review page needs FastAPI and uvicorn: pip install 'dermsynth[review]'"
        ) from None
    app = create_app(run_dir, manifest)
    uvicorn.run(app, host=host, port=port, log_level="warning")
