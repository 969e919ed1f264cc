"""Near-duplicate images: perceptual hashes, groups of near-copies, and groups that leak.

Fitzpatrick 17k (like most web-scraped atlases) holds the same photograph more than once:
re-encoded, resized, re-coloured, sometimes labelled with two different skin types. When one
copy trains the classifier and another tests it, the test score is inflated. Three steps find
those cases:

1. :func:`hash_images` computes a perceptual hash (``imagehash.phash``) of every readable
   image. Unreadable or missing images are skipped, never fatal: the returned table holds
   only hashed images and ``table.attrs["skipped"]`` lists ``(image_id, reason)`` pairs.
2. :func:`near_duplicate_groups` links images whose hashes differ in at most ``threshold``
   bits and returns the connected components of two or more images (ids ``g0001``, ...).
3. :func:`cross_split_groups` keeps the groups whose members sit in more than one role of a
   plan from :func:`dermsynth.data.splits.plan_splits`: ``train``, ``seed``, or a test group.

``dermsynth data plan`` removes a test image that shares a group with a train or seed image;
``dermsynth data dedup --plan`` reports what is left crossing lines (e.g. a seed image and a
train image that are one photograph with two skin-type labels).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

from dermsynth.data.images import load_rgb
from dermsynth.errors import DermsynthError

HASH_COLUMNS: tuple[str, ...] = ("image_id", "path", "phash")
GROUP_COLUMNS: tuple[str, ...] = ("group", "image_id", "path", "phash")
CROSS_COLUMNS: tuple[str, ...] = (
    "group",
    "image_id",
    "split",
    "test_group",
    "label",
    "fst",
    "path",
    "crossing",
)
PLAN_SPLITS: tuple[str, ...] = ("train", "seed", "test")

MIN_HASH_SIZE = 2
MAX_HASH_SIZE = 64
# Serial hashing is faster than a pool for a handful of images (no thread start-up).
_PARALLEL_FROM = 16
_MAX_AUTO_WORKERS = 8
# Bounds the XOR block of the pairwise comparison (elements of uint64): about 32 MB.
_BLOCK_ELEMENTS = 4_000_000
# Edges kept before they are folded into one star per component (bounds memory on data with
# very many mutually close images).
_EDGE_BUDGET = 2_000_000


def _require(frame: pd.DataFrame, columns: list[str], what: str, hint: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns[:20])) or "none"
        raise DermsynthError(
            f"{what} lacks column(s) {', '.join(repr(c) for c in missing)} "
            f"(columns found: {found}); {hint}"
        )


def _check_int(value: object, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DermsynthError(f"{name} must be a whole number, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise DermsynthError(f"{name} must be {bound}, got {value}")
    return int(value)


def _phash_one(path: str, hash_size: int) -> tuple[str, str]:
    """``(hex hash, "")`` or ``("", reason)``: a bad image is reported, not raised."""
    import imagehash  # imported here so that importing the package stays cheap

    if not path:
        return "", "no image path (give --images or a path column)"
    try:
        image = load_rgb(path)
        return str(imagehash.phash(image, hash_size=hash_size)), ""
    except DermsynthError as exc:
        return "", str(exc)
    except (OSError, ValueError, MemoryError) as exc:
        return "", f"{path}: cannot hash ({type(exc).__name__}: {exc})"


def hash_images(
    manifest: pd.DataFrame,
    *,
    hash_size: int = 8,
    workers: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Perceptual hash (DCT ``phash``) of every image of a manifest.

    Returns a table with columns ``image_id``, ``path`` and ``phash`` (a hex string of
    ``hash_size ** 2`` bits), in the manifest's row order, holding only the images that could
    be read. Missing, corrupt or too-small images are listed in ``result.attrs["skipped"]``
    as ``(image_id, reason)`` pairs, in manifest order.

    ``workers``: threads that decode images (0: one per core, at most 8; 1: no pool). Pillow
    releases the interpreter lock while decoding and resizing, so threads scale without the
    cost of sending images between processes. ``progress`` shows a bar on stderr (on a
    terminal only).
    """
    _require(
        manifest, ["image_id", "path"], "the manifest", "load it with dermsynth.data.load_manifest"
    )
    hash_size = _check_int(hash_size, "hash_size", MIN_HASH_SIZE, MAX_HASH_SIZE)
    workers = _check_int(workers, "workers", 0)
    ids = manifest["image_id"].astype(str).tolist()
    paths = ["" if pd.isna(p) else str(p).strip() for p in manifest["path"].tolist()]
    id_series = pd.Series(ids)
    if id_series.duplicated().any():
        dup = id_series[id_series.duplicated()].iloc[0]
        raise DermsynthError(
            f"duplicate image_id {dup!r} in the manifest; every image needs its own id"
        )

    n_workers = workers or min(_MAX_AUTO_WORKERS, os.cpu_count() or 1)
    bar = tqdm(
        total=len(paths),
        desc="hashing images",
        unit="img",
        # None: shown on a terminal, silent in logs and pipes.
        disable=None if progress else True,
    )
    results: list[tuple[str, str]] = []
    try:
        if n_workers <= 1 or len(paths) < _PARALLEL_FROM:
            for path in paths:
                results.append(_phash_one(path, hash_size))
                bar.update()
        else:
            with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="phash") as pool:
                # map() yields in input order, so the output never depends on thread timing.
                for result in pool.map(_phash_one, paths, [hash_size] * len(paths)):
                    results.append(result)
                    bar.update()
    finally:
        bar.close()

    ok = [i for i, (digest, _) in enumerate(results) if digest]
    out = pd.DataFrame(
        {
            "image_id": [ids[i] for i in ok],
            "path": [paths[i] for i in ok],
            "phash": [results[i][0] for i in ok],
        },
        columns=list(HASH_COLUMNS),
    )
    out.attrs["skipped"] = [
        (ids[i], reason) for i, (digest, reason) in enumerate(results) if not digest
    ]
    out.attrs["hash_size"] = hash_size
    return out


