"""The leakage guard: no candidate may be a near-copy of a test image.

A synthetic image made from a seed keeps much of the seed; if it were also close to an image
the classifier is tested on, the test would be scored on something the model trained on. Each
candidate's perceptual hash (``imagehash.phash``, as :mod:`dermsynth.data.dedup` computes it)
is compared with every test image's; the smallest Hamming distance and that test image are
recorded, and a candidate within ``threshold`` bits is excluded whatever its other scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dermsynth.data.dedup import hamming, hash_images, hash_words
from dermsynth.errors import DermsynthError


@dataclass
class LeakageResult:
    """Per candidate: nearest test image and its distance; what could not be hashed."""

    distance: pd.Series  # float (NaN where the candidate could not be hashed)
    nearest: pd.Series  # image id of the nearest test image ("" where none)
    n_test: int
    skipped_test: list[tuple[str, str]] = field(default_factory=list)


def select_test_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    """The test images of a plan (``split == "test"``) or every row of another manifest."""
    if "split" in manifest.columns:
        rows = manifest[manifest["split"].astype(str) == "test"]
        if rows.empty:
            raise DermsynthError(
                "the plan given for the leakage check has no test rows (split == 'test')"
            )
        return rows.reset_index(drop=True)
    return manifest.reset_index(drop=True)


def nearest_test_image(
    candidates: pd.DataFrame, tests: pd.DataFrame, *, hash_size: int = 8, progress: bool = False
) -> LeakageResult:
    """Smallest phash distance from each candidate to any test image (columns ``image_id``,
    ``path`` in both tables). Unreadable test images are listed in ``skipped_test``; if none
    can be read the guard cannot work, which is an error."""
    test_hashes = hash_images(tests, hash_size=hash_size, progress=progress)
    skipped = list(test_hashes.attrs.get("skipped", []))
    if test_hashes.empty:
        raise DermsynthError(
            f"none of the {len(tests)} test image(s) could be read, so the leakage guard has "
            f"nothing to compare with (first problem: {skipped[0][1] if skipped else 'none'}); "
            "fix the test images' paths"
        )
    cand_hashes = hash_images(candidates, hash_size=hash_size, progress=progress)
    distance = pd.Series(np.nan, index=candidates.index, dtype=float)
    nearest = pd.Series("", index=candidates.index, dtype=object)
    if not cand_hashes.empty:
        test_words = hash_words(test_hashes["phash"].tolist())
        cand_words = hash_words(cand_hashes["phash"].tolist())
        # (candidates, tests) distances; tests are at most tens of thousands of 64-bit words.
        block = max(1, 2_000_000 // max(1, len(test_words)))
        positions = {i: k for k, i in enumerate(candidates["image_id"].astype(str))}
        test_ids = test_hashes["image_id"].astype(str).to_numpy()
        for start in range(0, len(cand_words), block):
            chunk = cand_words[start : start + block]
            dist = hamming(chunk, test_words)
            best = dist.argmin(axis=1)
            for offset, j in enumerate(best):
                cand_id = str(cand_hashes["image_id"].iloc[start + offset])
                index = candidates.index[positions[cand_id]]
                distance.at[index] = float(dist[offset, j])
                nearest.at[index] = test_ids[j]
    return LeakageResult(distance, nearest, len(test_hashes), skipped)
