"""Score every candidate, exclude leaks, keep the top k per seed, explain every decision.

Input: a candidate manifest (``dermsynth generate``'s ``manifest.csv``: rows with
``origin=synthetic``, ``parent_id`` = the seed's image id, ``fst`` = the requested type, and the
provenance columns, among them ``seed_crop`` and ``seed_mask``). Each candidate's seed image is
its ``seed_crop`` (the exact square the generator saw) where that file exists, else the row of
its ``parent_id`` in the candidate manifest or in the seed manifest given.

Output: the same rows with these columns added (the written manifest, "M2"):

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
``final``           ``reviewed`` overriding ``selected``: what training should use
``reason``          one sentence per decision, e.g. ``kept: rank 2 of 8 (score 0.81)``
==================  ==========================================================================

Beside the manifest: ``contact_sheets/<seed_id>.png`` and ``selection.json`` (the options used,
the weights, the notes; the review page reads the manifest's name from it).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermsynth.data.images import BadImageError, load_rgb
from dermsynth.data.manifest import load_manifest, write_manifest
from dermsynth.errors import DermsynthError
from dermsynth.io import atomic_write_json
from dermsynth.select.quality import QualityParams

SCORES: tuple[str, ...] = ("tone", "pathology", "similarity", "quality")
DEFAULT_WEIGHTS: dict[str, float] = {
    "tone": 1.0,
    "pathology": 1.0,
    "similarity": 0.5,
    "quality": 0.5,
}
SELECTION_FILE = "selection.json"
SHEETS_DIR = "contact_sheets"
REVIEWED = "reviewed"
REVIEW_VALUES: tuple[str, ...] = ("accepted", "rejected", "")
OUTPUT_COLUMNS: tuple[str, ...] = (
    "ita",
    "fst_estimated",
    "skin_fallback",
    "score_tone",
    "score_pathology",
    "similarity",
    "flag_similarity",
    "score_similarity",
    "blur",
    "clipped",
    "colour_cast",
    "score_quality",
    "leak_distance",
    "leak_nearest",
    "excluded",
    "score",
    "rank",
    "selected",
    REVIEWED,
    "final",
    "reason",
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass
class SelectOptions:
    """Everything that decides a selection besides its inputs.

    ``ita_thresholds``: ``kinyanjui``, ``empirical`` (fitted on ``fit_manifest``, labelled real
    images) or five numbers. ``embedder``: ``lab`` or ``backbone:NAME`` (with
    ``embedder_weights``). ``copy_threshold`` / ``drift_threshold``: None for the embedder's
    defaults. ``classifier``: a run folder of ``dermsynth train``; ``clip``: a CLIP folder or hub
    id (``clip_classes``: the conditions to compare with; default the candidates' labels).
    """

    k: int = 4
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    ita_thresholds: str | Sequence[float] = "kinyanjui"
    fit_manifest: str | os.PathLike[str] | None = None
    embedder: str = "lab"
    embedder_weights: str = "imagenet"
    copy_threshold: float | None = None
    drift_threshold: float | None = None
    leakage_threshold: int = 6
    classifier: str | os.PathLike[str] | None = None
    clip: str | os.PathLike[str] | None = None
    clip_classes: Sequence[str] | None = None
    quality: QualityParams = field(default_factory=QualityParams)
    device: str = "cpu"
    contact_sheets: bool = True
    progress: bool = False


@dataclass
class SelectionResult:
    """The written manifest, its path, the contact sheets and what the user should know."""

    manifest: pd.DataFrame
    path: Path
    sheets: list[Path]
    notes: list[str]


def parse_weights(
    text: str | Mapping[str, float] | None, base: Mapping[str, float] | None = None
) -> dict[str, float]:
    """``"tone=1,pathology=0.5"`` (or a mapping) over ``base`` (default weights).

    Names must be scorers (tone, pathology, similarity, quality); weights >= 0, not all 0.
    """
    weights = dict(base if base is not None else DEFAULT_WEIGHTS)
    if text is None:
        items: list[tuple[str, Any]] = []
    elif isinstance(text, str):
        items = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            if "=" not in part:
                raise DermsynthError(
                    f"--weights: {part!r} is not name=value (e.g. tone=1,quality=0.5)"
                )
            name, value = part.split("=", 1)
            items.append((name.strip(), value.strip()))
    else:
        items = list(text.items())
    for name, value in items:
        if name not in SCORES:
            raise DermsynthError(
                f"--weights: unknown score {name!r}; scores are {', '.join(SCORES)}"
            )
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise DermsynthError(f"--weights: {name}={value!r} is not a number") from None
        if not math.isfinite(number) or number < 0:
            raise DermsynthError(f"--weights: {name} must be a number >= 0, got {value!r}")
        weights[name] = number
    if not any(w > 0 for w in weights.values()):
        raise DermsynthError("--weights: at least one weight must be > 0")
    return weights


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
        shown = ", ".join(map(repr, lost[:5])) + (
            f" (and {len(lost) - 5} more)" if len(lost) > 5 else ""
        )
        raise DermsynthError(
            f"the candidate manifest lacks the seed image of {len(lost)} of {len(parents)} seed(s): "
            f"{shown}; it has neither a seed_crop file nor a row for them. Give the seed manifest "
            "(the plan used to generate) with --seeds"
        )
    absent = [p for p in parents if not Path(found[p]).is_file()]
    if absent:
        shown = ", ".join(f"{p!r} ({found[p]})" for p in absent[:3])
        raise DermsynthError(
            f"seed image(s) missing on disk: {shown}; fix the paths or give --seeds"
        )
    return {p: found[p] for p in parents}


def _read_lesion_mask(path: str) -> np.ndarray | None:
    if not path or not Path(path).is_file():
        return None
    from PIL import Image

    try:
        with Image.open(path) as handle:
            return np.asarray(handle.convert("L"))
    except OSError:
        return None


def _thresholds(options: SelectOptions, notes: list[str]) -> tuple[float, ...]:
    from dermsynth.select.tone import fit_empirical_thresholds, resolve_thresholds, tone_score

    spec = options.ita_thresholds
    if isinstance(spec, str) and spec.strip().lower() == "empirical":
        if options.fit_manifest is None:
            raise DermsynthError(
                "--ita-thresholds empirical needs --fit-manifest: labelled real images to fit "
                "the thresholds on"
            )
        labelled = load_manifest(options.fit_manifest)
        base = Path(options.fit_manifest).resolve().parent
        itas, types = [], []
        for path, fst in zip(labelled["path"], labelled["fst"], strict=True):
            if fst < 1:
                continue
            try:
                rgb = np.asarray(load_rgb(_resolve(str(path), base)))
            except BadImageError:
                continue
            itas.append(tone_score(rgb, int(fst)).ita)
            types.append(int(fst))
        fitted = fit_empirical_thresholds(itas, types)
        notes.append(
            f"empirical ITA thresholds fitted on {len(itas)} image(s) of {options.fit_manifest}: "
            + ", ".join(f"{t:.1f}" for t in fitted)
        )
        return fitted
    return resolve_thresholds(spec)


def _load_array(path: str) -> tuple[np.ndarray | None, str]:
    try:
        return np.asarray(load_rgb(path, min_size=8)), ""
    except BadImageError as exc:
        return None, exc.reason
    except (OSError, ValueError) as exc:
        return None, f"cannot read ({exc})"


def select_candidates(
    candidates_csv: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    options: SelectOptions | None = None,
    seeds_csv: str | os.PathLike[str] | None = None,
    test_csv: str | os.PathLike[str] | None = None,
) -> SelectionResult:
    """Score, guard, rank and keep; write the manifest ``out``, contact sheets, selection.json.

    ``test_csv``: a plan (its ``split == "test"`` rows) or any manifest of test images, for the
    leakage guard; without it the guard is off and a note says so.
    """
    from dermsynth.select.leakage import nearest_test_image, select_test_rows
    from dermsynth.select.quality import quality_score
    from dermsynth.select.similarity import (
        cosine,
        default_thresholds,
        make_embedder,
        similarity_scores,
    )
    from dermsynth.select.tone import tone_score

    options = options or SelectOptions()
    if isinstance(options.k, bool) or not isinstance(options.k, int) or options.k < 1:
        raise DermsynthError(f"--k must be a whole number >= 1, got {options.k!r}")
    if options.leakage_threshold < 0:
        raise DermsynthError(f"--leakage-threshold must be >= 0, got {options.leakage_threshold}")
    weights = parse_weights(options.weights, base={})
    notes: list[str] = []
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise DermsynthError(f"--out {out}: give a .csv file for the selected manifest")

    candidates_csv = Path(candidates_csv)
    manifest = load_manifest(candidates_csv)
    base = candidates_csv.resolve().parent
    manifest["path"] = manifest["path"].map(lambda p: _resolve(p, base))
    is_candidate = manifest["origin"] == "synthetic"
    if not is_candidate.any():
        raise DermsynthError(
            f"{candidates_csv}: no candidate rows (origin == 'synthetic'); give the manifest "
            "written by `dermsynth generate`"
        )
    cands = manifest[is_candidate].reset_index(drop=True)
    others = manifest[~is_candidate].reset_index(drop=True)
    no_parent = cands["parent_id"] == ""
    if no_parent.any():
        raise DermsynthError(
            f"{candidates_csv}: candidate {cands['image_id'][no_parent].iloc[0]!r} has no parent_id "
            f"({int(no_parent.sum())} such row(s)); every candidate must name its seed"
        )
    seeds = None
    if seeds_csv is not None:
        seeds = load_manifest(seeds_csv)
        seed_base = Path(seeds_csv).resolve().parent
        seeds["path"] = seeds["path"].map(lambda p: _resolve(p, seed_base))
    seed_paths = _seed_images(cands, others, seeds, base)
    masks = _text(cands, "seed_mask").map(lambda p: _resolve(p, base))
    thresholds = _thresholds(options, notes)

    # Pathology first decides whether its weight stays: refuse a wrong classifier before the
    # slow per-image work.
    pathology: pd.Series | None = None
    if options.classifier is not None:
        from dermsynth.select.pathology import classifier_scores

        pathology = classifier_scores(options.classifier, cands, device=_auto(options.device))
    clip = None
    if options.clip is not None:
        if pathology is not None:
            raise DermsynthError("give either --classifier or --clip for pathology, not both")
        from dermsynth.select.pathology import load_clip

        clip = load_clip(options.clip, device=options.device if options.device != "auto" else "cpu")
        pathology = pd.Series(np.nan, index=cands.index, name="score_pathology")
    if pathology is None and weights.get("pathology", 0) > 0:
        notes.append(
            f"no --classifier or --clip given: pathology not scored, its weight "
            f"({weights['pathology']:g}) dropped"
        )

    embedder = make_embedder(
        options.embedder, weights=options.embedder_weights, device=_auto(options.device)
    )
    copy_t, drift_t = default_thresholds(embedder)
    copy_t = options.copy_threshold if options.copy_threshold is not None else copy_t
    drift_t = options.drift_threshold if options.drift_threshold is not None else drift_t

    n = len(cands)
    cols: dict[str, list[Any]] = {
        c: [None] * n
        for c in (
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
    }
    unreadable: dict[int, str] = {}
    for parent, positions in cands.groupby("parent_id", sort=False).indices.items():
        seed_rgb, why = _load_array(seed_paths[parent])
        if seed_rgb is None:
            raise DermsynthError(f"seed {parent!r}: {seed_paths[parent]}: {why}")
        arrays: list[np.ndarray] = []
        readable: list[int] = []
        for pos in positions:
            rgb, why = _load_array(cands.at[pos, "path"])
            if rgb is None:
                unreadable[pos] = why or "unreadable"
                continue
            readable.append(pos)
            arrays.append(rgb)
            tone = tone_score(
                rgb,
                int(cands.at[pos, "fst"]),
                lesion_mask=_read_lesion_mask(masks[pos]),
                thresholds=thresholds,
            )
            quality = quality_score(rgb, seed_rgb, options.quality)
            cols["ita"][pos] = tone.ita
            cols["fst_estimated"][pos] = tone.fst_estimated
            cols["skin_fallback"][pos] = tone.fallback
            cols["score_tone"][pos] = tone.score
            cols["blur"][pos] = quality.blur
            cols["clipped"][pos] = quality.clipped
            cols["colour_cast"][pos] = quality.colour_cast
            cols["score_quality"][pos] = quality.score
        if not readable:
            continue
        vectors = embedder([seed_rgb, *arrays])
        sims = cosine(vectors[1:], np.repeat(vectors[:1], len(arrays), axis=0))
        scores, flags = similarity_scores(sims, copy_t, drift_t)
        for j, pos in enumerate(readable):
            cols["similarity"][pos] = float(sims[j])
            cols["score_similarity"][pos] = float(scores[j])
            cols["flag_similarity"][pos] = flags[j]
        if clip is not None and pathology is not None:
            from dermsynth.select.pathology import clip_scores

            labels = [str(cands.at[p, "label"]) for p in readable]
            classes = (
                list(options.clip_classes) if options.clip_classes else sorted(set(cands["label"]))
            )
            for pos, value in zip(
                readable, clip_scores(clip, arrays, labels, classes), strict=True
            ):
                pathology.at[pos] = float(value)
    if len(unreadable) == n:
        first = next(iter(unreadable.items()))
        raise DermsynthError(
            f"none of the {n} candidate image(s) could be read (first: {cands.at[first[0], 'path']}: "
            f"{first[1]}); are the paths relative to another folder?"
        )
    if unreadable:
        notes.append(f"{len(unreadable)} candidate image(s) missing or unreadable: excluded")
    if clip is not None and len(set(cands["label"])) < 2 and not options.clip_classes:
        notes.append("CLIP with one condition only: pathology score is the image-prompt cosine")

    result = cands.copy()
    for name, values in cols.items():
        result[name] = pd.Series(values, index=cands.index, dtype=object)
    for name in (
        "ita",
        "score_tone",
        "similarity",
        "score_similarity",
        "blur",
        "clipped",
        "colour_cast",
        "score_quality",
    ):
        result[name] = pd.to_numeric(result[name], errors="coerce")
    result["fst_estimated"] = pd.to_numeric(result["fst_estimated"], errors="coerce").astype(
        "Int64"
    )
    if pathology is not None:
        result["score_pathology"] = pathology.astype(float)

    # Leakage: excluded whatever the other scores.
    result["leak_distance"] = np.nan
    result["leak_nearest"] = ""
    if test_csv is not None:
        tests = select_test_rows(load_manifest(test_csv))
        test_base = Path(test_csv).resolve().parent
        tests = tests.assign(path=tests["path"].map(lambda p: _resolve(p, test_base)))
        readable_rows = result.drop(index=list(unreadable))
        leak = nearest_test_image(readable_rows, tests, progress=options.progress)
        result.loc[leak.distance.index, "leak_distance"] = leak.distance
        result.loc[leak.nearest.index, "leak_nearest"] = leak.nearest
        if leak.skipped_test:
            notes.append(
                f"{len(leak.skipped_test)} of {len(tests)} test image(s) unreadable: the leakage "
                f"guard compared with {leak.n_test} (first problem: {leak.skipped_test[0][1]})"
            )
    else:
        notes.append(
            "no --plan or --test-images given: leakage guard off (no test images to compare)"
        )
    leaks = result["leak_distance"].notna() & (result["leak_distance"] <= options.leakage_threshold)

    # Weighted combination over the scores present; a row's NaN score leaves its mean.
    used = {name: w for name, w in weights.items() if w > 0 and f"score_{name}" in result.columns}
    if not used:
        raise DermsynthError(
            "every score with a weight > 0 is unavailable (pathology needs --classifier or --clip); "
            "give weights to tone, similarity or quality"
        )
    values = np.column_stack(
        [result[f"score_{k}"].astype(float).clip(0, 1).to_numpy() for k in used]
    )
    w = np.array(list(used.values()), dtype=float)
    present = ~np.isnan(values)
    denom = (present * w).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        combined = np.where(denom > 0, (np.nan_to_num(values) * w).sum(axis=1) / denom, 0.0)
    result["score"] = combined

    excluded = leaks.copy()
    excluded.loc[list(unreadable)] = True
    result["excluded"] = excluded.astype(bool)
    reasons = pd.Series("", index=result.index, dtype=object)
    for pos, why in unreadable.items():
        reasons.at[pos] = f"excluded: image unreadable ({why})"
    for pos in result.index[leaks]:
        reasons.at[pos] = (
            f"excluded: leakage (phash distance {int(result.at[pos, 'leak_distance'])} to test "
            f"image {result.at[pos, 'leak_nearest']})"
        )
    ranks = pd.Series(pd.NA, index=result.index, dtype="Int64")
    selected = pd.Series(False, index=result.index, dtype=bool)
    for parent, positions in result.groupby("parent_id", sort=False).indices.items():
        group = result.iloc[positions]
        usable = group[~group["excluded"]]
        order = usable.sort_values(
            ["score", "image_id"], ascending=[False, True], kind="stable"
        ).index
        total = len(group)
        for rank, pos in enumerate(order, start=1):
            ranks.at[pos] = rank
            keep = rank <= options.k
            selected.at[pos] = keep
            verb = "kept" if keep else "dropped"
            text = f"{verb}: rank {rank} of {len(order)} (score {result.at[pos, 'score']:.2f})"
            flag = result.at[pos, "flag_similarity"]
            if flag:
                text += f"; similarity: {flag}"
            reasons.at[pos] = text
        if len(order) < options.k:
            notes.append(
                f"seed {parent}: only {len(order)} usable candidate(s) of {total}, fewer than "
                f"k={options.k}; kept all {len(order)}"
            )
    result["rank"] = ranks
    result["selected"] = selected
    result[REVIEWED] = _previous_reviews(out, result, notes)
    result["final"] = final_selection(result)
    result["reason"] = reasons
    if pathology is None:
        result["score_pathology"] = np.nan
    result = _tidy(result, drop_pathology=pathology is None)

    write_manifest(result, out, first=[*list(cands.columns), *OUTPUT_COLUMNS])
    sheets: list[Path] = []
    if options.contact_sheets:
        sheets = write_contact_sheets(result, seed_paths, out.parent / SHEETS_DIR)
    atomic_write_json(
        out.parent / SELECTION_FILE,
        {
            "manifest": out.name,
            "candidates": str(candidates_csv),
            "k": options.k,
            "weights": used,
            "ita_thresholds": list(thresholds),
            "embedder": options.embedder,
            "similarity_thresholds": {"copy": copy_t, "drift": drift_t},
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
        },
    )
    return SelectionResult(result, out, sheets, notes)


def _auto(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def final_selection(frame: pd.DataFrame) -> pd.Series:
    """``reviewed`` overrides ``selected``: accepted -> True, rejected -> False."""
    reviewed = _text(frame, REVIEWED)
    selected = frame["selected"].map(_truthy) if "selected" in frame.columns else False
    final = pd.Series(selected, index=frame.index, dtype=bool)
    final[reviewed == "accepted"] = True
    final[reviewed == "rejected"] = False
    return final


def training_selection(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """The ``k`` synthetic images per seed to train on: a reviewer's accepted images
    first, then the best-ranked of the rest; excluded and rejected images never. A rejection
    thus makes room for the next-best candidate of that seed."""

    def text(column: str) -> pd.Series:
        values = frame[column] if column in frame.columns else pd.Series("", index=frame.index)
        return values.astype(str).str.strip().str.lower()

    usable = frame[(~text("excluded").isin(["true", "1"])) & (text("reviewed") != "rejected")]
    usable = usable.assign(
        _accepted=(text("reviewed") != "accepted").loc[usable.index],
        _rank=pd.to_numeric(usable.get("rank"), errors="coerce").fillna(float("inf")),
    )
    usable = usable.sort_values(["parent_id", "_accepted", "_rank", "image_id"], kind="stable")
    kept = usable.groupby("parent_id", sort=False).head(k)
    return kept.drop(columns=["_accepted", "_rank"])


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value) and not (isinstance(value, float) and math.isnan(value))


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
        tiles = [Tile(seed_paths.get(parent), "seed", ("seed", str(parent)))]
        for row in group.itertuples(index=False):
            if bool(row.excluded):
                kind, head = "excluded", "excluded"
                detail = "leakage" if "leakage" in str(row.reason) else "unreadable"
            else:
                kind = "kept" if bool(row.selected) else "dropped"
                head = f"#{row.rank} {row.score:.2f}" + (" KEPT" if kind == "kept" else "")
                detail = str(row.image_id)
            tiles.append(Tile(str(row.path), kind, (head, detail)))
        path = folder / f"{safe_name(parent)}.png"
        label = group["label"].iloc[0]
        write_contact_sheet(tiles, path, f"seed {parent} - {label} - FST {group['fst'].iloc[0]}")
        written.append(path)
    return written
