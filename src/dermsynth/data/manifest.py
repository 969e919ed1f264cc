"""The manifest: one row per image, the table every stage reads and writes.

Columns every manifest has: ``image_id``, ``path``, ``label``, ``fst`` (1..6, -1 unknown),
``origin`` (``real`` / ``seed`` / ``synthetic``) and ``parent_id`` (the seed of a synthetic
image, empty otherwise). Stages add their own columns (``split``, scores, ``selected``, ...);
columns of the source table are kept as they were.

Tables are validated once, here, at entry; everything downstream trusts the types.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dermsynth.data.fst import FST_TYPES, UNKNOWN_FST
from dermsynth.errors import DermsynthError
from dermsynth.io import atomic_write_csv
from dermsynth.schema import MANIFEST_COLUMNS, ORIGINS, PATH_COLUMNS, coerce

FITZPATRICK17K_COLUMNS: tuple[str, ...] = ("md5hash", "fitzpatrick_scale", "label")
FITZPATRICK17K_FST_COLUMNS: tuple[str, ...] = ("fitzpatrick_scale", "fitzpatrick_centaur")

# The seven conditions of the paper's Table 1, in its column order.
PAPER_CONDITIONS: tuple[str, ...] = (
    "basal cell carcinoma",
    "folliculitis",
    "nematode infection",
    "neutrophilic dermatoses",
    "prurigo nodularis",
    "psoriasis",
    "squamous cell carcinoma",
)
# The conditions the paper augmented with synthetic images.
PAPER_AUGMENTED: tuple[str, ...] = (
    "psoriasis",
    "squamous cell carcinoma",
    "neutrophilic dermatoses",
)

_MAX_LISTED = 5


@dataclass(frozen=True)
class ColumnMap:
    """Which columns of a user's CSV hold the image id, path, label and skin type."""

    image_id: str
    label: str
    fst: str
    path: str | None = None


