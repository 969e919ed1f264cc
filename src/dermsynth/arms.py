"""The arms of a study: what each classifier is trained on, one small function per arm.

An arm turns the direction's real training rows, the augmented condition's seed images, the
images of the arm's own pool (best first) and the dose into the run's training rows, with a
sampler weight per row (:data:`dermsynth.schema.WEIGHT`). Every arm of a direction is tested on
the same test rows, so any two arms can be compared image by image.

The paper's arms are ``real``, ``real+seed`` and ``real+seed+synthetic``. The controls answer
the question a reviewer asks first, "would the same number of extra rows of any kind have done
as well?": each adds exactly as many rows (or as much sampling weight) as the synthetic arm at
the same dose, made without a generator. ``real+seed+extra-real`` adds real images instead:
the ceiling a generator is measured against.

Adding an arm is a function here with the :func:`arm` decorator; an arm that needs images of a
new kind names a pool that :mod:`dermsynth.study.pools` makes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from dermsynth.errors import DermsynthError
from dermsynth.schema import TRAIN, VIEW_SET, WEIGHT

# Pools: images an arm adds, made once per direction and augmented condition.
POOL_SYNTHETIC = "synthetic"  # the selected candidates, best-ranked first
POOL_SYNTHETIC_RANDOM = "synthetic-random"  # candidates in a random order (no selection)
POOL_CLASSICAL = "classical"  # classical augmentations of the seeds
POOL_TONE_SHIFT = "tone-shift"  # training-group images shifted to the target skin tone
POOL_EXTRA_REAL = "extra-real"  # more real images of the target group, never tested


@dataclass(frozen=True)
class ArmInputs:
    """What an arm's training rows are made of (rows are plan / manifest rows)."""

    train: pd.DataFrame  # the direction's real training rows
    seeds: pd.DataFrame  # the augmented condition's seed images
    pool: pd.DataFrame  # the arm's pool, best first (column ``rank`` per seed); may be empty
    dose: int  # rows added beyond the seeds (0 for undosed arms)


@dataclass(frozen=True)
class Arm:
    """One arm: its name, what it is for, and how it builds its training rows."""

    name: str
    summary: str
    build: Callable[[ArmInputs], pd.DataFrame]
    pool: str | None = None  # the images it adds, if any
    dosed: bool = False  # trained at each dose of the study
    augmented: bool = True  # False: trained once per direction, shared by every condition

    @property
    def control(self) -> bool:
        """True for the arms that stand beside the synthetic arm at the same dose."""
        return self.dosed and self.name != SYNTHETIC


ARMS: dict[str, Arm] = {}


def arm(
    name: str, summary: str, *, pool: str | None = None, dosed: bool = False, augmented: bool = True
) -> Callable[[Callable[[ArmInputs], pd.DataFrame]], Callable[[ArmInputs], pd.DataFrame]]:
    """Register an arm under ``name`` (order of registration = order in tables)."""

    def register(build: Callable[[ArmInputs], pd.DataFrame]) -> Callable[[ArmInputs], pd.DataFrame]:
        ARMS[name] = Arm(name, summary, build, pool, dosed, augmented)
        return build

    return register


def get_arm(name: str) -> Arm:
    """The arm called ``name``; an unknown name is refused with the known ones listed."""
    try:
        return ARMS[name]
    except KeyError:
        raise DermsynthError(f"unknown arm {name!r}; known arms: {', '.join(ARMS)}") from None


def _with_seeds(inputs: ArmInputs, *added: pd.DataFrame) -> pd.DataFrame:
    """Training rows, then the seeds, then the added images (as training rows)."""
    extra = [a.assign(split=TRAIN, test_group="") for a in added]
    return pd.concat([inputs.train, inputs.seeds, *extra], ignore_index=True)


def first_by_rank(pool: pd.DataFrame, dose: int) -> pd.DataFrame:
    """The first ``dose`` images of a pool, round-robin over seeds (every seed's best first)."""
    return pool.sort_values(["rank", "parent_id", "image_id"], kind="stable").head(dose)


def _dosed_pool(inputs: ArmInputs) -> pd.DataFrame:
    if len(inputs.pool) < inputs.dose:
        raise DermsynthError(
            f"{inputs.dose} images asked, {len(inputs.pool)} available in the pool; make more "
            "or lower the dose (see `dermsynth study plan`)"
        )
    return first_by_rank(inputs.pool, inputs.dose)