def skipped_lines(skipped: list[tuple[str, str]], what: str, *, limit: int = 5) -> list[str]:
    """Lines telling how many images ``what`` left out and why (the first ``limit`` reasons)."""
    if not skipped:
        return []
    lines = [f"{len(skipped)} unreadable image(s) left out of {what}:"]
    lines += [f"  {reason}" for _, reason in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more")
    return lines


def near_duplicates_on_disk(
    manifest: pd.DataFrame, conditions: list[str], *, threshold: int = 4
) -> tuple[pd.DataFrame | None, list[str]]:
    """Near-duplicate groups among the images of ``conditions`` that exist on disk, for the
    leakage guard of a plan; ``(None, notes)`` when no image is there. Unknown-FST rows are
    never planned, so never hashed. ``notes`` say what was left out of the check."""
    from dermsynth.data.manifest import known_fst, resolve_conditions

    names = resolve_conditions(conditions, manifest["label"].unique())
    rows = known_fst(manifest)
    rows = rows[rows["label"].isin(names)]
    present = rows[rows["path"].map(lambda p: bool(p) and os.path.isfile(p))]
    if present.empty:
        return None, ["no images found on disk: near-duplicate leakage check skipped"]
    notes = []
    absent = len(rows) - len(present)
    if absent:
        notes.append(
            f"{absent} of {len(rows)} image(s) not on disk: left out of the near-duplicate check"
        )
    hashes = hash_images(present)
    notes += skipped_lines(hashes.attrs.get("skipped", []), "the near-duplicate check")
    return near_duplicate_groups(hashes, threshold=threshold), notes


def hash_words(hexes: list[str]) -> np.ndarray:
    """Hex hashes (all the same length) as an ``(n, words)`` uint64 array."""
    width = len(hexes[0])
    n_words = -(-width // 16)
    padded_width = n_words * 16
    words = np.empty((len(hexes), n_words), dtype=np.uint64)
    for row, text in enumerate(hexes):
        text = text.rjust(padded_width, "0")
        for w in range(n_words):
            words[row, w] = int(text[16 * w : 16 * (w + 1)], 16)
    return words


_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per uint64 element."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    # Classic SWAR popcount for older numpy; uint64 multiplication wraps as intended.
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return ((x * _H01) >> np.uint64(56)).astype(np.uint8)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit distances between every row of ``a`` and of ``b`` (both from :func:`hash_words`)."""
    return _popcount(a[:, None, :] ^ b[None, :, :]).sum(axis=2, dtype=np.int32)


def _close_pairs(words: np.ndarray, threshold: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Pairs ``i < j`` of rows within ``threshold`` bits, one block of rows at a time.

    Brute force over the upper triangle, vectorised: 20k hashes take about a second, and the
    block size keeps memory bounded whatever the number of images.
    """
    n, n_words = words.shape
    block = max(1, _BLOCK_ELEMENTS // max(1, n * n_words))
    for start in range(0, n, block):
        stop = min(n, start + block)
        rows = words[start:stop, None, :]
        cols = words[None, start:, :]
        dist = _popcount(rows ^ cols).sum(axis=2, dtype=np.int32)
        i, j = np.nonzero(dist <= threshold)
        i = i + start
        j = j + start
        keep = j > i
        if keep.any():
            yield i[keep], j[keep]


def _components(n: int, pairs: Iterator[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes, from a stream of edges."""
    edges_i: list[np.ndarray] = []
    edges_j: list[np.ndarray] = []
    n_edges = 0

    def labels() -> np.ndarray:
        if not edges_i:
            return np.arange(n)
        i = np.concatenate(edges_i)
        j = np.concatenate(edges_j)
        graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
        return connected_components(graph, directed=False)[1]

    for i, j in pairs:
        edges_i.append(i)
        edges_j.append(j)
        n_edges += len(i)
        if n_edges > _EDGE_BUDGET:
            # Replace the edges by one star per component: same components, at most n edges.
            current = labels()
            order = np.arange(n)
            first = np.full(current.max() + 1, n)
            np.minimum.at(first, current, order)  # smallest node of each component
            hub = first[current]
            star = hub != order
            edges_i, edges_j = [order[star]], [hub[star]]
            n_edges = int(star.sum())
    return labels()


def _check_hashes(hashes: pd.DataFrame) -> list[str]:
    _require(
        hashes,
        ["image_id", "phash"],
        "the hash table",
        "make it with dermsynth.data.dedup.hash_images (or `dermsynth data dedup`)",
    )
    ids = hashes["image_id"].astype(str)
    dup = ids.duplicated()
    if dup.any():
        raise DermsynthError(
            f"image {ids[dup].iloc[0]!r} appears twice in the hash table; hash each image once"
        )
    hexes = ["" if pd.isna(h) else str(h).strip().lower() for h in hashes["phash"]]
    for image_id, text in zip(ids, hexes, strict=True):
        if not text or any(c not in "0123456789abcdef" for c in text):
            raise DermsynthError(
                f"image {image_id!r} has phash {text!r}, not a hex string; keep only hashed "
                "images (hash_images leaves unreadable ones out)"
            )
    widths = {len(h) for h in hexes}
    if len(widths) > 1:
        raise DermsynthError(
            "the hash table mixes hash lengths "
            f"({', '.join(map(str, sorted(widths)))} hex digits); "
            "hash every image with the same hash_size"
        )
    return hexes


def near_duplicate_groups(hashes: pd.DataFrame, *, threshold: int = 4) -> pd.DataFrame:
    """Groups of near-duplicate images among ``hashes`` (from :func:`hash_images`).

    Two images are linked when their hashes differ in at most ``threshold`` bits (0: the same
    hash); a group is a connected component of those links, so A~B and B~C put A, B and C in
    one group even when A and C are further apart. Only groups of two or more images are
    returned, with columns ``group``, ``image_id``, ``path``, ``phash``. Group ids
    (``g0001``, ``g0002``, ...) follow each group's smallest image id and rows are sorted by
    group then image id, so the result does not depend on the input's row order.
    """
    threshold = _check_int(threshold, "threshold", 0)
    hexes = _check_hashes(hashes)
    empty = pd.DataFrame(columns=list(GROUP_COLUMNS))
    if not hexes:
        return empty
    n_bits = len(hexes[0]) * 4
    if threshold >= n_bits:
        raise DermsynthError(
            f"threshold {threshold} links every pair of {n_bits}-bit hashes; use a small "
            "distance (default 4 for 64-bit hashes)"
        )
    ids = hashes["image_id"].astype(str).to_numpy()
    paths = (
        hashes["path"].fillna("").astype(str).to_numpy()
        if "path" in hashes.columns
        else np.full(len(ids), "")
    )

    # Identical hashes are merged first: a folder of 1000 copies costs one node, not 500k edges.
    words = hash_words(hexes)
    unique, inverse = np.unique(words, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    labels = _components(len(unique), _close_pairs(unique, threshold))[inverse]

    frame = pd.DataFrame({"_c": labels, "image_id": ids, "path": paths, "phash": hexes})
    sizes = frame["_c"].map(frame["_c"].value_counts())
    frame = frame[sizes >= 2]
    if frame.empty:
        return empty
    first_id = frame.groupby("_c")["image_id"].transform("min")
    frame = frame.assign(_first=first_id).sort_values(["_first", "image_id"], kind="stable")
    order = pd.unique(frame["_first"])
    width = max(4, len(str(len(order))))
    name = {first: f"g{k:0{width}d}" for k, first in enumerate(order, start=1)}
    frame["group"] = frame["_first"].map(name)
    return frame[list(GROUP_COLUMNS)].reset_index(drop=True)


def _role(split: str, test_group: str) -> str:
    return f"test[{test_group}]" if split == "test" and test_group else split


def cross_split_groups(plan: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    """Near-duplicate groups whose members sit in more than one role of a plan.

    A role is ``train``, ``seed``, or one test group (``test[3-4]``, ``test[5-6]``, ...).
    Test groups count apart: one photograph in two test groups is scored twice, under two
    skin-type labels, which blurs the very gap between groups that the study measures.
    Members outside the plan (other conditions or skin types) are ignored; duplicates within
    one role are not reported (they leak nothing across lines).

    Returns one row per planned member of a crossing group, with columns ``group``,
    ``image_id``, ``split``, ``test_group``, ``label``, ``fst``, ``path`` and ``crossing``
    (the roles the group spans, e.g. ``train+test[3-4]``), sorted by group, then split
    (train, seed, test), test group and image id.
    """
    _require(
        plan,
        ["image_id", "split", "test_group", "label", "fst"],
        "the plan",
        "give a plan written by `dermsynth data plan`",
    )
    _require(
        groups,
        ["group", "image_id"],
        "the near-duplicate table",
        "make it with dermsynth.data.dedup.near_duplicate_groups (or `dermsynth data dedup`)",
    )
    bad = sorted(set(plan["split"].astype(str)) - set(PLAN_SPLITS))
    if bad:
        raise DermsynthError(
            f"the plan has split value(s) {', '.join(map(repr, bad))}; expected "
            f"{', '.join(PLAN_SPLITS)} (is it a plan from `dermsynth data plan`?)"
        )
    plan_ids = plan["image_id"].astype(str)
    if plan_ids.duplicated().any():
        dup = plan_ids[plan_ids.duplicated()].iloc[0]
        raise DermsynthError(
            f"image {dup!r} appears twice in the plan; a plan lists each image once"
        )
    empty = pd.DataFrame(columns=list(CROSS_COLUMNS))
    if groups.empty or plan.empty:
        return empty

    planned = plan.assign(
        image_id=plan["image_id"].astype(str),
        test_group=plan["test_group"].fillna("").astype(str),
    )
    if "path" not in planned.columns:
        planned = planned.assign(path="")
    members = groups[["group", "image_id"]].assign(image_id=groups["image_id"].astype(str))
    if "path" in groups.columns:
        members = members.assign(_gpath=groups["path"].astype(str))
    merged = members.merge(
        planned[["image_id", "split", "test_group", "label", "fst", "path"]],
        on="image_id",
        how="inner",
        validate="many_to_one",
    )
    if "_gpath" in merged.columns:
        # The plan's path wins; the hash table's fills in where the plan has none.
        blank = merged["path"].fillna("").astype(str).str.strip() == ""
        merged.loc[blank, "path"] = merged.loc[blank, "_gpath"]
        merged = merged.drop(columns="_gpath")
    if merged.empty:
        return empty

    split_rank = {s: k for k, s in enumerate(PLAN_SPLITS)}
    merged["_role"] = [
        _role(s, t) for s, t in zip(merged["split"], merged["test_group"], strict=True)
    ]
    merged["_rank"] = merged["split"].map(split_rank)
    role_order = (
        merged[["_role", "_rank", "test_group"]]
        .drop_duplicates()
        .sort_values(["_rank", "test_group"])
        .loc[:, "_role"]
        .tolist()
    )
    role_rank = {r: k for k, r in enumerate(role_order)}
    spans = merged.groupby("group")["_role"].agg(
        lambda roles: "+".join(sorted(set(roles), key=role_rank.__getitem__))
    )
    crossing = spans[spans.str.contains("+", regex=False)]
    out = merged[merged["group"].isin(crossing.index)].copy()
    if out.empty:
        return empty
    out["crossing"] = out["group"].map(crossing)
    out = out.sort_values(["group", "_rank", "test_group", "image_id"], kind="stable")
    return out[list(CROSS_COLUMNS)].reset_index(drop=True)
