"""Score every candidate, exclude leaks, keep the top k per seed, explain every decision.

Input: a candidate manifest (``dermsynth generate``'s ``manifest.csv``: rows with
``origin=synthetic``, ``parent_id`` = the seed's image id, ``fst`` = the requested type, and the
provenance columns, among them ``seed_crop`` and ``seed_mask``). Each candidate's seed image is
its ``seed_crop`` (the exact square the generator saw) where that file exists, else the row of
its ``parent_id`` in the candidate manifest or in the seed manifest given.

:func:`select_candidates` reads top to bottom: read the candidates, score them
(:func:`score_candidates`), guard against leakage (:func:`leakage_columns`), combine and rank
(:func:`rank_candidates`), write (:func:`write_selection`). The written manifest has the
candidate rows with these columns added (:data:`dermsynth.schema.SELECTION_COLUMNS`):

==================  ==========================================================================
``ita``             ITA (degrees) of the candidate's healthy skin (:mod:`.tone`)
``fst_estimated``   the FST that ITA maps to (Kinyanjui thresholds unless told otherwise)
``skin_fallback``   True where too few skin-coloured pixels were found (whole region used)
``score_tone``      agreement of ``fst_estimated`` with the requested ``fst``: 1 - |d| / 5
``score_pathology`` probability of the intended condition (classifier or CLIP); absent when
                    neither is given
``similarity``      cosine similarity of the candidate's embedding to its seed's
``flag_similarity`` ``copy`` (too close), ``drift`` (too far) or empty
``score_similarity`` 1 inside the band, lower outside (:mod:`.similarity`)
``blur``            variance of the Laplacian (higher = sharper)
``clipped``         share of clipped pixels
``colour_cast``     a*b* shift of the mean colour from the seed's
``score_quality``   mean of the three quality sub-scores (:mod:`.quality`)
``leak_distance``   phash distance to the nearest test image (empty without test images)
``leak_nearest``    that test image's id
``excluded``        True for leaks and unreadable images, whatever their scores
``score``           weighted mean of the available scores (each in [0, 1]; a row's missing
                    score drops out of its mean)
``rank``            rank among the seed's non-excluded candidates (1 = best); empty if excluded
``selected``        True for the top ``k`` of each seed
``reviewed``        a person's decision from the review page: ``accepted``, ``rejected`` or empty
``final``           ``reviewed`` overriding ``selected``
``reason``          one sentence per decision, e.g. ``kept: rank 2 of 8 (score 0.81)``
==================  ==========================================================================

What a study trains on is :func:`training_selection`: a reviewer's accepted images first, then
the best-ranked of the rest, k per seed (a rejection makes room for the next-best candidate).
Beside the manifest: ``contact_sheets/<seed_id>.png`` and ``selection.json`` (the settings used,
the weights, the notes; the review page reads the manifest's name and k from it).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from dermsynth.config import SCORES, ScoreName, SelectionConfig
from dermsynth.data.images import BadImageError, load_rgb
from dermsynth.data.manifest import load_manifest, write_manifest
from dermsynth.errors import DermsynthError
from dermsynth.io import atomic_write_json
from dermsynth.schema import REVIEW_VALUES, SELECTION_COLUMNS, SYNTHETIC, as_bool

SELECTION_FILE = "selection.json"
SHEETS_DIR = "contact_sheets"
REVIEWED = "reviewed"
DEFAULT_WEIGHTS: dict[str, float] = dict(SelectionConfig().weights.items())
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_PER_IMAGE = (
    "ita",
    "fst_estimated",
    "skin_fallback",
    "score_tone",
    "similarity",
    "flag_similarity",
    "score_similarity",
    "blur",
    "clipped",
    "colour_cast",
    "score_quality",
)


@dataclass
class SelectionResult:
    """The written manifest, its path, the contact sheets and what the user should know."""

    manifest: pd.DataFrame
    path: Path
    sheets: list[Path]
    notes: list[str]


@dataclass
class Candidates:
    """Candidate rows (image paths resolved) with their seeds' images and lesion masks."""

    source: Path
    rows: pd.DataFrame
    seed_paths: dict[str, str]
    masks: pd.Series
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- inputs


