"""The review page: a person accepts or rejects candidates; each decision lands in the manifest.

``create_app(run_dir)`` builds a FastAPI app over one reviewed folder and its selected manifest:

* ``GET /`` the page (plain HTML and a little JavaScript, no build step);
* ``GET /api/state`` every seed with its candidates, scores, decisions and which candidates
  train: the ``k`` per seed that :func:`~dermsynth.select.selection.training_selection` gives
  the study (accepted first, then best rank), with a note wherever a decision pulled in
  another candidate (``#3 trains in place of rejected #1``);
* ``POST /api/decision`` ``{"image_id": ..., "decision": "accept" | "reject" | "reset"}``:
  sets the ``reviewed`` column (``accepted`` / ``rejected`` / empty) and ``final`` (reviewed
  overriding ``selected``), writes the manifest atomically and returns the candidate's new
  state; an unknown id is 404, a malformed body 422 (neither repeats what was sent);
* ``GET /files/{path}`` an image under the serving root, nothing outside it (403).

The serving root is the nearest folder at or above the reviewed one that holds ``study.json``
(a study keeps its candidates under ``generation/``, beside ``selection/``), else the reviewed
folder itself. Image paths in the manifest are taken as they are when absolute, else against
the manifest's folder, then against the root.

Every request reads the manifest from disk, so decisions survive a restart, a second tab sees
the first one's decisions, and a manifest edited by hand is respected. :func:`serve` holds the
reviewed folder's :class:`~dermsynth.io.FolderLock` while it runs (one server per folder); a
thread lock orders the decisions of one server. Requests must name this machine in ``Host``
(a page elsewhere cannot reach the server through DNS rebinding) and carry at most
``MAX_BODY_BYTES``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import pandas as pd
from pydantic import BaseModel, ConfigDict

from dermsynth.errors import DermsynthError
from dermsynth.io import FolderLock, atomic_write_csv, is_partial
from dermsynth.schema import as_bool
from dermsynth.select.selection import (
    REVIEWED,
    SELECTION_FILE,
    SHEETS_DIR,
    final_selection,
    safe_name,
    training_selection,
)
from dermsynth.study.layout import STUDY_FILE

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
MAX_BODY_BYTES = 64 * 1024
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
BAD_BODY = 'expected {"image_id": "...", "decision": "accept" | "reject" | "reset"}'
NEEDS_EXTRA = "the review page needs FastAPI and uvicorn: pip install 'dermsynth[review]'"


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
        name = str(_selection_info(run).get("manifest") or DEFAULT_MANIFEST)
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


def serving_root(folder: str | os.PathLike[str]) -> Path:
    """The folder images are served from: the nearest one at or above ``folder`` holding
    ``study.json``, else ``folder`` itself."""
    start = Path(folder).resolve()
    for candidate in (start, *start.parents):
        if (candidate / STUDY_FILE).is_file():
            return candidate
    return start


def _selection_info(folder: Path) -> dict[str, Any]:
    """``selection.json`` of a folder; empty when absent or unreadable."""
    with contextlib.suppress(OSError, ValueError):
        info = json.loads((folder / SELECTION_FILE).read_text(encoding="utf-8"))
        if isinstance(info, dict):
            return info
    return {}


def selection_k(folder: Path, frame: pd.DataFrame) -> int:
    """Images per seed the study trains on: ``selection.json``'s ``k``, else the most
    ``selected`` candidates any seed has."""
    k = _selection_info(folder).get("k")
    if isinstance(k, int) and not isinstance(k, bool) and k >= 1:
        return k
    if frame.empty:
        return 0
    return int(as_bool(frame["selected"]).groupby(frame["parent_id"], sort=False).sum().max())


def _rank_label(row: pd.Series) -> str:
    """``#3``, ``rejected #1``, ``accepted #6``: how the notes name a candidate."""
    rank = str(row.get("rank", "")).strip()
    name = f"#{rank}" if rank else str(row["image_id"])
    reviewed = str(row.get(REVIEWED, ""))
    return f"{reviewed} {name}" if reviewed else name


def _rank_key(frame: pd.DataFrame) -> pd.Series:
    return pd.to_numeric(frame["rank"], errors="coerce").fillna(float("inf"))


