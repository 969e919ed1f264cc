"""Stable Diffusion through diffusers: inpainting, img2img and text-to-image.

The model is a hub id or a local folder (a ``save_pretrained`` layout with ``model_index.json``).
On a GPU it runs in half precision (fp16, or bf16 where asked) with PyTorch's scaled-dot-product
attention; on a CPU in fp32 (a half-precision setting falls back to fp32 there, with a note).
DPM-Solver multistep is the default scheduler: it reaches the quality of 50 PNDM steps in about
25. Each image has its own random seed, drawn on the CPU so the starting noise is the same on
every device; the safety checker stays off unless asked.

With ``outpaint_strength`` (the synderm-inpaint recipe) inpainting runs in two passes with the
same prompt, sampler and per-image random streams: pass 1 redraws the seed's kept region (the
central square) at ``strength``, pass 2 redraws the border around it at ``outpaint_strength``,
starting from pass 1's image. As in that recipe, pass 2 leaves a thin frame at the image edge
(1/32 of the side) as it is.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageOps

from dermsynth.config import GeneratorSettings
from dermsynth.errors import DermsynthError
from dermsynth.generate.backends.base import BackendFailure, Job, Result

PIPELINE_CLASSES = {
    "inpaint": "StableDiffusionInpaintPipeline",
    "img2img": "StableDiffusionImg2ImgPipeline",
    "text2img": "StableDiffusionPipeline",
}


# Pass 2 of the two-pass recipe keeps a frame of this share of the side at the image edge.
OUTPAINT_FRAME = 1 / 32


def lesion_mask(mask: Image.Image) -> Image.Image:
    """Pass 1 of two: redraw what the seed's mask keeps (white = redraw)."""
    return ImageOps.invert(mask.convert("L"))


def border_mask(mask: Image.Image) -> Image.Image:
    """Pass 2 of two: redraw the seed mask's border, less a thin frame at the image edge."""
    out = mask.convert("L").copy()
    width = max(1, round(out.size[0] * OUTPAINT_FRAME))
    ImageDraw.Draw(out).rectangle((0, 0, out.size[0] - 1, out.size[1] - 1), outline=0, width=width)
    return out


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or "\\" in model or model.count("/") > 1


