"""The one small interface every generator backend implements, and its parameters.

A backend turns jobs (a seed's crop, mask and prompt, and one random seed per wanted image)
into images. It is constructed cheaply, validated, and only then loads its model, so every
input problem is reported before any weights are read.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

from dermsynth.config import GeneratorSettings


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
    params: GeneratorSettings

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


# Backends by name: module and class, imported only when used (their libraries are heavy).
BACKEND_CLASSES: dict[str, tuple[str, str]] = {
    "diffusers": ("dermsynth.generate.backends.diffusers_backend", "DiffusersBackend"),
    "tiny": ("dermsynth.generate.backends.tiny", "TinyBackend"),
    "demo": ("dermsynth.generate.backends.demo", "DemoBackend"),
    "openai": ("dermsynth.generate.backends.openai_backend", "OpenAIBackend"),
}


def make_backend(params: GeneratorSettings) -> Backend:
    """The backend named in ``params`` (constructed, checked, not loaded)."""
    module, name = BACKEND_CLASSES[params.backend]
    backend: Backend = getattr(importlib.import_module(module), name)(params)
    backend.check()
    return backend
