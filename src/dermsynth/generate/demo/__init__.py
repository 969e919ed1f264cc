"""The demo's generator: a small condition- and skin-type-conditional pixel diffusion pipeline.

A diffusers :class:`~diffusers.DiffusionPipeline` (:class:`DemoPipeline`) of three components,
saved and loaded with ``save_pretrained`` / ``from_pretrained``::

    model_index.json   the pipeline class, its components and the patch size
    unet/              UNet2DModel on 2x2 pixel patches (v-prediction, cosine noise schedule)
    scheduler/         SDE-DPM-Solver++ (2M), trailing timesteps
    conditioning/      DemoConditioning: condition + Fitzpatrick-type embedding
    training.json      settings, data fingerprint, per-type counts, loss curve, seconds
    README.txt         what the folder is and the command that reproduces it

It samples class-conditionally (classifier-free guidance when ``guidance_scale`` > 1): text2img
samples of a condition on a skin type, or img2img (SDEdit) variations of seed images at a
strength; every image draws its noise from its own generator. Training
(:func:`train_demo_generator`) uses diffusers' ``EMAModel`` and
``get_cosine_schedule_with_warmup``; it resumes from atomic checkpoints and writes the finished
folder in one step. The package ships one such folder (:data:`SHIPPED_MODEL`), trained by
:func:`reproduce_shipped_model` on a simulated draw of its own (``random_seed=1000``), so the
generator never saw an image of the demo's data (``random_seed=0``).
"""

from __future__ import annotations

from dermsynth.generate.demo.conditioning import DemoConditioning
from dermsynth.generate.demo.pipeline import (
    SHIPPED_MODEL,
    DemoPipeline,
    load_demo_pipeline,
    model_index,
    sampling_scheduler,
)
from dermsynth.generate.demo.train import (
    SHIPPED_DATA,
    DemoTrainConfig,
    read_record,
    reproduce_shipped_model,
    train_demo_generator,
)

__all__ = [
    "SHIPPED_DATA",
    "SHIPPED_MODEL",
    "DemoConditioning",
    "DemoPipeline",
    "DemoTrainConfig",
    "load_demo_pipeline",
    "model_index",
    "read_record",
    "reproduce_shipped_model",
    "sampling_scheduler",
    "train_demo_generator",
]
