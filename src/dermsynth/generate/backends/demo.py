"""The demo backend: the small conditional diffusion pipeline of :mod:`dermsynth.generate.demo`.

``--backend demo`` runs offline on a CPU. ``--model`` is a folder written by ``dermsynth
generator train-demo``, or empty (or ``demo``) for the model shipped with the package. Modes:

* ``img2img`` (the demo's): a variation of each seed crop (SDEdit): noised to ``--strength`` of
  the schedule, then denoised as the seed's condition on the seed's skin type.
* ``text2img``: a pure sample of the seed's condition and skin type (no seed pixels used).
* ``inpaint`` is refused: the model was not trained to respect a mask.

The condition and skin type come from the seed's ``label`` and ``fst``, not from the prompt,
which is recorded as usual. ``--guidance`` above 1 applies classifier-free guidance (1 turns it
off and halves the cost; the demo uses 2.0, and Stable Diffusion's 7.5 over-saturates this model).
``--scheduler`` swaps the model's SDE-DPM-Solver++ as for the diffusers backend (``dpm``, the
default, keeps it: it is built from the model's own scheduler config). Images are made at
the model's resolution (64 px for the shipped model) and resized (bicubic) to ``--resolution``
when that differs. Each image's noise comes from its own random seed, so an image does not
depend on the batch it ran in.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PIL import Image

from dermsynth.config import GeneratorSettings
from dermsynth.errors import DermsynthError
from dermsynth.generate.backends.base import BackendFailure, Job, Result
from dermsynth.generate.backends.diffusers_backend import DiffusersBackend, make_scheduler


class DemoBackend(DiffusersBackend):
    """The demo generator behind the Backend interface (device and checks as for diffusers)."""

    name = "demo"

    def __init__(self, params: GeneratorSettings) -> None:
        super().__init__(params)
        self._resolution: int | None = None

    def _folder(self) -> Path:
        from dermsynth.generate.demo import SHIPPED_MODEL

        model = self.params.model.strip()
        return Path(model).expanduser() if model and model != "demo" else SHIPPED_MODEL

    @property
    def resolution(self) -> int:
        """The given --resolution, else the model's own."""
        if self.params.resolution:
            return int(self.params.resolution)
        if self._resolution is None:
            from dermsynth.generate.demo.pipeline import model_resolution

            self._resolution = model_resolution(self._folder())
        return self._resolution

    @property
    def model_name(self) -> str:
        """The folder as given, or ``demo@<data fingerprint>`` for the shipped model."""
        from dermsynth.generate.demo import read_record

        model = self.params.model.strip()
        if model and model != "demo":
            return model
        return f"demo@{read_record(self._folder()).get('data_fingerprint', 'unknown')[:12]}"

    def check(self) -> None:
        """Mode, model folder, options the model has no use for; no weights are read."""
        from dermsynth.generate.demo import model_index

        params = self.params
        if params.mode == "inpaint":
            raise DermsynthError(
                "the demo backend makes img2img variations of the seeds or text2img samples; it "
                "has no inpainting model: use --mode img2img (or text2img)"
            )
        if params.precision in ("fp16", "bf16"):
            raise DermsynthError("the demo backend runs in fp32; use --precision fp32 (or auto)")
        model_index(self._folder())
        self._check_common()

    def torch_dtype(self) -> Any:
        """Always fp32: the model is small, and half precision would only add rounding."""
        import torch

        return torch.float32

    def load(self) -> None:
        """Read the pipeline (once) and apply the --scheduler choice."""
        if self.pipe is not None:
            return
        from dermsynth.generate.demo import load_demo_pipeline

        pipe = load_demo_pipeline(self._folder(), device=self.device_name())
        scheduler = make_scheduler(self.params.scheduler, pipe.scheduler)
        if scheduler is not None:
            pipe.scheduler = scheduler
        self.pipe = pipe

    def generate(self, jobs: list[Job]) -> list[Result]:
        """Make the jobs in batches of --batch-size; a bad label or skin type fails the seed."""
        self.load()
        results: list[Result] = []
        for start in range(0, len(jobs), self.params.batch_size):
            batch = jobs[start : start + self.params.batch_size]
            missing = [j.seed_id for j in batch if not j.label or j.fst < 0]
            if missing:
                raise BackendFailure(
                    f"seed {missing[0]} has no condition label or skin type; the demo generator "
                    "is conditioned on both"
                )
            began = time.perf_counter()
            try:
                images = self._sample(batch)
            except DermsynthError as exc:
                raise BackendFailure(str(exc)) from None
            seconds = (time.perf_counter() - began) / len(batch)
            results.extend(
                Result(job, image, seconds) for job, image in zip(batch, images, strict=True)
            )
        return results

    def _sample(self, batch: list[Job]) -> list[Image.Image]:
        import torch

        params = self.params
        images = self.pipe(
            [j.label for j in batch],
            [j.fst for j in batch],
            images=None if params.mode == "text2img" else [j.image for j in batch],
            strength=params.effective_strength,
            num_inference_steps=params.steps,
            guidance_scale=params.guidance,
            # CPU generators: the same seed gives the same noise on any device and in any batch.
            generator=[torch.Generator("cpu").manual_seed(int(j.random_seed)) for j in batch],
        ).images
        size = self.resolution
        if images[0].size != (size, size):
            images = [im.resize((size, size), Image.Resampling.BICUBIC) for im in images]
        return images