def seed_changes(group: pd.DataFrame, trains: pd.Series) -> tuple[dict[Any, Any], list[str]]:
    """What the review changed for one seed: candidate index -> the index it trains in place
    of, and one note per change (``#3 trains in place of rejected #1``)."""
    selected = as_bool(group["selected"])
    accepted = group[REVIEWED] == "accepted"
    incoming = group[trains & ~selected]
    incoming = incoming.assign(_a=~accepted[incoming.index], _r=_rank_key(incoming))
    incoming = incoming.sort_values(["_a", "_r"], kind="stable")
    outgoing = group[selected & ~trains]
    outgoing = outgoing.iloc[_rank_key(outgoing).argsort(kind="stable")]
    replaces: dict[Any, Any] = {}
    notes = []
    for (new, new_row), (old, old_row) in zip(
        incoming.iterrows(), outgoing.iterrows(), strict=False
    ):
        replaces[new] = old
        notes.append(f"{_rank_label(new_row)} trains in place of {_rank_label(old_row)}")
    for _, row in outgoing.iloc[len(incoming) :].iterrows():
        notes.append(f"{_rank_label(row)} does not train and no candidate is left to replace it")
    for _, row in incoming.iloc[len(outgoing) :].iterrows():
        notes.append(f"{_rank_label(row)} trains")
    return replaces, notes


class ManifestStore:
    """Reads and writes the selected manifest, one decision at a time, under a lock."""

    def __init__(self, run_dir: Path, path: Path, root: Path | None = None) -> None:
        self.run_dir = run_dir.resolve()
        self.path = path
        self.root = (root or serving_root(self.run_dir)).resolve()
        self._lock = threading.Lock()

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
        for column, default in ((REVIEWED, ""), ("selected", "False"), ("rank", "")):
            if column not in frame.columns:
                frame[column] = default
        return frame

    def decide(self, image_id: str, decision: str) -> dict[str, Any] | None:
        """Apply one decision; the candidate's new state, or None for an unknown id."""
        with self._lock:
            frame = self.read()
            hits = frame.index[frame["image_id"] == image_id]
            if len(hits) == 0:
                return None
            frame.loc[hits, REVIEWED] = DECISIONS[decision]
            frame["final"] = final_selection(frame).map(str)
            atomic_write_csv(self.path, frame)
        for seed in self.state(frame)["seeds"]:
            for candidate in seed["candidates"]:
                if candidate["image_id"] == image_id:
                    return dict(candidate)
        return None  # pragma: no cover - the id was just found

    def image_file(self, path: str) -> Path | None:
        """The image a manifest path names, resolved and inside the root; None otherwise."""
        path = path.strip()
        if not path:
            return None
        given = Path(path)
        tries = [given] if given.is_absolute() else [self.path.parent / given, self.root / given]
        for target in tries:
            with contextlib.suppress(OSError, ValueError):
                target = target.resolve()
                if target.is_relative_to(self.root) and target.is_file():
                    return target
        return None

    def url(self, path: str) -> str | None:
        """``/files/...`` URL of an image inside the root; None when there is none."""
        target = self.image_file(path)
        if target is None:
            return None
        return "/files/" + quote(target.relative_to(self.root).as_posix())

    def candidate(self, row: pd.Series, trains: bool = False, replaces: str = "") -> dict[str, Any]:
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
            "trains": trains,
            "in_place_of": replaces,
            "reason": str(row.get("reason", "")),
            "scores": scores,
        }

    def seed(self, parent: str, group: pd.DataFrame, trains: pd.Series) -> dict[str, Any]:
        """One seed with its candidates and what the review changed there."""
        first = group.iloc[0]
        seed_image = self.url(str(first["seed_crop"])) if "seed_crop" in group.columns else None
        replaces, notes = seed_changes(group, trains)
        flags = trains.to_dict()
        sheet = self.path.parent / SHEETS_DIR / f"{safe_name(parent)}.png"
        return {
            "seed_id": parent,
            "label": str(first.get("label", "")),
            "fst": str(first.get("fst", "")),
            "seed_image": seed_image,
            "contact_sheet": self.url(str(sheet)),
            "n_train": int(trains.sum()),
            "notes": notes,
            "candidates": [
                self.candidate(
                    row,
                    bool(flags[index]),
                    _rank_label(group.loc[replaces[index]]) if index in replaces else "",
                )
                for index, row in group.iterrows()
            ],
        }

    def state(self, frame: pd.DataFrame | None = None) -> dict[str, Any]:
        """Every seed with its candidates, in manifest order."""
        frame = self.read() if frame is None else frame
        k = selection_k(self.path.parent, frame)
        trains = pd.Series(frame.index.isin(training_selection(frame, k).index), index=frame.index)
        seeds = [
            self.seed(str(parent), group, trains[group.index])
            for parent, group in frame.groupby("parent_id", sort=False)
        ]
        return {"manifest": self.path.name, "k": k, "seeds": seeds}