def parse_weights(
    text: str | Mapping[str, Any] | None, base: Mapping[str, float] | None = None
) -> dict[str, float]:
    """``"tone=1,pathology=0.5"`` (or a mapping) over ``base`` (default weights).

    Names must be scorers (tone, pathology, similarity, quality); weights >= 0, not all 0.
    """
    weights = dict(base if base is not None else DEFAULT_WEIGHTS)
    for name, value in _weight_items(text):
        weights[name] = _weight_value(name, value)
    if not any(w > 0 for w in weights.values()):
        raise DermsynthError("--weights: at least one weight must be > 0")
    return weights


def _weight_items(text: str | Mapping[str, Any] | None) -> Iterator[tuple[str, Any]]:
    if text is None:
        return
    if not isinstance(text, str):
        yield from text.items()
        return
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "=" not in part:
            raise DermsynthError(f"--weights: {part!r} is not name=value (e.g. tone=1,quality=0.5)")
        name, value = part.split("=", 1)
        yield name.strip(), value.strip()


def _weight_value(name: str, value: Any) -> float:
    if name not in SCORES:
        raise DermsynthError(f"--weights: unknown score {name!r}; scores are {', '.join(SCORES)}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DermsynthError(f"--weights: {name}={value!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise DermsynthError(f"--weights: {name} must be a number >= 0, got {value!r}")
    return number


def _resolve(path: str, base: Path) -> str:
    """A relative image path as given if it exists, else against the manifest's folder."""
    path = (path or "").strip()
    if not path or os.path.isabs(path) or Path(path).exists():
        return path
    beside = base / path
    return str(beside) if beside.exists() else path


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        return pd.Series("", index=frame.index, dtype=object)
    return frame[column].fillna("").astype(str).str.strip()


def safe_name(image_id: str) -> str:
    """A file name for an id (contact sheets): unsafe characters become ``_``."""
    name = _UNSAFE.sub("_", str(image_id))
    return name if name and not name.startswith(".") else f"_{name}"


def _listed(items: list[str], limit: int) -> str:
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _seed_images(
    candidates: pd.DataFrame, others: pd.DataFrame, seeds: pd.DataFrame | None, base: Path
) -> dict[str, str]:
    """Seed id -> image path for every ``parent_id``; refuse missing seeds, naming them."""
    found: dict[str, str] = {}
    crops = _text(candidates, "seed_crop").map(lambda p: _resolve(p, base))
    for parent, crop in zip(candidates["parent_id"], crops, strict=True):
        if parent not in found and crop and Path(crop).is_file():
            found[parent] = crop
    for table in (others, seeds):
        if table is None or table.empty:
            continue
        for image_id, path in zip(table["image_id"], table["path"], strict=True):
            if image_id not in found and path:
                found[image_id] = path
    parents = list(dict.fromkeys(candidates["parent_id"]))
    lost = [p for p in parents if p not in found]
    if lost:
        raise DermsynthError(
            f"the candidate manifest lacks the seed image of {len(lost)} of {len(parents)} seed(s): "
            f"{_listed([repr(p) for p in lost], 5)}; it has neither a seed_crop file nor a row "
            "for them. Give the seed manifest (the plan used to generate) with --seeds"
        )
    absent = [p for p in parents if not Path(found[p]).is_file()]
    if absent:
        shown = ", ".join(f"{p!r} ({found[p]})" for p in absent[:3])
        raise DermsynthError(
            f"seed image(s) missing on disk: {shown}; fix the paths or give --seeds"
        )
    return {p: found[p] for p in parents}


def read_candidates(
    candidates_csv: str | os.PathLike[str], seeds_csv: str | os.PathLike[str] | None = None
) -> Candidates:
    """The candidate rows of a manifest with their seeds; refuses manifests without candidates."""
    source = Path(candidates_csv)
    manifest = load_manifest(source)
    base = source.resolve().parent
    manifest["path"] = manifest["path"].map(lambda p: _resolve(p, base))
    is_candidate = manifest["origin"] == SYNTHETIC
    if not is_candidate.any():
        raise DermsynthError(
            f"{source}: no candidate rows (origin == 'synthetic'); give the manifest "
            "written by `dermsynth generate`"
        )
    rows = manifest[is_candidate].reset_index(drop=True)
    no_parent = rows["parent_id"] == ""
    if no_parent.any():
        raise DermsynthError(
            f"{source}: candidate {rows['image_id'][no_parent].iloc[0]!r} has no parent_id "
            f"({int(no_parent.sum())} such row(s)); every candidate must name its seed"
        )
    seeds = None
    if seeds_csv is not None:
        seeds = load_manifest(seeds_csv)
        seed_base = Path(seeds_csv).resolve().parent
        seeds["path"] = seeds["path"].map(lambda p: _resolve(p, seed_base))
    others = manifest[~is_candidate].reset_index(drop=True)
    seed_paths = _seed_images(rows, others, seeds, base)
    masks = _text(rows, "seed_mask").map(lambda p: _resolve(p, base))
    return Candidates(source, rows, seed_paths, masks)


def _read_lesion_mask(path: str) -> np.ndarray | None:
    if not path or not Path(path).is_file():
        return None
    from PIL import Image

    try:
        with Image.open(path) as handle:
            return np.asarray(handle.convert("L"))
    except OSError:
        return None


def ita_thresholds(options: SelectionConfig, notes: list[str]) -> tuple[float, ...]:
    """The ITA thresholds of the tone score: a named table, five numbers, or fitted."""
    from dermsynth.select.tone import fit_empirical_thresholds, resolve_thresholds, tone_score

    spec = options.ita_thresholds
    if not (isinstance(spec, str) and spec.strip().lower() == "empirical"):
        return resolve_thresholds(spec)
    if options.fit_manifest is None:
        raise DermsynthError(
            "--ita-thresholds empirical needs --fit-manifest: labelled real images to fit "
            "the thresholds on"
        )
    labelled = load_manifest(options.fit_manifest)
    base = Path(options.fit_manifest).resolve().parent
    itas, types = [], []
    for path, fst in zip(labelled["path"], labelled["fst"], strict=True):
        rgb, _ = _load_array(_resolve(str(path), base)) if fst >= 1 else (None, "")
        if rgb is not None:
            itas.append(tone_score(rgb, int(fst)).ita)
            types.append(int(fst))
    fitted = fit_empirical_thresholds(itas, types)
    notes.append(
        f"empirical ITA thresholds fitted on {len(itas)} image(s) of {options.fit_manifest}: "
        + ", ".join(f"{t:.1f}" for t in fitted)
    )
    return fitted


def _load_array(path: str) -> tuple[np.ndarray | None, str]:
    try:
        return np.asarray(load_rgb(path, min_size=8)), ""
    except BadImageError as exc:
        return None, exc.reason
    except (OSError, ValueError) as exc:
        return None, f"cannot read ({exc})"


# --------------------------------------------------------------------------- scoring


@dataclass
class _Scorers:
    """What scores one seed's candidates: thresholds, embedder and its band, CLIP."""

    options: SelectionConfig
    thresholds: tuple[float, ...]
    embedder: Any
    copy: float
    drift: float
    clip: Any = None


def build_scorers(options: SelectionConfig, notes: list[str]) -> _Scorers:
    """The ITA thresholds, the seed-similarity embedder and its band, and CLIP if asked."""
    from dermsynth.select.similarity import default_thresholds, make_embedder

    embedder = make_embedder(
        options.embedder, weights=options.embedder_weights, device=_auto(options.device)
    )
    copy_t, drift_t = default_thresholds(embedder)
    clip = None
    if options.clip is not None:
        from dermsynth.select.pathology import load_clip

        clip = load_clip(options.clip, device=_auto(options.device))
    return _Scorers(
        options,
        ita_thresholds(options, notes),
        embedder,
        options.copy_threshold if options.copy_threshold is not None else copy_t,
        options.drift_threshold if options.drift_threshold is not None else drift_t,
        clip,
    )


def _score_image(
    rgb: np.ndarray, seed_rgb: np.ndarray, fst: int, mask: str, scorers: _Scorers
) -> dict[str, Any]:
    """Tone and quality of one candidate."""
    from dermsynth.select.quality import quality_score
    from dermsynth.select.tone import tone_score

    tone = tone_score(rgb, fst, lesion_mask=_read_lesion_mask(mask), thresholds=scorers.thresholds)
    quality = quality_score(rgb, seed_rgb, scorers.options.quality)
    return {
        "ita": tone.ita,
        "fst_estimated": tone.fst_estimated,
        "skin_fallback": tone.fallback,
        "score_tone": tone.score,
        "blur": quality.blur,
        "clipped": quality.clipped,
        "colour_cast": quality.colour_cast,
        "score_quality": quality.score,
    }


def _score_seed(
    cands: Candidates,
    parent: str,
    positions: Iterable[int],
    scorers: _Scorers,
    unreadable: dict[int, str],
) -> dict[int, dict[str, Any]]:
    """Every score of one seed's candidates (similarity needs the seed and all its siblings)."""
    from dermsynth.select.similarity import cosine, similarity_scores

    seed_rgb, why = _load_array(cands.seed_paths[parent])
    if seed_rgb is None:
        raise DermsynthError(f"seed {parent!r}: {cands.seed_paths[parent]}: {why}")
    scored: dict[int, dict[str, Any]] = {}
    arrays: list[np.ndarray] = []
    for pos in positions:
        rgb, why = _load_array(str(cands.rows.at[pos, "path"]))
        if rgb is None:
            unreadable[int(pos)] = why or "unreadable"
            continue
        fst = int(cast(int, cands.rows.at[pos, "fst"]))  # pandas-stubs: a cell is any scalar
        scored[int(pos)] = _score_image(rgb, seed_rgb, fst, cands.masks[pos], scorers)
        arrays.append(rgb)
    if not arrays:
        return scored
    vectors = scorers.embedder([seed_rgb, *arrays])
    sims = cosine(vectors[1:], np.repeat(vectors[:1], len(arrays), axis=0))
    scores, flags = similarity_scores(sims, scorers.copy, scorers.drift)
    for j, pos in enumerate(scored):
        scored[pos].update(
            similarity=float(sims[j]), score_similarity=float(scores[j]), flag_similarity=flags[j]
        )
    if scorers.clip is not None:
        _clip_seed(cands, list(scored), arrays, scorers, scored)
    return scored


def _clip_seed(
    cands: Candidates,
    readable: list[int],
    arrays: list[np.ndarray],
    scorers: _Scorers,
    scored: dict[int, dict[str, Any]],
) -> None:
    from dermsynth.select.pathology import clip_scores

    labels = [str(cands.rows.at[p, "label"]) for p in readable]
    classes = scorers.options.clip_classes or sorted(set(cands.rows["label"]))
    values = clip_scores(scorers.clip, arrays, labels, list(classes))
    for pos, value in zip(readable, values, strict=True):
        scored[pos]["score_pathology"] = float(value)


def pathology_scores(
    cands: Candidates, options: SelectionConfig, notes: list[str]
) -> pd.Series | None:
    """Probability of each candidate's condition under the classifier (None without one).

    Run before the slow per-image work, so a classifier of the wrong conditions is refused first.
    """
    if options.classifier is not None:
        from dermsynth.select.pathology import classifier_scores

        return classifier_scores(options.classifier, cands.rows, device=_auto(options.device))
    if options.clip is None and options.weights.get("pathology", 0) > 0:
        notes.append(
            f"no --classifier or --clip given: pathology not scored, its weight "
            f"({options.weights['pathology']:g}) dropped"
        )
    return None


def score_candidates(
    cands: Candidates, scorers: _Scorers, pathology: pd.Series | None, notes: list[str]
) -> tuple[pd.DataFrame, dict[int, str]]:
    """The per-image score columns of every candidate, and the unreadable ones with why."""
    options = scorers.options
    unreadable: dict[int, str] = {}
    scored: dict[int, dict[str, Any]] = {}
    for parent, positions in cands.rows.groupby("parent_id", sort=False).indices.items():
        scored.update(_score_seed(cands, str(parent), positions, scorers, unreadable))
    n = len(cands.rows)
    if len(unreadable) == n:
        pos, why = next(iter(unreadable.items()))
        raise DermsynthError(
            f"none of the {n} candidate image(s) could be read (first: {cands.rows.at[pos, 'path']!s}: "
            f"{why}); are the paths relative to another folder?"
        )
    if unreadable:
        notes.append(f"{len(unreadable)} candidate image(s) missing or unreadable: excluded")
    if scorers.clip is not None and len(set(cands.rows["label"])) < 2 and not options.clip_classes:
        notes.append("CLIP with one condition only: pathology score is the image-prompt cosine")
    scores = _score_frame(cands.rows.index, scored)
    if pathology is not None:
        scores["score_pathology"] = pathology.astype(float)
    elif scorers.clip is not None:
        values = {pos: s.get("score_pathology", np.nan) for pos, s in scored.items()}
        scores["score_pathology"] = pd.Series(values, index=cands.rows.index, dtype=float)
    return scores, unreadable


def _score_frame(index: pd.Index, scored: dict[int, dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(None, index=index, dtype=object) for c in _PER_IMAGE})
    for pos, values in scored.items():
        for column in _PER_IMAGE:
            frame.at[pos, column] = values.get(column)
    for column in _PER_IMAGE:
        if column not in ("fst_estimated", "skin_fallback", "flag_similarity"):
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["fst_estimated"] = pd.to_numeric(frame["fst_estimated"], errors="coerce").astype("Int64")
    return frame


def leakage_columns(
    rows: pd.DataFrame,
    unreadable: Mapping[int, str],
    test_csv: str | os.PathLike[str] | None,
    notes: list[str],
    *,
    progress: bool = False,
) -> tuple[pd.Series, pd.Series]:
    """Each candidate's phash distance to its nearest test image, and that image's id."""
    from dermsynth.select.leakage import nearest_test_image, select_test_rows

    distance = pd.Series(np.nan, index=rows.index, dtype=float)
    nearest = pd.Series("", index=rows.index, dtype=object)
    if test_csv is None:
        notes.append(
            "no --plan or --test-images given: leakage guard off (no test images to compare)"
        )
        return distance, nearest
    tests = select_test_rows(load_manifest(test_csv))
    test_base = Path(test_csv).resolve().parent
    tests = tests.assign(path=tests["path"].map(lambda p: _resolve(p, test_base)))
    leak = nearest_test_image(rows.drop(index=list(unreadable)), tests, progress=progress)
    distance.loc[leak.distance.index] = leak.distance
    nearest.loc[leak.nearest.index] = leak.nearest
    if leak.skipped_test:
        notes.append(
            f"{len(leak.skipped_test)} of {len(tests)} test image(s) unreadable: the leakage "
            f"guard compared with {leak.n_test} (first problem: {leak.skipped_test[0][1]})"
        )
    return distance, nearest


# --------------------------------------------------------------------------- ranking


def combined_score(
    frame: pd.DataFrame, weights: Mapping[ScoreName, float]
) -> tuple[np.ndarray, dict[str, float]]:
    """Weighted mean of the scores present (a row's NaN score leaves its mean), and the weights
    that took part."""
    used: dict[str, float] = {
        name: w for name, w in weights.items() if w > 0 and f"score_{name}" in frame.columns
    }
    if not used:
        raise DermsynthError(
            "every score with a weight > 0 is unavailable (pathology needs --classifier or --clip); "
            "give weights to tone, similarity or quality"
        )
    values = np.column_stack(
        [frame[f"score_{k}"].astype(float).clip(0, 1).to_numpy() for k in used]
    )
    w = np.array(list(used.values()), dtype=float)
    present = ~np.isnan(values)
    denom = (present * w).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        combined = np.where(denom > 0, (np.nan_to_num(values) * w).sum(axis=1) / denom, 0.0)
    return combined, used


def _exclusion_reasons(
    frame: pd.DataFrame, leaks: pd.Series, unreadable: Mapping[int, str]
) -> pd.Series:
    reasons = pd.Series("", index=frame.index, dtype=object)
    for pos, why in unreadable.items():
        reasons.at[pos] = f"excluded: image unreadable ({why})"
    for pos in frame.index[leaks]:
        # pandas-stubs types a cell as any scalar: the casts name what the column holds
        reasons.at[pos] = (
            f"excluded: leakage (phash distance {int(cast(float, frame.at[pos, 'leak_distance']))} "
            f"to test image {frame.at[pos, 'leak_nearest']!s})"
        )
    return reasons


def rank_candidates(frame: pd.DataFrame, k: int, notes: list[str]) -> pd.DataFrame:
    """``rank``, ``selected`` and ``reason`` per candidate: the seed's usable candidates by
    score (ties by id), the top ``k`` kept; ``frame`` has ``score`` and ``excluded``."""
    ranks = pd.Series(pd.NA, index=frame.index, dtype="Int64")
    selected = pd.Series(False, index=frame.index, dtype=bool)
    reasons = frame["reason"].copy()
    for parent, positions in frame.groupby("parent_id", sort=False).indices.items():
        group = frame.iloc[positions]
        usable = group[~group["excluded"]]
        order = usable.sort_values(
            ["score", "image_id"], ascending=[False, True], kind="stable"
        ).index
        for rank, pos in enumerate(order, start=1):
            ranks.at[pos] = rank
            selected.at[pos] = rank <= k
            # pandas-stubs types a cell as any scalar: the cast names what the column holds
            text = f"{'kept' if rank <= k else 'dropped'}: rank {rank} of {len(order)} (score {cast(float, frame.at[pos, 'score']):.2f})"
            if frame.at[pos, "flag_similarity"]:
                text += f"; similarity: {frame.at[pos, 'flag_similarity']!s}"
            reasons.at[pos] = text
        if len(order) < k:
            notes.append(
                f"seed {parent}: only {len(order)} usable candidate(s) of {len(group)}, fewer than "
                f"k={k}; kept all {len(order)}"
            )
    return frame.assign(rank=ranks, selected=selected, reason=reasons)


def final_selection(frame: pd.DataFrame) -> pd.Series:
    """``reviewed`` overrides ``selected``: accepted -> True, rejected -> False."""
    reviewed = _text(frame, REVIEWED)
    if "selected" in frame.columns:
        final = as_bool(frame["selected"]).copy()
    else:
        final = pd.Series(False, index=frame.index, dtype=bool)
    final[reviewed == "accepted"] = True
    final[reviewed == "rejected"] = False
    return final


def training_selection(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """The ``k`` synthetic images per seed to train on: a reviewer's accepted images first, then
    the best-ranked of the rest; excluded and rejected images never. A rejection thus makes
    room for the next-best candidate of that seed."""
    reviewed = _text(frame, REVIEWED).str.lower()
    excluded = (
        as_bool(frame["excluded"])
        if "excluded" in frame.columns
        else pd.Series(False, index=frame.index)
    )
    usable = frame[~excluded & (reviewed != "rejected")]
    rank = frame["rank"] if "rank" in frame.columns else pd.Series(np.nan, index=frame.index)
    usable = usable.assign(
        _accepted=(reviewed != "accepted").loc[usable.index],
        _rank=pd.to_numeric(rank.loc[usable.index], errors="coerce").astype(float).fillna(math.inf),
    )
    usable = usable.sort_values(["parent_id", "_accepted", "_rank", "image_id"], kind="stable")
    kept = usable.groupby("parent_id", sort=False).head(k)
    return kept.drop(columns=["_accepted", "_rank"])


def _previous_reviews(out: Path, result: pd.DataFrame, notes: list[str]) -> pd.Series:
    """Keep a person's decisions from an earlier selection written to the same file."""
    reviewed = pd.Series("", index=result.index, dtype=object)
    if not out.is_file():
        return reviewed
    try:
        old = pd.read_csv(out, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError):
        return reviewed
    if REVIEWED not in old.columns or "image_id" not in old.columns:
        return reviewed
    decisions = dict(zip(old["image_id"], old[REVIEWED], strict=True))
    kept = result["image_id"].map(lambda i: decisions.get(i, "")).fillna("")
    kept = kept.where(kept.isin(REVIEW_VALUES), "")
    if (kept != "").any():
        notes.append(
            f"kept {int((kept != '').sum())} review decision(s) from the earlier {out.name}"
        )
    return kept.astype(object)


# --------------------------------------------------------------------------- writing


def _tidy(frame: pd.DataFrame, *, drop_pathology: bool) -> pd.DataFrame:
    frame = frame.copy()
    for name in (
        "ita",
        "score_tone",
        "score_pathology",
        "similarity",
        "score_similarity",
        "clipped",
        "score_quality",
        "score",
    ):
        if name in frame.columns:
            frame[name] = frame[name].astype(float).round(4)
    for name in ("blur", "colour_cast"):
        frame[name] = frame[name].astype(float).round(2)
    frame["leak_distance"] = frame["leak_distance"].astype(float).astype("Int64")
    frame["flag_similarity"] = frame["flag_similarity"].fillna("")
    frame["skin_fallback"] = frame["skin_fallback"].map(lambda v: "" if v is None else bool(v))
    if drop_pathology:
        frame = frame.drop(columns="score_pathology")
    return frame


def write_contact_sheets(
    result: pd.DataFrame, seed_paths: Mapping[str, str], folder: Path
) -> list[Path]:
    """One sheet per seed: the seed, then its candidates in manifest order, decisions marked."""
    from dermsynth.select.contact import Tile, write_contact_sheet

    written = []
    for parent, group in result.groupby("parent_id", sort=False):
        tiles = [Tile(seed_paths.get(str(parent)), "seed", ("seed", str(parent)))]
        for row in group.itertuples(index=False):
            if bool(row.excluded):
                kind, head = "excluded", "excluded"
                detail = "leakage" if "leakage" in str(row.reason) else "unreadable"
            else:
                kind = "kept" if bool(row.selected) else "dropped"
                head = f"#{row.rank} {row.score:.2f}" + (" KEPT" if kind == "kept" else "")
                detail = str(row.image_id)
            tiles.append(Tile(str(row.path), kind, (head, detail)))
        path = folder / f"{safe_name(str(parent))}.png"
        label = group["label"].iloc[0]
        write_contact_sheet(tiles, path, f"seed {parent} - {label} - FST {group['fst'].iloc[0]}")
        written.append(path)
    return written


def write_selection(
    result: pd.DataFrame,
    out: Path,
    cands: Candidates,
    options: SelectionConfig,
    info: dict[str, Any],
    root: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """The selected manifest, its contact sheets and ``selection.json`` (settings and notes);
    paths under ``root`` (a study's folder) stored relative to the manifest."""
    write_manifest(result, out, first=[*list(cands.rows.columns), *SELECTION_COLUMNS], root=root)
    sheets: list[Path] = []
    if options.contact_sheets:
        sheets = write_contact_sheets(result, cands.seed_paths, out.parent / SHEETS_DIR)
    atomic_write_json(
        out.parent / SELECTION_FILE,
        {"manifest": out.name, "candidates": str(cands.source), "k": options.k, **info},
    )
    return sheets


def select_candidates(
    candidates_csv: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    options: SelectionConfig | None = None,
    seeds_csv: str | os.PathLike[str] | None = None,
    test_csv: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
) -> SelectionResult:
    """Score, guard, rank and keep; write the manifest ``out``, contact sheets, selection.json.

    ``test_csv``: a plan (its ``split == "test"`` rows) or any manifest of test images, for the
    leakage guard; without it the guard is off and a note says so. ``root``: the folder whose
    files the manifest names by relative path (a study's; default the manifest's own folder).
    """
    options = options or SelectionConfig()
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise DermsynthError(f"--out {out}: give a .csv file for the selected manifest")
    notes: list[str] = []
    cands = read_candidates(candidates_csv, seeds_csv)
    pathology = pathology_scores(cands, options, notes)  # first: a wrong classifier fails fast
    scorers = build_scorers(options, notes)
    scores, unreadable = score_candidates(cands, scorers, pathology, notes)
    result = pd.concat([cands.rows, scores], axis=1)
    result["leak_distance"], result["leak_nearest"] = leakage_columns(
        cands.rows, unreadable, test_csv, notes, progress=options.progress
    )
    result["score"], used = combined_score(result, options.weights)
    leaks = result["leak_distance"].notna() & (result["leak_distance"] <= options.leakage_threshold)
    result["excluded"] = leaks | result.index.isin(list(unreadable))
    result["reason"] = _exclusion_reasons(result, leaks, unreadable)
    result = rank_candidates(result, options.k, notes)
    result[REVIEWED] = _previous_reviews(out, result, notes)
    result["final"] = final_selection(result)
    has_pathology = "score_pathology" in result.columns
    result = _tidy(
        result if has_pathology else result.assign(score_pathology=np.nan),
        drop_pathology=not has_pathology,
    )
    result = result[[*cands.rows.columns, *[c for c in SELECTION_COLUMNS if c in result.columns]]]
    info = _info(scorers, used, test_csv, notes)
    sheets = write_selection(result, out, cands, options, info, root)
    return SelectionResult(result, out, sheets, notes)


def _info(
    scorers: _Scorers,
    used: dict[str, float],
    test_csv: str | os.PathLike[str] | None,
    notes: list[str],
) -> dict[str, Any]:
    options = scorers.options
    return {
        "weights": used,
        "ita_thresholds": list(scorers.thresholds),
        "embedder": options.embedder,
        "similarity_thresholds": {"copy": scorers.copy, "drift": scorers.drift},
        "leakage_threshold": options.leakage_threshold,
        "test_images": str(test_csv) if test_csv is not None else None,
        "pathology": (
            f"classifier:{options.classifier}"
            if options.classifier is not None
            else f"clip:{options.clip}"
            if options.clip is not None
            else None
        ),
        "notes": notes,
    }


def _auto(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