def read_text_table(csv_path: Path) -> pd.DataFrame:
    """A CSV as text columns (nothing parsed, empty cells empty), or one line saying why not."""
    if not csv_path.exists():
        raise DermsynthError(f"no such file: {csv_path}")
    if csv_path.is_dir():
        raise DermsynthError(f"{csv_path} is a folder; give the CSV file inside it")
    try:
        return pd.read_csv(csv_path, dtype=str, keep_default_na=False, na_values=[])
    except pd.errors.EmptyDataError:
        raise DermsynthError(
            f"{csv_path}: the file is empty; expected a CSV with a header row"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DermsynthError(f"{csv_path}: not a readable CSV ({exc})") from None


def is_fitzpatrick17k(columns: Iterable[str]) -> bool:
    """True when a table has the Fitzpatrick 17k annotation schema."""
    return set(FITZPATRICK17K_COLUMNS) <= set(columns)


def _require_columns(
    csv_path: Path, frame: pd.DataFrame, needed: Sequence[str], hint: str = ""
) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        found = ", ".join(frame.columns[:20])
        raise DermsynthError(
            f"{csv_path}: missing column(s) {', '.join(repr(c) for c in missing)}; "
            f"columns found: {found}{hint}"
        )


def _rows(mask: pd.Series) -> list[int]:
    """Positions of True values as 1-based data-row numbers."""
    return [int(i) + 1 for i in mask.to_numpy().nonzero()[0]]


def _where(csv_path: Path, row: int) -> str:
    return f"{csv_path}, row {row} (line {row + 1})"


def _parse_fst(csv_path: Path, values: pd.Series, column: str) -> pd.Series:
    text = values.str.strip()
    numeric = pd.to_numeric(text, errors="coerce")
    valid = set(FST_TYPES) | {UNKNOWN_FST}
    ok = numeric.notna() & (numeric == numeric.round()) & numeric.isin(valid)
    if not ok.all():
        bad = _rows(~ok)
        first = bad[0]
        more = f" ({len(bad) - 1} more rows like it)" if len(bad) > 1 else ""
        shown = text.iloc[first - 1]
        raise DermsynthError(
            f"{_where(csv_path, first)}: {column} must be 1..6 or -1 (unknown), got {shown!r}{more}"
        )
    return numeric.astype(int)


def check_ids(csv_path: Path, ids: pd.Series, column: str) -> None:
    """Refuse empty and duplicated image ids, naming the rows."""
    empty = ids.str.strip() == ""
    if empty.any():
        raise DermsynthError(f"{_where(csv_path, _rows(empty)[0])}: empty {column}")
    dup = ids.duplicated(keep=False)
    if dup.any():
        first_id = ids[dup].iloc[0]
        rows = _rows(ids == first_id)[:_MAX_LISTED]
        n_ids = ids[dup].nunique()
        more = f"; {n_ids - 1} more duplicated ids" if n_ids > 1 else ""
        raise DermsynthError(
            f"{csv_path}: duplicate {column} {first_id!r} in rows "
            f"{', '.join(map(str, rows))}{more}; every image needs its own id"
        )


def check_labels(csv_path: Path, labels: pd.Series, column: str) -> None:
    """Refuse empty labels, naming the rows."""
    empty = labels.str.strip() == ""
    if empty.any():
        rows = _rows(empty)
        more = f" ({len(rows) - 1} more rows like it)" if len(rows) > 1 else ""
        raise DermsynthError(f"{_where(csv_path, rows[0])}: empty {column}{more}")


def _column_map(
    csv_path: Path,
    frame: pd.DataFrame,
    fst_column: str | None,
    id_column: str | None,
    label_column: str | None,
    path_column: str | None,
) -> tuple[ColumnMap, str]:
    """Which columns hold what, and what kind of table it is (manifest, fitzpatrick17k, csv)."""
    columns = set(frame.columns)
    named = any(c is not None for c in (id_column, label_column, path_column))
    if not named and {"image_id", "label", "fst"} <= columns and fst_column in (None, "fst"):
        return ColumnMap(
            "image_id", "label", "fst", "path" if "path" in columns else None
        ), "manifest"
    if not named and is_fitzpatrick17k(columns):
        cmap = ColumnMap("md5hash", "label", fst_column or "fitzpatrick_scale", None)
        hint = f"; FST columns of Fitzpatrick 17k: {', '.join(FITZPATRICK17K_FST_COLUMNS)}"
        _require_columns(csv_path, frame, [cmap.fst], hint)
        return cmap, "fitzpatrick17k"
    if id_column is None or label_column is None or fst_column is None:
        found = ", ".join(frame.columns[:20])
        raise DermsynthError(
            f"{csv_path}: not a Fitzpatrick 17k table nor a dermsynth manifest; name its "
            f"columns with --id-column, --label-column and --fst-column (and --path-column "
            f"if it has one). Columns found: {found}"
        )
    cmap = ColumnMap(id_column, label_column, fst_column, path_column)
    _require_columns(
        csv_path, frame, [c for c in (id_column, label_column, fst_column, path_column) if c]
    )
    return cmap, "csv"


def _image_paths(
    csv_path: Path,
    frame: pd.DataFrame,
    ids: pd.Series,
    cmap: ColumnMap,
    source: str,
    images_dir: str | os.PathLike[str] | None,
) -> pd.Series:
    """Each row's image path: the path column (joined to ``images_dir``), else ``<id>.jpg``."""
    base = Path(images_dir) if images_dir is not None else None
    if cmap.path is not None:
        raw = frame[cmap.path].str.strip()
        if base is None:
            return raw
        return raw.map(lambda p: str(base / p) if p and not os.path.isabs(p) else p)
    if source == "fitzpatrick17k":
        folder = base if base is not None else default_images_dir(csv_path)
        return ids.map(lambda i: str(folder / f"{i}.jpg"))
    return ids.map(lambda i: str(base / f"{i}.jpg")) if base is not None else ids.map(lambda _: "")


def load_manifest(
    csv_path: str | os.PathLike[str],
    *,
    fst_column: str | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    path_column: str | None = None,
    images_dir: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Load and validate a table of images into a manifest.

    Three inputs are understood: a dermsynth manifest (has ``image_id``, ``label``, ``fst``;
    the columns stages add come back in their dtypes, :mod:`dermsynth.schema`), the
    Fitzpatrick 17k table (``md5hash``, ``label``, ``fitzpatrick_scale``; FST from
    ``fst_column``, default ``fitzpatrick_scale``; image ``<images_dir>/<md5hash>.jpg``), or
    any CSV whose id, label and FST columns are named (path column optional).
    """
    csv_path = Path(csv_path)
    frame = read_text_table(csv_path)
    if frame.empty:
        raise DermsynthError(f"{csv_path}: the table has a header but no rows")
    cmap, source = _column_map(csv_path, frame, fst_column, id_column, label_column, path_column)
    ids = frame[cmap.image_id].str.strip()
    check_ids(csv_path, ids, cmap.image_id)
    labels = frame[cmap.label].str.strip()
    check_labels(csv_path, labels, cmap.label)
    columns = set(frame.columns)
    out = pd.DataFrame(
        {
            "image_id": ids,
            "path": _image_paths(csv_path, frame, ids, cmap, source, images_dir),
            "label": labels,
            "fst": _parse_fst(csv_path, frame[cmap.fst], cmap.fst),
            "origin": frame["origin"].str.strip() if "origin" in columns else "real",
            "parent_id": frame["parent_id"].str.strip() if "parent_id" in columns else "",
        }
    )
    _check_origins(csv_path, out["origin"])
    used = {cmap.image_id, cmap.label, cmap.path, *MANIFEST_COLUMNS}
    if source != "fitzpatrick17k":
        used.add(cmap.fst)
    extra = frame[[c for c in frame.columns if c not in used]]
    if source == "manifest":
        try:
            extra = coerce(extra)
        except ValueError as exc:
            raise DermsynthError(f"{csv_path}: {exc}") from None
    out = pd.concat([out, extra], axis=1)
    if source == "manifest":
        out = resolve_manifest_paths(out, csv_path.resolve().parent)
    out.attrs.update(source=source, csv=str(csv_path), fst_column=cmap.fst)
    return out


def resolve_manifest_paths(frame: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """Relative paths of a manifest read back as absolute: beside the manifest (how
    :func:`write_manifest` stores them), unless only the working folder has the file."""

    def one(value: object) -> object:
        if not isinstance(value, str) or not value or os.path.isabs(value):
            return value
        beside = folder / value
        if not beside.exists() and Path(value).exists():
            return os.path.abspath(value)
        return os.path.normpath(beside)

    for column in PATH_COLUMNS:
        if column in frame.columns:
            frame[column] = frame[column].map(one)
    return frame


def relative_paths(frame: pd.DataFrame, folder: Path, root: Path) -> pd.DataFrame:
    """``frame`` with every absolute path under ``root`` written relative to ``folder`` (the
    manifest's folder); other paths as they are."""
    folder, root = Path(os.path.abspath(folder)), Path(os.path.abspath(root))

    def one(value: object) -> object:
        if not isinstance(value, str) or not os.path.isabs(value):
            return value
        absolute = Path(os.path.normpath(value))
        if absolute == root or root in absolute.parents:
            return Path(os.path.relpath(absolute, folder)).as_posix()
        return value

    columns = [c for c in PATH_COLUMNS if c in frame.columns]
    if not columns:
        return frame
    out = frame.copy()
    for column in columns:
        out[column] = out[column].map(one)
    return out


def _check_origins(csv_path: Path, origins: pd.Series) -> None:
    bad = ~origins.isin(ORIGINS)
    if bad.any():
        row = _rows(bad)[0]
        raise DermsynthError(
            f"{_where(csv_path, row)}: origin must be one of {', '.join(ORIGINS)}, "
            f"got {origins.iloc[row - 1]!r}"
        )


def default_images_dir(csv_path: Path) -> Path:
    """Where a table's images are when no folder is given: ``images/`` beside it, else beside it."""
    images = csv_path.parent / "images"
    return images if images.is_dir() else csv_path.parent


def write_manifest(
    manifest: pd.DataFrame,
    path: str | os.PathLike[str],
    first: Sequence[str] = MANIFEST_COLUMNS,
    *,
    root: str | os.PathLike[str] | None = None,
) -> Path:
    """Write a manifest as CSV, atomically, the ``first`` columns (manifest columns) first.

    Paths of files under ``root`` (default: the manifest's folder; a study passes its own
    folder) are stored relative to the manifest's folder, others absolute, so a moved folder
    reads back whole (:func:`load_manifest` resolves them).
    """
    folder = Path(path).parent
    manifest = relative_paths(manifest, folder, Path(root) if root is not None else folder)
    first = [c for c in first if c in manifest.columns]
    rest = [c for c in manifest.columns if c not in first]
    atomic_write_csv(path, manifest[first + rest])
    return Path(path)


def known_fst(manifest: pd.DataFrame) -> pd.DataFrame:
    """Rows with a known skin type (unknown, -1, is left out of every analysis)."""
    return manifest[manifest["fst"] != UNKNOWN_FST]


def parse_conditions(text: str | Sequence[str] | None) -> list[str] | None:
    """Split ``"a,b"`` (or a list) into condition names; None stays None."""
    if text is None:
        return None
    items = [text] if isinstance(text, str) else list(text)
    names = [n.strip() for item in items for n in item.split(",") if n.strip()]
    if not names:
        raise DermsynthError("--conditions is empty; give names like 'psoriasis,folliculitis'")
    seen: set[str] = set()
    for name in names:
        key = normalise_name(name)
        if key in seen:
            raise DermsynthError(f"condition {name!r} is given twice")
        seen.add(key)
    return names


def normalise_name(name: str) -> str:
    """A label or condition compared without case, underscores or extra spaces."""
    return " ".join(name.lower().replace("_", " ").split())


def resolve_conditions(requested: Sequence[str], available: Iterable[str]) -> list[str]:
    """Map requested names onto the table's labels (case and spacing forgiven).

    An unknown name is refused with the closest labels suggested.
    """
    labels = sorted(set(available))
    lookup = {normalise_name(label): label for label in labels}
    resolved: list[str] = []
    for name in requested:
        key = normalise_name(name)
        if key in lookup:
            resolved.append(lookup[key])
            continue
        close = difflib.get_close_matches(key, list(lookup), n=3, cutoff=0.5)
        if not close:
            close = [k for k in lookup if key in k or k in key][:3]
        suggestion = (
            f"; closest: {', '.join(repr(lookup[c]) for c in close)}"
            if close
            else f"; the table has {len(labels)} conditions (see `dermsynth data summary`)"
        )
        raise DermsynthError(f"unknown condition {name!r}{suggestion}")
    return resolved