REAL = "real"
REAL_SEED = "real+seed"
SYNTHETIC = "real+seed+synthetic"


@arm(REAL, "the training group's real images only", augmented=False)
def real(inputs: ArmInputs) -> pd.DataFrame:
    """The direction's training rows."""
    return inputs.train.reset_index(drop=True)


@arm(REAL_SEED, "plus the augmented condition's seed images")
def real_seed(inputs: ArmInputs) -> pd.DataFrame:
    """Training rows and the seeds."""
    return _with_seeds(inputs)


@arm(SYNTHETIC, "plus the selected synthetic images", pool=POOL_SYNTHETIC, dosed=True)
def real_seed_synthetic(inputs: ArmInputs) -> pd.DataFrame:
    """Training rows, seeds and the ``dose`` best-ranked selected synthetic images."""
    return _with_seeds(inputs, _dosed_pool(inputs))


@arm(
    "real+seed+oversample",
    "plus the seeds repeated to the same count (each copy its own augmented views)",
    dosed=True,
)
def real_seed_oversample(inputs: ArmInputs) -> pd.DataFrame:
    """Training rows, seeds, and ``dose`` copies of the seeds taken round-robin."""
    seeds = inputs.seeds.reset_index(drop=True)
    if inputs.dose and seeds.empty:
        raise DermsynthError("the oversample arm needs seed images to repeat")
    copies = []
    for k in range(inputs.dose):
        row = seeds.iloc[[k % len(seeds)]]
        copy = 1 + k // len(seeds)
        copies.append(
            row.assign(
                image_id=row["image_id"] + f"#copy{copy}",
                parent_id=row["image_id"],
                **{VIEW_SET: copy},
            )
        )
    added = pd.concat(copies, ignore_index=True) if copies else seeds.iloc[:0]
    return _with_seeds(inputs, added)


@arm(
    "real+seed+reweight",
    "plus the seeds once, their sampler weight raised to the same effective count",
    dosed=True,
)
def real_seed_reweight(inputs: ArmInputs) -> pd.DataFrame:
    """Training rows and the seeds, each seed weighing ``(seeds + dose) / seeds`` rows."""
    n = len(inputs.seeds)
    if n == 0:
        raise DermsynthError("the reweight arm needs seed images to weight")
    seeds = inputs.seeds.assign(**{WEIGHT: (n + inputs.dose) / n})
    return _with_seeds(ArmInputs(inputs.train, seeds, inputs.pool, inputs.dose))


@arm(
    "real+seed+classical",
    "plus classical augmentations of the seeds (crops, flips, rotations, small Lab jitter)",
    pool=POOL_CLASSICAL,
    dosed=True,
)
def real_seed_classical(inputs: ArmInputs) -> pd.DataFrame:
    """Training rows, seeds and ``dose`` classical augmentations of the seeds."""
    return _with_seeds(inputs, _dosed_pool(inputs))


@arm(
    "real+seed+tone-shift",
    "plus training-group images of the condition shifted to the target skin tone in CIE-Lab",
    pool=POOL_TONE_SHIFT,
    dosed=True,
)
def real_seed_tone_shift(inputs: ArmInputs) -> pd.DataFrame:
    """Training rows, seeds and ``dose`` tone-shifted training images of the condition."""
    return _with_seeds(inputs, _dosed_pool(inputs))


@arm(
    "real+seed+extra-real",
    "plus as many more real images of the target group (the ceiling; never from a test set)",
    pool=POOL_EXTRA_REAL,
    dosed=True,
)
def real_seed_extra_real(inputs: ArmInputs) -> pd.DataFrame:
    """Training rows, seeds and ``dose`` further real images of the target group."""
    return _with_seeds(inputs, _dosed_pool(inputs))


@arm(
    "real+seed+synthetic-random",
    "plus synthetic candidates drawn at random instead of by score (does selection matter?)",
    pool=POOL_SYNTHETIC_RANDOM,
    dosed=True,
)
def real_seed_synthetic_random(inputs: ArmInputs) -> pd.DataFrame:
    """Training rows, seeds and ``dose`` candidates in a random order per seed."""
    return _with_seeds(inputs, _dosed_pool(inputs))


ARM_NAMES: tuple[str, ...] = tuple(ARMS)
PAPER_ARMS: tuple[str, ...] = (REAL, REAL_SEED, SYNTHETIC)
CONTROL_ARMS: tuple[str, ...] = tuple(a.name for a in ARMS.values() if a.control)
