"""The demo generator as a diffusers pipeline: UNet, scheduler and conditioning, and its sampler.

:class:`DemoPipeline` makes, per (condition, FST, ``torch.Generator``), a pure sample
(text2img) or a variation of a seed image (img2img, SDEdit: the seed is noised to ``strength``
of the schedule and denoised under the condition and FST). Every image draws its noise from its
own generator, so it does not depend on the batch it ran in. ``guidance_scale`` > 1 applies
classifier-free guidance (a second, unconditional pass per step).

The UNet works on 2x2 pixel patches (``patch_size``): a 64 px RGB image enters as a 32x32 grid of
12 channels (``pixel_unshuffle``), which quarters the cost of every layer against a 64x64 grid and
keeps the pixels themselves (no autoencoder to train or to blur the fine morphology).
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Imported from their modules: diffusers' top-level names are lazy, and a type checker
# would see its placeholder classes there.
from diffusers.models.unets.unet_2d import UNet2DModel
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from dermsynth.errors import DermsynthError
from dermsynth.generate.demo.conditioning import DemoConditioning

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "weights" / "demo"
PIPELINE_CLASS = "DemoPipeline"
COMPONENTS: tuple[str, ...] = ("unet", "scheduler", "conditioning")


def noise_schedule() -> dict[str, Any]:
    """The forward process the model is trained on (shared by every sampling scheduler)."""
    # Cosine betas (improved DDPM) keep signal at mid timesteps, where img2img works; the model
    # predicts v, which weights the nearly pure-noise steps (they set a sample's skin tone).
    return {
        "num_train_timesteps": 1000,
        "beta_schedule": "squaredcos_cap_v2",
        "prediction_type": "v_prediction",
    }


def sampling_scheduler() -> DPMSolverMultistepScheduler:
    """SDE-DPM-Solver++ (2M) over trailing timesteps: pure samples start from pure noise (t = T-1).

    The stochastic variant: its fresh noise at each step (from each image's own generator)
    washes out the fine grain that the deterministic solver leaves in this small model's
    samples; both were compared on the same seeds (benchmarks/RESULTS.md).
    """
    return DPMSolverMultistepScheduler(
        **noise_schedule(),
        algorithm_type="sde-dpmsolver++",
        solver_order=2,
        timestep_spacing="trailing",
        final_sigmas_type="zero",
    )


def to_pixels(image: Image.Image, resolution: int) -> np.ndarray:
    """An RGB image as a float array in [-1, 1] (HWC), resized to ``resolution``."""
    image = image.convert("RGB")
    if image.size != (resolution, resolution):
        shrink = image.size[0] > resolution
        method = Image.Resampling.LANCZOS if shrink else Image.Resampling.BICUBIC
        image = image.resize((resolution, resolution), method)
    return np.asarray(image, dtype=np.float32) / 127.5 - 1.0


def from_pixels(pixels: torch.Tensor) -> list[Image.Image]:
    """A batch in [-1, 1] (NCHW) as RGB images."""
    array = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a.permute(1, 2, 0).cpu().numpy()) for a in array]


class DemoPipeline(DiffusionPipeline):
    """Class- and skin-type-conditional pixel diffusion: text2img samples and img2img variations."""

    model_cpu_offload_seq = "conditioning->unet"  # type: ignore[assignment]  # declared None
    # Set by register_modules: declared for type checkers.
    unet: UNet2DModel
    scheduler: Any
    conditioning: DemoConditioning

    def __init__(
        self,
        unet: UNet2DModel,
        scheduler: Any,
        conditioning: DemoConditioning,
        patch_size: int = 2,
    ) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, conditioning=conditioning)
        self.register_to_config(patch_size=patch_size)

    @property
    def resolution(self) -> int:
        """Side of the images it makes, in pixels."""
        return int(self.unet.config["sample_size"]) * int(self.config["patch_size"])

    @property
    def conditions(self) -> list[str]:
        """The conditions it knows."""
        return self.conditioning.conditions

    def _embeddings(
        self, conditions: Sequence[str], fsts: Sequence[int], cfg: bool
    ) -> torch.Tensor:
        embedding = self.conditioning(
            self.conditioning.condition_ids(conditions), self.conditioning.fst_ids(fsts)
        )
        if cfg:
            embedding = torch.cat([embedding, self.conditioning.unconditional(len(conditions))])
        return embedding

    def _start(
        self,
        noise: torch.Tensor,
        images: Sequence[Image.Image] | None,
        steps: int,
        strength: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The starting sample and the timesteps left (all of them without seed images)."""
        self.scheduler.set_timesteps(steps, device=self.device)
        order = self.scheduler.order
        begin = 0 if images is None else steps - min(int(steps * strength), steps)
        if begin >= steps:
            raise DermsynthError(
                f"steps {steps} x strength {strength} leaves no denoising step; raise either"
            )
        timesteps = self.scheduler.timesteps[begin * order :]
        if hasattr(self.scheduler, "set_begin_index"):
            # Also for pure samples: a schedule whose rounded timesteps repeat (Karras sigmas)
            # would otherwise start at the repeat.
            self.scheduler.set_begin_index(begin * order)
        if images is None:
            return noise * self.scheduler.init_noise_sigma, timesteps
        seeds = np.stack([to_pixels(image, self.resolution) for image in images])
        seeds_t = torch.from_numpy(seeds).permute(0, 3, 1, 2).to(self.device, noise.dtype)
        start = timesteps[:1].repeat(len(images))
        return self.scheduler.add_noise(seeds_t, noise, start), timesteps

    @torch.no_grad()
    def __call__(
        self,
        conditions: Sequence[str],
        fsts: Sequence[int],
        *,
        images: Sequence[Image.Image] | None = None,
        strength: float = 1.0,
        num_inference_steps: int = 20,
        guidance_scale: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple[Any]:
        """One image per (condition, FST[, seed image]); a list of generators seeds each image.

        ``images``: seed images for img2img variations (SDEdit at ``strength``); without them,
        pure samples. ``output_type``: ``pil``, ``np`` (NHWC in [0, 1]) or ``pt`` (NCHW in
        [0, 1]).
        """
        n = len(conditions)
        if len(fsts) != n or (images is not None and len(images) != n):
            raise DermsynthError("conditions, fsts (and images) must have the same length")
        if isinstance(generator, list) and len(generator) != n:
            raise DermsynthError(f"{len(generator)} generators for {n} images; give one per image")
        cfg = guidance_scale > 1.0
        embedding = self._embeddings(conditions, fsts, cfg)
        shape = (n, 3, self.resolution, self.resolution)
        noise = randn_tensor(shape, generator=generator, device=self.device, dtype=self.unet.dtype)
        x, timesteps = self._start(noise, images, num_inference_steps, strength)
        patch = int(self.config["patch_size"])
        x = torch.nn.functional.pixel_unshuffle(x, patch)
        step_kwargs = (
            {"generator": generator}
            if "generator" in inspect.signature(self.scheduler.step).parameters
            else {}
        )
        for t in self.progress_bar(timesteps):
            model_in = self.scheduler.scale_model_input(x, t)
            if cfg:
                model_in = torch.cat([model_in, model_in])
            predicted = self.unet(model_in, t, class_labels=embedding).sample
            if cfg:
                conditional, unconditional = predicted.chunk(2)
                predicted = unconditional + guidance_scale * (conditional - unconditional)
            x = self.scheduler.step(predicted, t, x, **step_kwargs).prev_sample
        pixels = torch.nn.functional.pixel_shuffle(x, patch).clamp(-1, 1)
        out = _convert(pixels, output_type)
        return ImagePipelineOutput(images=out) if return_dict else (out,)


def _convert(pixels: torch.Tensor, output_type: str) -> Any:
    if output_type == "pil":
        return from_pixels(pixels)
    unit = (pixels + 1) / 2
    if output_type == "pt":
        return unit
    if output_type == "np":
        return unit.permute(0, 2, 3, 1).cpu().numpy()
    raise DermsynthError(f"output_type must be pil, np or pt, got {output_type!r}")


def build_unet(
    resolution: int,
    patch_size: int,
    block_out_channels: Sequence[int],
    layers_per_block: int,
) -> UNet2DModel:
    """A UNet on ``patch_size`` patches, with attention only at its coarsest level."""
    depth = len(block_out_channels)
    down = ("DownBlock2D",) * (depth - 1) + ("AttnDownBlock2D",)
    up = ("AttnUpBlock2D",) + ("UpBlock2D",) * (depth - 1)
    channels = 3 * patch_size * patch_size
    return UNet2DModel(
        sample_size=resolution // patch_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        down_block_types=down,
        up_block_types=up,
        attention_head_dim=32,
        norm_num_groups=min(16, block_out_channels[0]),
        # Scale-and-shift of every ResNet's norm by the time + class embedding (as in ADM):
        # a stronger conditioning than adding it, for the cost of one wider projection.
        resnet_time_scale_shift="scale_shift",
        class_embed_type="identity",
    )


def model_index(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``model_index.json`` of a demo model folder; one clear line when it is not one."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DermsynthError(
            f"demo model folder {folder} not found; train one with `dermsynth generator "
            "train-demo --out DIR`, or leave --model empty for the shipped one"
        )
    path = folder / "model_index.json"
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DermsynthError(
            f"{folder} is not a demo generator folder (no model_index.json); give a folder "
            "written by `dermsynth generator train-demo`"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DermsynthError(f"{path} is unreadable ({exc})") from None
    if not isinstance(index, dict) or index.get("_class_name") != PIPELINE_CLASS:
        found = index.get("_class_name") if isinstance(index, dict) else None
        raise DermsynthError(
            f"{folder} holds a {found or 'different'} pipeline, not a demo generator; give a "
            "folder written by `dermsynth generator train-demo`"
        )
    missing = [c for c in COMPONENTS if not (folder / c).is_dir()]
    if missing:
        raise DermsynthError(
            f"{folder} lacks {', '.join(missing)}; re-run `dermsynth generator train-demo`"
        )
    return index


def model_resolution(folder: str | os.PathLike[str]) -> int:
    """Side of the images a model folder makes, read from its configs (no weights)."""
    index = model_index(folder)
    try:
        unet = json.loads((Path(folder) / "unet" / "config.json").read_text(encoding="utf-8"))
        return int(unet["sample_size"]) * int(index.get("patch_size", 1))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DermsynthError(f"{folder}/unet/config.json is unreadable ({exc})") from None


def load_demo_pipeline(
    folder: str | os.PathLike[str] | None = None, device: str = "cpu"
) -> DemoPipeline:
    """Read a demo model folder (default: the shipped one) in fp32, ready to sample on ``device``."""
    folder = Path(folder).expanduser() if folder else SHIPPED_MODEL
    model_index(folder)
    from diffusers.utils import logging as diffusers_logging

    bars = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    try:
        # fp16 weights on disk would be upcast: on a CPU fp32 is both faster and exact. A few MB
        # gain nothing from low-memory loading, which without `accelerate` (not a dependency of
        # the demo) only prints a warning per load.
        pipe = DemoPipeline.from_pretrained(
            str(folder), dtype=torch.float32, local_files_only=True, low_cpu_mem_usage=False
        )
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DermsynthError(f"cannot load the demo model {folder}: {reason}") from None
    finally:
        if bars:
            diffusers_logging.enable_progress_bar()
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
