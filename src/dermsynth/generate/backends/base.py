"""The one small interface every generator backend implements, and its parameters.

A backend turns jobs (a seed's crop, mask and prompt, and one random seed per wanted image)
into images. It is constructed cheaply, validated, and only then loads its model, so every
input problem is reported before any weights are read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from PIL import Image

from dermsynth.errors import DermsynthError

MODES: tuple[str, ...] = ("inpaint", "img2img", "text2img")
SCHEDULERS: tuple[str, ...] = ("dpm", "dpm-karras", "ddim", "euler", "euler-a", "pndm", "default")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")
BACKENDS: tuple[str, ...] = ("diffusers", "tiny", "openai", "demo")

# Without an explicit strength, inpainting redraws the masked border fully and img2img keeps
# the seed's layout (the diffusers defaults for each pipeline family).
DEFAULT_STRENGTH = {"inpaint": 1.0, "img2img": 0.75, "text2img": 1.0}


@dataclass
class GenerationParams:
    """Everything that decides what images a backend makes (all recorded per image)."""

    backend: str = "diffusers"
    model: str = ""
    mode: str = "inpaint"
    steps: int = 25
    guidance: float = 7.5
    strength: float | None = None
    negative_prompt: str = ""
    scheduler: str = "dpm"
    resolution: int | None = None
    precision: str = "auto"
    device: str = "auto"
    batch_size: int = 4
    lora: str = ""
    lora_scale: float = 1.0
    safety_checker: bool = False
    random_seed: int = 0
    # openai only: retries on 429 and 5xx
    retries: int = 5
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Refuse out-of-range values with the option's name (before any model is loaded)."""
        if self.backend not in BACKENDS:
            raise DermsynthError(
                f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}"
            )
        if self.mode not in MODES:
            raise DermsynthError(f"unknown --mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.steps < 1:
            raise DermsynthError(f"--steps must be >= 1, got {self.steps}")
        if self.guidance < 0:
            raise DermsynthError(f"--guidance must be >= 0, got {self.guidance}")
        if self.strength is not None and not 0.0 < self.strength <= 1.0:
            raise DermsynthError(f"--strength must be in (0, 1], got {self.strength}")
        if self.scheduler not in SCHEDULERS:
            raise DermsynthError(
                f"unknown --scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULERS)}"
            )
        if self.precision not in PRECISIONS:
            raise DermsynthError(
                f"unknown --precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}"
            )
        if self.batch_size < 1:
            raise DermsynthError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.resolution is not None and (self.resolution < 8 or self.resolution % 8):
            raise DermsynthError(
                f"--resolution must be a multiple of 8 (>= 8), got {self.resolution}"
            )
        if self.retries < 0:
            raise DermsynthError(f"--retries must be >= 0, got {self.retries}")
        if self.backend == "openai" and self.mode != "inpaint":
            raise DermsynthError(
                "the openai backend uses the images-edit endpoint (inpainting); use --mode inpaint"
            )
        if self.backend == "openai" and self.lora:
            raise DermsynthError("--lora applies to the diffusers and tiny backends only")

    @property
    def effective_strength(self) -> float:
        """The strength used: the given one, else the mode's default."""
        return self.strength if self.strength is not None else DEFAULT_STRENGTH[self.mode]

    def record(self) -> dict[str, Any]:
        """Flat columns for the manifest (what decided each image)."""
        out = asdict(self)
        out.pop("extra")
        out["strength"] = self.effective_strength
        out.update({f"extra_{k}": v for k, v in self.extra.items()})
        return out


@dataclass
class Job:
    """One image to make: candidate ``index`` of seed ``seed_id`` with its random seed."""

    seed_id: str
    index: int
    prompt: str
    image: Image.Image | None
    mask: Image.Image | None
    random_seed: int
    # The seed's condition and skin type, for backends conditioned on them rather than on text.
    label: str = ""
    fst: int = -1


@dataclass
class Result:
    """A finished image (or None with ``error``), and the seconds its share of a batch took."""

    job: Job
    image: Image.Image | None
    seconds: float
    error: str = ""
    refused: bool = False
    details: dict[str, Any] = field(default_factory=dict)


class BackendFailure(Exception):
    """A backend could not make a seed's images; recorded for that seed, the run goes on."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class Backend(Protocol):
    """What the generation loop needs from a backend."""

    name: str
    params: GenerationParams

    @property
    def resolution(self) -> int:
        """Side of the square images it takes and makes."""

    @property
    def model_name(self) -> str:
        """The model, as recorded in the manifest."""

    def check(self) -> None:
        """Cheap checks of the configuration (paths, keys); no weights are read."""

    def load(self) -> None:
        """Read the model (once)."""

    def generate(self, jobs: list[Job]) -> list[Result]:
        """Make the images of ``jobs`` (all of one seed); raise BackendFailure if it cannot."""

    def device_name(self) -> str:
        """Where it runs (``cpu``, ``cuda:0``, ``api``)."""


def make_backend(params: GenerationParams) -> Backend:
    """The backend named in ``params`` (constructed, checked, not loaded)."""
    params.validate()
    backend: Backend
    if params.backend == "diffusers":
        from dermsynth.generate.backends.diffusers_backend import DiffusersBackend

        backend = DiffusersBackend(params)
    elif params.backend == "tiny":
        from dermsynth.generate.backends.tiny import TinyBackend

        backend = TinyBackend(params)
    elif params.backend == "demo":
        from dermsynth.generate.backends.demo import DemoBackend

        backend = DemoBackend(params)
    else:
        from dermsynth.generate.backends.openai_backend import OpenAIBackend

        backend = OpenAIBackend(params)
    backend.check()
    return backend
