"""The demo backend: the small conditional diffusion model of :mod:`dermsynth.generate.demo_model`.

``--backend demo`` runs offline on a CPU in seconds. ``--model`` is a folder written by
``dermsynth generator train-demo``, or empty (or ``demo``) for the model shipped with the
package. Modes:

* ``img2img`` (the demo's): a variation of each seed crop (SDEdit): noised to
  ``--strength`` of the schedule, then denoised as the seed's condition on the seed's skin type.
* ``text2img``: a pure sample of the seed's condition and skin type (no seed pixels used).
* ``inpaint`` is refused: the model was not trained to respect a mask.

The condition and skin type come from the seed's ``label`` and ``fst``, not from the prompt,
which is recorded as usual. ``--guidance`` above 1 applies classifier-free guidance (1 turns it
off; about 2 suits this model; the default 7.5 of Stable Diffusion over-saturates it).
``--scheduler`` swaps the model's DDIM as for the diffusers backend. Images are made at the
model's resolution (32 px for the shipped model) and resized (bicubic) to ``--resolution`` when
that differs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dermsynth.config import GeneratorSettings
from dermsynth.errors import DermsynthError
from dermsynth.generate.backends.base import BackendFailure, Job, Result
from dermsynth.generate.backends.diffusers_backend import DiffusersBackend, make_scheduler


class DemoBackend(DiffusersBackend):
    """The demo generator behind the Backend interface (device and checks as for diffusers)."""

    name = "demo"

    def __init__(self, params: GeneratorSettings) -> None:
        super().__init__(params)
        self.generator: Any = None
        self._meta: dict[str, Any] | None = None

    def _folder(self) -> Path:
        from dermsynth.generate.demo_model import SHIPPED_MODEL

        model = self.params.model.strip()
        return Path(model).expanduser() if model and model != "demo" else SHIPPED_MODEL

    def _read_meta(self) -> dict[str, Any]:
        if self._meta is None:
            from dermsynth.generate.demo_model import read_meta

            self._meta = read_meta(self._folder())
        return self._meta

    @property
    def resolution(self) -> int:
        """The given --resolution, else the model's own."""
        return self.params.resolution or int(self._read_meta()["resolution"])

    @property
    def model_name(self) -> str:
        """The folder as given, or ``demo@<data fingerprint>`` for the shipped model."""
        model = self.params.model.strip()
        if model and model != "demo":
            return model
        return f"demo@{self._read_meta()['data_fingerprint'][:12]}"

    def check(self) -> None:
        """Mode, model folder, options the model has no use for; no weights are read."""
        params = self.params
        if params.mode == "inpaint":
            raise DermsynthError(
                "the demo backend makes img2img variations of the seeds or text2img samples; it "
                "has no inpainting model: use --mode img2img (or text2img)"
            )
        if params.precision in ("fp16", "bf16"):
            raise DermsynthError("the demo backend runs in fp32; use --precision fp32 (or auto)")
        self._read_meta()
        self._check_common()

    def torch_dtype(self) -> Any:
        """Always fp32: the model is small, and half precision would only add rounding."""
        import torch

        return torch.float32

    def load(self) -> None:
        """Read the model (once) and apply the --scheduler choice."""
        if self.generator is not None:
            return
        from dermsynth.generate.demo_model import DemoGenerator

        try:
            generator = DemoGenerator.load(self._folder(), device=self.device_name())
        except (OSError, ValueError, RuntimeError) as exc:
            raise DermsynthError(f"cannot load the demo model {self._folder()}: {exc}") from None
        scheduler = make_scheduler(self.params.scheduler, generator.scheduler)
        if scheduler is not None:
            generator.scheduler = scheduler
        self.generator = generator

    def generate(self, jobs: list[Job]) -> list[Result]:
        """Make the jobs in batches of --batch-size; a bad label or skin type fails the seed."""
        self.load()
        params = self.params
        results: list[Result] = []
        for start in range(0, len(jobs), params.batch_size):
            batch = jobs[start : start + params.batch_size]
            missing = [j.seed_id for j in batch if not j.label or j.fst < 0]
            if missing:
                raise BackendFailure(
                    f"seed {missing[0]} has no condition label or skin type; the demo generator "
                    "is conditioned on both"
                )
            began = time.perf_counter()
            try:
                images = self.generator.generate(
                    [j.label for j in batch],
                    [j.fst for j in batch],
                    [j.random_seed for j in batch],
                    images=None if params.mode == "text2img" else [j.image for j in batch],
                    strength=params.effective_strength,
                    steps=params.steps,
                    guidance=params.guidance,
                    size=self.resolution,
                )
            except DermsynthError as exc:
                raise BackendFailure(str(exc)) from None
            seconds = (time.perf_counter() - began) / len(batch)
            results.extend(
                Result(job, image, seconds) for job, image in zip(batch, images, strict=True)
            )
        return results
