"""The study config: one YAML file, validated with pydantic, every problem listed at once.

A config names the dataset, the conditions of the classifier, which are augmented, the
directions (train group -> test groups), the arms and doses, repeats, and the settings of the
generator, the selection and the classifier. Relative paths are read from the config's folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dermsynth.data.fst import FST_TYPES, group_label
from dermsynth.errors import DermsynthError

ARMS: tuple[str, ...] = ("real", "real+seed", "real+seed+synthetic")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_group(value: list[int]) -> list[int]:
    if not value:
        raise ValueError("an FST group needs at least one skin type")
    bad = [v for v in value if v not in FST_TYPES]
    if bad:
        raise ValueError(f"skin types must be 1..6, got {bad}")
    if len(set(value)) != len(value):
        raise ValueError(f"skin type repeated in {value}")
    return sorted(value)


class DatasetConfig(_Strict):
    """Where the table and images are, and which column holds the skin type."""

    csv: Path
    images: Path | None = None
    fst_column: str = "fitzpatrick_scale"
    id_column: str | None = None
    label_column: str | None = None
    path_column: str | None = None

    def load(self) -> Any:
        """The dataset as a validated manifest (see :func:`dermsynth.data.manifest.load_manifest`)."""
        from dermsynth.data.manifest import load_manifest

        return load_manifest(
            self.csv,
            fst_column=self.fst_column,
            id_column=self.id_column,
            label_column=self.label_column,
            path_column=self.path_column,
            images_dir=self.images,
        )


class DirectionConfig(_Strict):
    """Train on ``train``; test on each of ``test``; seeds from ``seed`` (default: opposite extreme)."""

    train: list[int]
    test: list[list[int]] = Field(min_length=1)
    seed: list[int] | None = None

    _train = field_validator("train")(_check_group)

    @field_validator("test")
    @classmethod
    def _tests(cls, value: list[list[int]]) -> list[list[int]]:
        return [_check_group(group) for group in value]

    @field_validator("seed")
    @classmethod
    def _seed(cls, value: list[int] | None) -> list[int] | None:
        return None if value is None else _check_group(value)

    @model_validator(mode="after")
    def _no_overlap(self) -> DirectionConfig:
        seen = set(self.train)
        for group in self.test:
            if seen & set(group):
                raise ValueError(
                    f"test group {group_label(group)} overlaps the training group or another test group"
                )
            seen |= set(group)
        return self

    @property
    def name(self) -> str:
        """E.g. ``train_1-2``."""
        return f"train_{group_label(self.train)}"


class GeneratorConfig(_Strict):
    """Which generator makes the candidates, and its parameters."""

    backend: Literal["diffusers", "openai", "tiny", "demo"] = "diffusers"
    model: str = "runwayml/stable-diffusion-inpainting"
    mode: Literal["inpaint", "img2img", "text2img"] = "inpaint"
    lora: Path | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    seconds_per_image: float = Field(
        1.0, gt=0, description="Your hardware's generation time per image, for the cost estimate."
    )


class SelectionConfig(_Strict):
    """Weights of the candidate scores and the leakage guard."""

    weights: dict[Literal["tone", "pathology", "similarity", "quality"], float] = Field(
        default_factory=lambda: {"tone": 1.0, "pathology": 1.0, "similarity": 0.5, "quality": 0.5}
    )
    leakage_threshold: int = Field(6, ge=0)
    review: bool = False

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in value.values()):
            raise ValueError("selection weights must be >= 0")
        if not any(w > 0 for w in value.values()):
            raise ValueError("at least one selection weight must be > 0")
        return value


class ClassifierConfig(_Strict):
    """The classifier recipe (Groh et al. by default) and how it is trained."""

    backbone: str = "vgg16"
    weights: str = "imagenet"
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    image_size: int = Field(224, ge=32)
    fine_tune: bool = False
    fast_path: bool = True
    train_views: int = Field(
        8, ge=1, description="Augmented views per training image on the fast path."
    )
    seconds_per_image: float = Field(
        0.05,
        gt=0,
        description="Your hardware's backbone time per image view, for the cost estimate.",
    )


class ExecutorConfig(_Strict):
    """Where the grid runs: in this process, or over a Ray cluster."""

    kind: Literal["local", "ray"] = "local"
    address: str | None = None
    workers: int = Field(1, ge=1)


class StudyConfig(_Strict):
    """A whole study: the paper's protocol by default."""

    name: str = "study"
    dataset: DatasetConfig
    conditions: list[str] = Field(min_length=2)
    augmented: list[str] = Field(min_length=1)
    directions: list[DirectionConfig] = Field(min_length=1)
    seeds_per_group: int = Field(8, ge=1)
    candidates_per_seed: int = Field(8, ge=1)
    synthetic_per_seed: int = Field(4, ge=1)
    arms: list[Literal["real", "real+seed", "real+seed+synthetic"]] = Field(
        default_factory=lambda: list(ARMS), min_length=1
    )
    doses: list[int] = Field(default_factory=lambda: [2, 8, 16, 32])
    repeats: int = Field(1, ge=1)
    random_seed: int = 0
    simulated: bool = False
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)

    @field_validator("doses")
    @classmethod
    def _doses(cls, value: list[int]) -> list[int]:
        if any(d < 1 for d in value):
            raise ValueError("doses must be >= 1 synthetic images")
        if len(set(value)) != len(value):
            raise ValueError("a dose is repeated")
        return sorted(value)

    @field_validator("arms")
    @classmethod
    def _arms(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("an arm is repeated")
        return [a for a in ARMS if a in value]

    @model_validator(mode="after")
    def _consistent(self) -> StudyConfig:
        problems = []
        if self.synthetic_per_seed > self.candidates_per_seed:
            problems.append(
                f"synthetic_per_seed ({self.synthetic_per_seed}) is more than candidates_per_seed "
                f"({self.candidates_per_seed}): selection keeps some of the candidates"
            )
        full = self.seeds_per_group * self.synthetic_per_seed
        too_big = [d for d in self.doses if d > full]
        if too_big:
            problems.append(
                f"doses {too_big} exceed the synthetic images made per condition and direction "
                f"(seeds_per_group x synthetic_per_seed = {full})"
            )
        lower = [c.lower() for c in self.conditions]
        if len(set(lower)) != len(lower):
            problems.append("a condition is listed twice")
        missing = [a for a in self.augmented if a.lower() not in lower]
        if missing:
            problems.append(f"augmented condition(s) {missing} are not among the conditions")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def full_dose(self) -> int:
        """Synthetic images in the full ``real+seed+synthetic`` arm (paper: 8 x 4 = 32)."""
        return self.seeds_per_group * self.synthetic_per_seed

    def fingerprint(self) -> str:
        """A short hash of everything in the config: a run folder belongs to one config."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _format_errors(path: Path, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown setting (check its spelling)"
        lines.append(f"{loc}: {message}")
    return f"{path}: {len(lines)} problem(s) in the study config: " + "; ".join(lines)


def load_config(path: str | os.PathLike[str]) -> StudyConfig:
    """Read and validate a study config; paths inside it are resolved from its folder."""
    path = Path(path)
    if not path.is_file():
        raise DermsynthError(f"no such config file: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DermsynthError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise DermsynthError(
            f"{path}: a study config is a YAML mapping (key: value), got {type(raw).__name__}"
        )
    try:
        config = StudyConfig.model_validate(raw)
    except ValidationError as exc:
        raise DermsynthError(_format_errors(path, exc)) from None
    base = path.resolve().parent
    dataset = config.dataset.model_copy(
        update={
            "csv": base / config.dataset.csv,
            "images": None if config.dataset.images is None else base / config.dataset.images,
        }
    )
    return config.model_copy(update={"dataset": dataset})
