"""Fitzpatrick skin types (FST): groups of types, and the ITA <-> FST mapping.

An FST group is a sorted tuple of types, e.g. ``(1, 2)``, written ``"1-2"`` in manifests and
tables (the paper's "I-II"). Types are 1..6; -1 means unknown and is left out of analyses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from dermsynth.errors import DermsynthError

FST_TYPES: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
UNKNOWN_FST = -1
ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI"}

FSTGroup = tuple[int, ...]

LIGHT_EXTREME: FSTGroup = (1, 2)
DARK_EXTREME: FSTGroup = (5, 6)

# Kinyanjui et al. (2020) thresholds on the individual typology angle (ITA, degrees), as used
# by Fitzpatrick 17k: ITA > 55 -> I, > 41 -> II, > 28 -> III, > 19 -> IV, > 10 -> V, else VI.
KINYANJUI_ITA_THRESHOLDS: tuple[float, ...] = (55.0, 41.0, 28.0, 19.0, 10.0)


def parse_fst_group(text: str | Iterable[int], *, option: str = "FST group") -> FSTGroup:
    """Parse ``"1,2"``, ``"1-2"``, ``"5"`` or an iterable of ints into a sorted FST group."""
    if isinstance(text, str):
        raw = text.strip()
        if not raw:
            raise DermsynthError(f"{option}: empty; give skin types like '1,2' or '5-6'")
        parts: list[str]
        if "-" in raw and "," not in raw:
            lo_hi = raw.split("-")
            if len(lo_hi) != 2 or not all(p.strip().isdigit() for p in lo_hi):
                raise DermsynthError(
                    f"{option}: cannot read {text!r}; give types like '1,2' or '5-6'"
                )
            lo, hi = int(lo_hi[0]), int(lo_hi[1])
            if lo > hi:
                raise DermsynthError(f"{option}: range {text!r} runs backwards; write '{hi}-{lo}'")
            parts = [str(v) for v in range(lo, hi + 1)]
        else:
            parts = [p.strip() for p in raw.split(",") if p.strip()]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise DermsynthError(
                f"{option}: cannot read {text!r}; give types like '1,2' or '5-6'"
            ) from None
    else:
        values = [int(v) for v in text]
    bad = [v for v in values if v not in FST_TYPES]
    if bad or not values:
        raise DermsynthError(f"{option}: skin types must be 1..6, got {text!r}")
    if len(set(values)) != len(values):
        raise DermsynthError(f"{option}: {text!r} names a skin type twice")
    return tuple(sorted(values))


def group_label(group: Sequence[int]) -> str:
    """``(1, 2)`` -> ``"1-2"``; ``(3,)`` -> ``"3"``; non-contiguous ``(1, 3)`` -> ``"1+3"``."""
    values = sorted(group)
    if len(values) == 1:
        return str(values[0])
    if values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]}"
    return "+".join(str(v) for v in values)


def roman_label(group: Sequence[int]) -> str:
    """``(1, 2)`` -> ``"I-II"``, as the paper writes groups."""
    values = sorted(group)
    if len(values) > 1 and values == list(range(values[0], values[-1] + 1)):
        return f"{ROMAN[values[0]]}-{ROMAN[values[-1]]}"
    return "+".join(ROMAN[v] for v in values)


def opposite_extreme(train_group: Sequence[int]) -> FSTGroup:
    """The FST extreme opposite a training group: I-II <-> V-VI (the paper's seed source)."""
    group = set(train_group)
    if group <= set(LIGHT_EXTREME):
        return DARK_EXTREME
    if group <= set(DARK_EXTREME):
        return LIGHT_EXTREME
    raise DermsynthError(
        f"training group {group_label(sorted(group))} is not at an FST extreme (1-2 or 5-6), so it "
        "has no opposite extreme; name the seed group yourself (--seed-fst)"
    )


def ita_degrees(lightness: float, b_star: float) -> float:
    """Individual typology angle: ``atan2(L* - 50, b*)`` in degrees (CIE-Lab L*, b*)."""
    return math.degrees(math.atan2(lightness - 50.0, b_star))


def ita_to_fst(ita: float, thresholds: Sequence[float] = KINYANJUI_ITA_THRESHOLDS) -> int:
    """Map an ITA angle to an FST with descending thresholds (Kinyanjui et al. by default)."""
    for fst, limit in zip(FST_TYPES, thresholds, strict=False):
        if ita > limit:
            return fst
    return FST_TYPES[-1]