class DiffusersBackend:
    """Stable Diffusion pipelines of diffusers (hub id or local folder, optional LoRA)."""

    name = "diffusers"
    default_resolution = 512

    def __init__(self, params: GeneratorSettings) -> None:
        self.params = params
        self.pipe: Any = None
        self._device: str | None = None

    @property
    def resolution(self) -> int:
        """The given --resolution, else the model family's native size."""
        return self.params.resolution or self.default_resolution

    @property
    def model_name(self) -> str:
        """The hub id or folder, as given."""
        return self.params.model

    # -- checks (no weights read) -------------------------------------------------------
    def check(self) -> None:
        """Model location, LoRA file, device and precision, before anything is loaded."""
        self._check_model()
        self._check_common()

    def _check_model(self) -> None:
        model = self.params.model.strip()
        if not model:
            raise DermsynthError(
                "--model is required with --backend diffusers: a hub id such as "
                "'stable-diffusion-v1-5/stable-diffusion-inpainting' (downloaded once into the Hugging "
                "Face cache) or a local folder holding model_index.json"
            )
        path = Path(model).expanduser()
        if path.exists():
            if not (path / "model_index.json").is_file():
                raise DermsynthError(
                    f"{path} has no model_index.json: give a diffusers pipeline folder "
                    "(as written by save_pretrained or `huggingface-cli download ID --local-dir DIR`)"
                )
        elif _looks_like_path(model):
            raise DermsynthError(
                f"model folder {model} not found; give an existing local folder with "
                "model_index.json, or a hub id like 'owner/name'"
            )

    def _check_common(self) -> None:
        params = self.params
        lora = getattr(params, "lora", "")  # the demo model takes none
        if lora and not Path(lora).expanduser().exists():
            raise DermsynthError(
                f"LoRA weights {lora} not found; give the folder written by "
                "`dermsynth generator finetune` or a .safetensors file"
            )
        strengths = {"--strength": params.effective_strength}
        outpaint: float | None = getattr(params, "outpaint_strength", None)
        if outpaint is not None:
            strengths["outpaint_strength"] = outpaint
        for name, strength in strengths.items():
            if params.mode != "text2img" and int(params.steps * strength) < 1:
                raise DermsynthError(
                    f"--steps {params.steps} x {name} {strength} leaves no denoising step; "
                    f"raise --steps or {name}"
                )
        device = self.device_name()
        if params.precision in ("fp16", "bf16") and not device.startswith("cuda"):
            # Half precision is slow or missing on a CPU; a recipe asking for it still runs.
            print(
                f"note: {params.precision} runs on a CUDA GPU only; using fp32 on {device}",
                file=sys.stderr,
                flush=True,
            )

    def device_name(self) -> str:
        """``--device``, or the first GPU if there is one, else the CPU."""
        if self._device is None:
            import torch

            wanted = self.params.device
            if wanted == "auto":
                wanted = "cuda" if torch.cuda.is_available() else "cpu"
            if wanted.startswith("cuda"):
                if not torch.cuda.is_available():
                    raise DermsynthError(f"--device {wanted}: no CUDA GPU is visible here")
                if wanted == "cuda":
                    wanted = f"cuda:{torch.cuda.current_device()}"
            elif wanted != "cpu":
                raise DermsynthError(f"--device must be auto, cpu, cuda or cuda:N, got {wanted!r}")
            self._device = wanted
        return self._device

    def torch_dtype(self) -> Any:
        """fp16 on a GPU by default, fp32 on a CPU (half precision is slow or missing there)."""
        import torch

        precision = self.params.precision
        if not self.device_name().startswith("cuda"):
            precision = "fp32"
        elif precision == "auto":
            precision = "fp16"
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]

    # -- loading ------------------------------------------------------------------------
    def _pipeline_class(self) -> Any:
        import diffusers

        return getattr(diffusers, PIPELINE_CLASSES[self.params.mode])

    def _load_pipeline(self, cls: Any, dtype: Any) -> Any:
        model = self.params.model.strip()
        path = Path(model).expanduser()
        extra: dict[str, Any] = {}
        if not getattr(self.params, "safety_checker", False):
            extra = {"safety_checker": None, "requires_safety_checker": False}
        try:
            if path.exists():
                return cls.from_pretrained(str(path), dtype=dtype, local_files_only=True, **extra)
            return cls.from_pretrained(model, dtype=dtype, **extra)
        except (OSError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DermsynthError(
                f"cannot load model {model!r} ({first}). Give either a hub id reachable from "
                "here (it is downloaded once into the Hugging Face cache) or a local folder "
                "with model_index.json, e.g. from `huggingface-cli download "
                f"{model if not path.exists() else 'ID'} --local-dir DIR` on a machine with a "
                "network"
            ) from None

    def load(self) -> None:
        """Load the pipeline and apply scheduler, precision, attention and LoRA choices."""
        if self.pipe is not None:
            return
        dtype = self.torch_dtype()
        pipe = self._load_pipeline(self._pipeline_class(), dtype)
        self._configure(pipe, dtype)
        self.pipe = pipe

    def _configure(self, pipe: Any, dtype: Any) -> None:
        params = self.params
        scheduler = make_scheduler(params.scheduler, pipe.scheduler)
        if scheduler is not None:
            pipe.scheduler = scheduler
        if (
            getattr(params, "safety_checker", False)
            and getattr(pipe, "safety_checker", None) is None
        ):
            raise DermsynthError(
                f"--safety-checker was asked but {self.model_name} ships no safety checker"
            )
        lora_file: str = getattr(params, "lora", "")
        if lora_file:
            lora = Path(lora_file).expanduser()
            try:
                if lora.is_file():
                    pipe.load_lora_weights(str(lora.parent), weight_name=lora.name)
                else:
                    pipe.load_lora_weights(str(lora))
                pipe.fuse_lora(lora_scale=getattr(params, "lora_scale", 1.0))
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise DermsynthError(f"cannot apply LoRA weights {lora}: {exc}") from None
        device = self.device_name()
        if device.startswith("cuda"):
            from diffusers.models.attention_processor import AttnProcessor2_0

            # Scaled-dot-product attention: the fused flash / memory-efficient kernels.
            pipe.unet.set_attn_processor(AttnProcessor2_0())
            pipe.vae.set_attn_processor(AttnProcessor2_0())
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)

    # -- generation ---------------------------------------------------------------------
    def call_kwargs(self, jobs: list[Job]) -> dict[str, Any]:
        """Arguments of one pipeline call for a batch of jobs."""
        import torch

        params = self.params
        size = self.resolution
        kwargs: dict[str, Any] = {
            "prompt": [j.prompt for j in jobs],
            "num_inference_steps": params.steps,
            "guidance_scale": params.guidance,
            # CPU generators: the same seed gives the same starting noise on any device.
            "generator": [torch.Generator("cpu").manual_seed(j.random_seed) for j in jobs],
            "output_type": "pil",
        }
        negative: str = getattr(params, "negative_prompt", "")
        if negative:
            kwargs["negative_prompt"] = [negative] * len(jobs)
        if params.mode == "text2img":
            kwargs.update(height=size, width=size)
        else:
            kwargs.update(image=[j.image for j in jobs], strength=params.effective_strength)
            if params.mode == "inpaint":
                kwargs.update(mask_image=[j.mask for j in jobs], height=size, width=size)
        return kwargs

    def _call(self, kwargs: dict[str, Any]) -> Any:
        try:
            return self.pipe(**kwargs)
        except Exception as exc:  # noqa: BLE001 - any pipeline error fails this seed only
            raise BackendFailure(f"{type(exc).__name__}: {exc}") from exc

    def _run(self, jobs: list[Job]) -> tuple[list[Image.Image], list[bool]]:
        """One batch's images and safety flags: one pipeline call, or the two-pass recipe."""
        kwargs = self.call_kwargs(jobs)
        outpaint: float | None = getattr(self.params, "outpaint_strength", None)
        if outpaint is None or self.params.mode != "inpaint":
            output = self._call(kwargs)
            return output.images, _flags(output, len(jobs))
        kwargs["mask_image"] = [lesion_mask(j.mask) for j in jobs if j.mask is not None]
        first = self._call(kwargs)
        # Same prompt, sampler and generators: each image's random stream runs on into pass 2.
        kwargs.update(
            image=first.images,
            mask_image=[border_mask(j.mask) for j in jobs if j.mask is not None],
            strength=outpaint,
        )
        second = self._call(kwargs)
        flags = zip(_flags(first, len(jobs)), _flags(second, len(jobs)), strict=True)
        return second.images, [a or b for a, b in flags]

    def generate(self, jobs: list[Job]) -> list[Result]:
        """Run the jobs in batches of --batch-size; a failing batch fails the call."""
        self.load()
        results: list[Result] = []
        size = self.params.batch_size
        for start in range(0, len(jobs), size):
            batch = jobs[start : start + size]
            began = time.perf_counter()
            images, flagged = self._run(batch)
            seconds = (time.perf_counter() - began) / len(batch)
            for job, image, nsfw in zip(batch, images, flagged, strict=True):
                if nsfw:
                    results.append(
                        Result(
                            job, None, seconds, error="flagged by the safety checker", refused=True
                        )
                    )
                else:
                    results.append(Result(job, image, seconds))
        return results


def _flags(output: Any, count: int) -> list[bool]:
    return list(getattr(output, "nsfw_content_detected", None) or [False] * count)


def make_scheduler(name: str, current: Any) -> Any:
    """A scheduler named ``name`` built from the model's own scheduler config (None: keep)."""
    import diffusers

    config = current.config
    if name == "default":
        return None
    if name == "dpm":
        return diffusers.DPMSolverMultistepScheduler.from_config(config)
    if name == "dpm-karras":
        return diffusers.DPMSolverMultistepScheduler.from_config(config, use_karras_sigmas=True)
    if name == "ddim":
        return diffusers.DDIMScheduler.from_config(config)
    if name == "euler":
        return diffusers.EulerDiscreteScheduler.from_config(config)
    if name == "euler-a":
        return diffusers.EulerAncestralDiscreteScheduler.from_config(config)
    if name == "pndm":
        return diffusers.PNDMScheduler.from_config(config)
    raise DermsynthError(f"unknown scheduler {name!r}")