def _number(value: str) -> Any:
    try:
        number = float(value)
    except ValueError:
        return value
    return None if math.isnan(number) else number


def allowed_hosts(host: str) -> list[str]:
    """``Host`` header names the server answers to: this machine's, and the bound address."""
    bound = f"[{host}]" if ":" in host and not host.startswith("[") else host
    names = list(LOOPBACK_HOSTS)
    # The middleware treats '*' as a wildcard; a bound address never holds one.
    if bound and "*" not in bound and bound.lower() not in names:
        names.append(bound.lower())
    return names


def create_app(
    run_dir: str | os.PathLike[str], manifest: str | None = None, *, host: str = "127.0.0.1"
) -> Any:
    """The FastAPI app of a reviewed folder (see the module docstring); ``host``: the address
    it is served on, accepted in ``Host`` beside ``localhost``, ``127.0.0.1`` and ``[::1]``."""
    try:
        from fastapi import FastAPI
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse
        from starlette.middleware.trustedhost import TrustedHostMiddleware
    except ImportError:
        raise DermsynthError(NEEDS_EXTRA) from None

    run = Path(run_dir).resolve()
    store = ManifestStore(run, manifest_path(run, manifest))
    store.read()  # a broken manifest is refused at start, not on the first click

    # max_body_size answers 413 from Content-Length alone, before reading the body.
    app = FastAPI(
        title="dermsynth review",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        max_body_size=MAX_BODY_BYTES,
    )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(host))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Any, exc: Exception) -> Any:
        # FastAPI's default repeats the input; a fixed text never echoes what was sent.
        return JSONResponse({"detail": BAD_BODY}, status_code=422)

    _routes(app, store)
    app.state.store = store
    return app


def _routes(app: Any, store: ManifestStore) -> None:
    from fastapi import HTTPException
    from fastapi.responses import FileResponse, HTMLResponse

    from dermsynth.select.review_page import PAGE

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
            raise HTTPException(status_code=404, detail="no such candidate in the manifest")
        return result

    @app.get("/files/{path:path}")
    def files(path: str) -> Any:
        # Resolve first (symlinks and '..' included), then require the result inside the root.
        try:
            target = (store.root / path).resolve()
        except (OSError, ValueError):
            raise HTTPException(status_code=404, detail="not found") from None
        if not target.is_relative_to(store.root):
            raise HTTPException(status_code=403, detail="outside the reviewed folder")
        if target.suffix.lower() not in IMAGE_SUFFIXES or not target.is_file():
            raise HTTPException(status_code=404, detail="not found")
        return FileResponse(target)


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port``; a bad or busy port is a one-line DermsynthError."""
    if isinstance(port, bool) or not 1 <= port <= 65535:
        raise DermsynthError(f"--port {port}: a port must be 1..65535 (default 8765)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError) as exc:
        raise DermsynthError(
            f"--host {host}: not an address of this machine ({exc}); try 127.0.0.1"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":  # elsewhere it lets a restarted server take its port at once
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise DermsynthError(
                f"port {port} on {host} is in use by another program; choose another with --port"
            ) from None
        raise DermsynthError(
            f"cannot listen on port {port} of {host} ({exc.strerror or exc}); "
            "choose another --port or --host"
        ) from None
    return sock


def page_url(host: str, port: int) -> str:
    """The address to open in a browser."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/"


def serve(
    run_dir: str | os.PathLike[str],
    *,
    manifest: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Run the review page until interrupted, holding the folder's lock; ``announce`` gets
    the page's URL once the port is bound."""
    try:
        import uvicorn
    except ImportError:
        raise DermsynthError(NEEDS_EXTRA) from None
    app = create_app(run_dir, manifest, host=host)
    store: ManifestStore = app.state.store
    with FolderLock(run_dir, "a review page"):
        # Only this folder's manifest: a writer of other files here may still be running.
        for tmp in store.path.parent.glob(f".{store.path.name}.*"):
            if is_partial(tmp):
                tmp.unlink(missing_ok=True)
        sock = listen(host, port)
        if announce is not None:
            announce(page_url(host, port))
        config = uvicorn.Config(app, log_level="warning", server_header=False)
        uvicorn.Server(config).run(sockets=[sock])
