"""Stable Diffusion through diffusers: inpainting, img2img and text-to-image.

The model is a hub id or a local folder (a ``save_pretrained`` layout with ``model_index.json``).
On a GPU it runs in half precision (fp16, or bf16 where asked) with PyTorch's scaled-dot-product
attention; on a CPU in fp32. DPM-Solver multistep is the default scheduler: it reaches the
quality of 50 PNDM steps in about 25. Each image has its own random seed, drawn on the CPU so
the starting noise is the same on every device; the safety checker stays off unless asked.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dermsynth.config import GeneratorSettings
from dermsynth.errors import DermsynthError
from dermsynth.generate.backends.base import BackendFailure, Job, Result

PIPELINE_CLASSES = {
    "inpaint": "StableDiffusionInpaintPipeline",
    "img2img": "StableDiffusionImg2ImgPipeline",
    "text2img": "StableDiffusionPipeline",
}


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
                "'stabilityai/stable-diffusion-2-inpainting' (downloaded once into the Hugging "
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
        if params.mode != "text2img" and int(params.steps * params.effective_strength) < 1:
            raise DermsynthError(
                f"--steps {params.steps} x --strength {params.effective_strength} leaves no "
                "denoising step; raise --steps or --strength"
            )
        device = self.device_name()
        if params.precision in ("fp16", "bf16") and not device.startswith("cuda"):
            raise DermsynthError(
                f"--precision {params.precision} needs a GPU; on {device} use fp32 (or auto)"
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
        if precision == "auto":
            precision = "fp16" if self.device_name().startswith("cuda") else "fp32"
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
                return cls.from_pretrained(
                    str(path), torch_dtype=dtype, local_files_only=True, **extra
                )
            return cls.from_pretrained(model, torch_dtype=dtype, **extra)
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
        if getattr(params, "lora", ""):
            lora = Path(params.lora).expanduser()
            try:
                if lora.is_file():
                    pipe.load_lora_weights(str(lora.parent), weight_name=lora.name)
                else:
                    pipe.load_lora_weights(str(lora))
                pipe.fuse_lora(lora_scale=params.lora_scale)
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
        if getattr(params, "negative_prompt", ""):
            kwargs["negative_prompt"] = [params.negative_prompt] * len(jobs)
        if params.mode == "text2img":
            kwargs.update(height=size, width=size)
        else:
            kwargs.update(image=[j.image for j in jobs], strength=params.effective_strength)
            if params.mode == "inpaint":
                kwargs.update(mask_image=[j.mask for j in jobs], height=size, width=size)
        return kwargs

    def generate(self, jobs: list[Job]) -> list[Result]:
        """Run the jobs in batches of --batch-size; a failing batch fails the call."""
        self.load()
        results: list[Result] = []
        size = self.params.batch_size
        for start in range(0, len(jobs), size):
            batch = jobs[start : start + size]
            began = time.perf_counter()
            try:
                output = self.pipe(**self.call_kwargs(batch))
            except Exception as exc:  # noqa: BLE001 - any pipeline error fails this seed only
                raise BackendFailure(f"{type(exc).__name__}: {exc}") from exc
            seconds = (time.perf_counter() - began) / len(batch)
            flagged = getattr(output, "nsfw_content_detected", None) or [False] * len(batch)
            for job, image, nsfw in zip(batch, output.images, flagged, strict=True):
                if nsfw:
                    results.append(
                        Result(
                            job, None, seconds, error="flagged by the safety checker", refused=True
                        )
                    )
                else:
                    results.append(Result(job, image, seconds))
        return results


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
