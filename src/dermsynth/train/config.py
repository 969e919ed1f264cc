"""Every option of a training run, in one place; the defaults are the Groh et al. recipe.

The recipe (paper section 2.4, after Groh et al. 2021): VGG16 pre-trained on ImageNet with every
parameter frozen; ``classifier[6]`` replaced by Linear(4096, 256) - ReLU - Dropout(0.4) -
Linear(256, n) - LogSoftmax; NLLLoss; Adam with its default learning rate; StepLR(7, 0.1); a
WeightedRandomSampler (weights 1 / class count, with replacement); the train and test
transforms of :mod:`dermsynth.train.datasets`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from dermsynth.errors import DermsynthError

PathChoice = Literal["auto", "features", "images"]


@dataclass(frozen=True)
class TrainConfig:
    """Options of one run. ``None`` means "the backbone's own value" or "the optimizer's default"."""

    backbone: str = "vgg16"
    weights: str = "imagenet"  # 'imagenet', 'none' (fixed random init) or a state-dict file
    finetune: bool = False  # False: the recipe's frozen backbone; True: train every parameter
    epochs: int = 20
    batch_size: int = 32
    lr: float | None = None  # None: Adam's default (1e-3)
    step_size: int = 7  # StepLR
    gamma: float = 0.1  # StepLR
    hidden: int = 256  # width of the recipe head
    dropout: float = 0.4  # dropout of the recipe head
    image_size: int | None = None  # final crop; None: the backbone's (224)
    resize: int | None = None  # shorter side before cropping; None: image_size * 256 / 224
    rotation: float = 15.0  # RandomRotation degrees
    crop_scale: tuple[float, float] = (0.8, 1.0)  # RandomResizedCrop scale
    val_fraction: float = 0.0  # share of real training rows held out for validation
    patience: int | None = None  # early stopping: epochs without a better val accuracy
    classes: tuple[str, ...] | None = None  # None: sorted labels of the training rows
    path: PathChoice = "auto"  # 'features' (fast path, frozen only), 'images', or auto
    views: int = 3  # views per training image on the fast path (view 0: un-augmented)
    amp: bool = True  # mixed precision, GPU only
    channels_last: bool = True  # GPU only
    device: str = "auto"
    workers: int = 0  # DataLoader workers (and threads preparing images)
    seed: int = 0
    skip_bad_images: bool = False
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept in config.json

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.lr is None or self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.views >= 1, f"views must be >= 1, got {self.views}"),
            (
                0.0 <= self.val_fraction < 1.0,
                f"val fraction must be in [0, 1), got {self.val_fraction}",
            ),
            (
                self.patience is None or self.patience >= 1,
                f"patience must be >= 1, got {self.patience}",
            ),
            (
                self.patience is None or self.val_fraction > 0,
                "early stopping (patience) needs a validation split: give a val fraction > 0",
            ),
            (
                self.path in ("auto", "features", "images"),
                f"path must be auto, features or images, got {self.path!r}",
            ),
            (
                not (self.path == "features" and self.finetune),
                "the fast (features) path needs a frozen backbone; drop --finetune or use --path images",
            ),
            (
                self.image_size is None or self.image_size >= 32,
                f"image size must be >= 32, got {self.image_size}",
            ),
            (self.workers >= 0, f"workers must be >= 0, got {self.workers}"),
        ]
        for ok, message in checks:
            if not ok:
                raise DermsynthError(message)
        if (
            self.resize is not None
            and self.image_size is not None
            and self.resize < self.image_size
        ):
            raise DermsynthError(
                f"resize ({self.resize}) must be >= image size ({self.image_size})"
            )

    @property
    def uses_features(self) -> bool:
        """True when the run trains its head on cached backbone features (the fast path)."""
        return self.path == "features" or (self.path == "auto" and not self.finetune)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are refused."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise DermsynthError(f"unknown training option(s): {', '.join(unknown)}")
        values = dict(data)
        for key in ("crop_scale", "classes"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)

    # Options that change what a finished run computes; the rest (progress, workers) do not.
    def identity(self) -> dict[str, Any]:
        """The options a resumed run must share with the run it continues."""
        data = self.to_dict()
        for key in ("progress", "workers", "device", "extra", "skip_bad_images"):
            data.pop(key)
        return data
