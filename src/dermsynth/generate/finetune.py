"""Fine-tuning Stable Diffusion on one condition's training images: LoRA or full DreamBooth.

Each training image (the ``split=train`` rows of one condition) is paired with its own prompt, a
template filled with the image's condition and skin type. Two methods:

- ``lora``: low-rank adapters on the UNet's attention projections; saved in diffusers' LoRA
  format, so ``generate --lora OUT`` loads them.
- ``dreambooth``: the whole UNet is trained, and the text encoder too with
  ``train_text_encoder``. With ``prior_preservation`` the base model first makes class images
  from ``class_prompt`` (where the class folder holds fewer than ``num_class_images``), and
  each step adds their loss, weighted by ``prior_loss_weight``, so the model keeps what it
  knew. Saved as a diffusers pipeline folder: ``generate --backend diffusers --model OUT``.
  The defaults are the follow-up work's (synthetic-derm): one model per condition, learning
  rate 5e-6 constant, batch 4, 4 epochs, 512 px, prompt "An image of {condition}, a skin
  disease".

The inpainting variant (``mode inpaint``) trains the 9-channel inpainting UNet on random masks
that redraw either a central region or the border around it: the two passes of
synderm-inpaint. Schedules, LoRA layers and saving are diffusers' and peft's own.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from dermsynth.config import PAPER_TEMPLATE, SYNDERM_TEMPLATE
from dermsynth.errors import DermsynthError

LORA_FILE = "pytorch_lora_weights.safetensors"
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
METHODS: tuple[str, ...] = ("lora", "dreambooth")
# diffusers.optimization.get_scheduler names (warm-up free).
LR_SCHEDULES: tuple[str, ...] = ("constant", "linear", "cosine", "polynomial")
# What each method uses where nothing is given; dreambooth: the follow-up work's recipe.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "lora": {"learning_rate": 1e-4, "batch_size": 1, "steps": 500, "template": PAPER_TEMPLATE},
    "dreambooth": {
        "learning_rate": 5e-6,
        "batch_size": 4,
        "epochs": 4,
        "template": SYNDERM_TEMPLATE,
    },
}
CLASS_META = "class_images.json"
MAX_GRAD_NORM = 1.0


@dataclass
class FinetuneParams:
    """What decides a fine-tuning run (written to ``finetune.json``); None: the method's default."""

    model: str = "tiny"
    condition: str = ""
    method: str = "lora"
    mode: str = "text2img"
    steps: int | None = None
    epochs: int | None = None
    learning_rate: float | None = None
    lr_schedule: str = "constant"
    batch_size: int | None = None
    rank: int = 4
    resolution: int | None = None
    template: str | None = None
    train_text_encoder: bool = False
    prior_preservation: bool = False
    class_prompt: str = "An image of a skin disease"
    num_class_images: int = 100
    class_steps: int = 25
    prior_loss_weight: float = 1.0
    class_dir: str | None = None
    random_seed: int = 0
    device: str = "auto"
    precision: str = "auto"

    @property
    def tiny(self) -> bool:
        """True for the tiny offline pipeline."""
        return self.model in ("", "tiny")

    def resolved(self) -> FinetuneParams:
        """A validated copy with the method's defaults filled in where nothing was given."""
        if self.method not in METHODS:
            raise DermsynthError(f"--method must be lora or dreambooth, got {self.method!r}")
        defaults = dict(METHOD_DEFAULTS[self.method])
        if self.steps is not None or self.epochs is not None:
            defaults = {k: v for k, v in defaults.items() if k not in ("steps", "epochs")}
        filled = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        if self.resolution is None:
            filled["resolution"] = 64 if self.tiny else 512
        out = replace(self, **filled)
        out.validate()
        return out

    def validate(self) -> None:
        """Refuse values that cannot train."""
        if self.mode not in ("text2img", "inpaint"):
            raise DermsynthError(f"--mode must be text2img or inpaint, got {self.mode!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise DermsynthError(
                f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"
            )
        counts = {"steps": self.steps, "epochs": self.epochs, "rank": self.rank}
        counts |= {"batch-size": self.batch_size, "num-class-images": self.num_class_images}
        counts |= {"class-steps": self.class_steps}
        for name, value in counts.items():
            if value is not None and value < 1:
                raise DermsynthError(f"--{name} must be >= 1, got {value}")
        for name, number in (
            ("learning-rate", self.learning_rate),
            ("prior-loss-weight", self.prior_loss_weight),
        ):
            if number is not None and not number > 0:
                raise DermsynthError(f"--{name} must be > 0, got {number}")
        if self.resolution is not None and (self.resolution < 8 or self.resolution % 8):
            raise DermsynthError(f"--resolution must be a multiple of 8, got {self.resolution}")
        if self.train_text_encoder and self.method != "dreambooth":
            raise DermsynthError("--train-text-encoder needs --method dreambooth")
        if self.prior_preservation and not self.class_prompt.strip():
            raise DermsynthError("--prior-preservation needs a --class-prompt")


# --------------------------------------------------------------------------- inputs


def _training_rows(manifest_csv: str | os.PathLike[str], condition: str) -> Any:
    from dermsynth.data.manifest import load_manifest, resolve_conditions

    if not condition:
        raise DermsynthError("--condition is required: the condition whose images to learn")
    manifest = load_manifest(manifest_csv)
    (label,) = resolve_conditions([condition], manifest["label"].unique())
    rows = manifest[manifest["label"] == label]
    if "split" in rows.columns:
        splits = sorted(set(rows["split"]))
        rows = rows[rows["split"] == "train"]
        if rows.empty:
            raise DermsynthError(
                f"{manifest_csv}: no training images of {label!r} (its rows are split "
                f"{', '.join(splits)}); fine-tuning learns from the split=train rows"
            )
    return rows.reset_index(drop=True)


def _pixels(paths: list[Any], resolution: int) -> list[Any]:
    """Centre squares of the images at ``resolution``, scaled to [-1, 1] (CHW tensors)."""
    import numpy as np
    import torch

    from dermsynth.data.images import load_rgb
    from dermsynth.generate.seeds import square_around

    out = []
    for path in paths:
        image = load_rgb(path)
        crop = image.crop(square_around(None, image.size, 1.0)).resize((resolution, resolution))
        pixels = np.asarray(crop, dtype=np.float32) / 127.5 - 1.0
        out.append(torch.from_numpy(pixels).permute(2, 0, 1))
    return out


def _device(params: FinetuneParams) -> tuple[str, Any]:
    """The device, and the half-precision dtype to use there (None: fp32)."""
    import torch

    device = params.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DermsynthError(f"--device {device}: no CUDA GPU is visible here")
    half = {"fp16": torch.float16, "bf16": torch.bfloat16, "auto": torch.float16}.get(
        params.precision
    )
    if not device.startswith("cuda"):
        if params.precision in ("fp16", "bf16"):
            print(
                f"note: {params.precision} runs on a CUDA GPU only; using fp32 on {device}",
                file=sys.stderr,
                flush=True,
            )
        half = None
    return device, half


def _pipeline_class(mode: str) -> Any:
    import diffusers

    if mode == "inpaint":
        return diffusers.StableDiffusionInpaintPipeline
    return diffusers.StableDiffusionPipeline


def _components(params: FinetuneParams) -> dict[str, Any]:
    if params.tiny:
        from dermsynth.generate.backends.tiny import tiny_components

        return tiny_components(params.mode)
    local = Path(params.model).expanduser().exists()
    try:
        pipe = _pipeline_class(params.mode).from_pretrained(
            params.model, safety_checker=None, requires_safety_checker=False, local_files_only=local
        )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DermsynthError(
            f"cannot load model {params.model!r} ({first}); give a hub id reachable from here or "
            "a local folder with model_index.json"
        ) from None
    return dict(pipe.components)


def _autocast(device: str, half: Any) -> AbstractContextManager[Any]:
    import torch

    if half is None:
        return nullcontext()
    return torch.autocast(device_type="cuda", dtype=half)


# --------------------------------------------------------------------------- class images


def class_folder(params: FinetuneParams, out: Path) -> Path:
    """Where prior preservation keeps its class images (default: beside the output folder)."""
    return Path(params.class_dir) if params.class_dir else out.parent / f"{out.name}-class-images"


def _check_class_meta(folder: Path, meta: dict[str, Any]) -> None:
    import json

    path = folder / CLASS_META
    if not path.is_file():
        return
    stored = json.loads(path.read_text(encoding="utf-8"))
    changed = [k for k in meta if stored.get(k) != meta[k]]
    if changed:
        raise DermsynthError(
            f"{folder} holds class images made with another {', '.join(changed)} "
            f"({stored.get(changed[0])!r}); give another --class-dir"
        )


def class_images(
    params: FinetuneParams,
    parts: dict[str, Any],
    folder: Path,
    device: str,
    half: Any,
) -> tuple[list[Path], int]:
    """The class images for prior preservation, the missing ones made by the base model.

    Returns the images (PNG paths) and how many were made now.
    """
    import io

    import torch
    from diffusers import DPMSolverMultistepScheduler
    from PIL import Image

    from dermsynth.io import atomic_write_bytes, atomic_write_json

    meta = {"model": params.model, "mode": params.mode, "class_prompt": params.class_prompt}
    _check_class_meta(folder, meta)
    have = sorted(folder.glob("*.png")) if folder.is_dir() else []
    missing = list(range(len(have), params.num_class_images))
    if not missing:
        return have[: params.num_class_images], 0
    pipe = _pipeline_class(params.mode)(**{**parts, "requires_safety_checker": False})
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(parts["scheduler"].config)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    size = params.resolution or 512
    extra: dict[str, Any] = {}
    if params.mode == "inpaint":  # the whole square redrawn: text-to-image through inpainting
        extra = {"image": Image.new("RGB", (size, size), (128, 128, 128)), "strength": 1.0}
        extra["mask_image"] = Image.new("L", (size, size), 255)
    for index in missing:
        generator = torch.Generator("cpu").manual_seed(params.random_seed * 100_003 + index)
        with torch.no_grad(), _autocast(device, half):
            image = pipe(
                prompt=params.class_prompt,
                num_inference_steps=params.class_steps,
                height=size,
                width=size,
                generator=generator,
                **extra,
            ).images[0]
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        atomic_write_bytes(folder / f"class-{index:04d}.png", buffer.getvalue())
    atomic_write_json(folder / CLASS_META, meta)
    return sorted(folder.glob("*.png"))[: params.num_class_images], len(missing)


# --------------------------------------------------------------------------- training


def _place(module: Any, device: str, dtype: Any) -> None:
    """Move a model; cast it only when its dtype changes (diffusers warns about every cast)."""
    module.to(device)
    if module.dtype != dtype:
        module.to(dtype=dtype)


@dataclass
class _Trainer:
    """The models of one run and one optimizer step's loss."""

    params: FinetuneParams
    parts: dict[str, Any]
    device: str
    half: Any
    generator: Any

    def setup(self) -> list[Any]:
        """Freeze, cast and place the models; the trainable parameters, in fp32."""
        import torch
        from peft import LoraConfig

        unet, vae, text = (self.parts[k] for k in ("unet", "vae", "text_encoder"))
        frozen = self.half or torch.float32
        dreambooth = self.params.method == "dreambooth"
        _place(vae.requires_grad_(False), self.device, frozen)
        text.requires_grad_(self.params.train_text_encoder)
        _place(text, self.device, torch.float32 if self.params.train_text_encoder else frozen)
        _place(
            unet.requires_grad_(dreambooth), self.device, torch.float32 if dreambooth else frozen
        )
        if not dreambooth:
            unet.add_adapter(
                LoraConfig(
                    r=self.params.rank,
                    lora_alpha=self.params.rank,
                    init_lora_weights="gaussian",
                    target_modules=LORA_TARGETS,
                )
            )
        trainable = [p for m in (unet, text) for p in m.parameters() if p.requires_grad]
        for p in trainable:  # trained weights stay fp32; half precision is for the forward
            p.data = p.data.float()
        unet.train()
        text.train(self.params.train_text_encoder)
        return trainable

    def encode(self, pixels: Any) -> Any:
        """Latents of [-1, 1] pixels (no gradient)."""
        import torch

        vae = self.parts["vae"]
        with torch.no_grad():
            posterior = vae.encode(pixels.to(self.device, vae.dtype)).latent_dist
            latents = posterior.sample(generator=self.generator)
        return latents * vae.config.scaling_factor

    def embed(self, prompts: list[str]) -> Any:
        """Text-encoder states; with gradient only when the text encoder is trained."""
        import torch

        tokenizer = self.parts["tokenizer"]
        ids = tokenizer(
            prompts,
            padding="max_length",
            truncation=True,
            max_length=tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids.to(self.device)
        with torch.set_grad_enabled(self.params.train_text_encoder):
            return self.parts["text_encoder"](ids)[0]

    def inpaint_inputs(self, pixels: Any, latents: Any) -> Any:
        """Mask and masked-image latents: a random central region, or the border around it."""
        import numpy as np
        import torch
        import torch.nn.functional as F

        from dermsynth.config import MaskConfig
        from dermsynth.generate.seeds import generated_mask

        draw = torch.rand(3, generator=self.generator).tolist()
        config = MaskConfig(
            keep=0.3 + 0.5 * draw[0], shape="rect" if draw[1] < 0.5 else "ellipse", feather=0
        )
        border = np.asarray(generated_mask(pixels.shape[-1], config), dtype=np.float32) >= 128
        redraw = border if draw[2] < 0.5 else ~border
        mask = torch.from_numpy(redraw.astype(np.float32))[None, None].expand(
            len(pixels), 1, -1, -1
        )
        masked = self.encode(pixels * (1 - mask))
        small = F.interpolate(mask, size=latents.shape[-2:]).to(self.device, latents.dtype)
        return torch.cat([small, masked], dim=1)

    def loss(self, pixels: Any, prompts: list[str], n_class: int) -> tuple[Any, float, float]:
        """Denoising loss of a batch whose last ``n_class`` items are class images."""
        import torch
        import torch.nn.functional as F

        scheduler = self.parts["noise_scheduler"]
        latents = self.encode(pixels)
        noise = torch.randn(latents.shape, generator=self.generator).to(self.device, latents.dtype)
        steps = torch.randint(
            scheduler.config.num_train_timesteps, (len(pixels),), generator=self.generator
        ).to(self.device)
        model_input = scheduler.add_noise(latents, noise, steps)
        if self.params.mode == "inpaint":
            model_input = torch.cat([model_input, self.inpaint_inputs(pixels, latents)], dim=1)
        with _autocast(self.device, self.half):
            prediction = self.parts["unet"](model_input, steps, self.embed(prompts)).sample
        target = noise
        if scheduler.config.prediction_type == "v_prediction":
            target = scheduler.get_velocity(latents, noise, steps)
        errors = F.mse_loss(prediction.float(), target.float(), reduction="none").mean((1, 2, 3))
        count = len(pixels) - n_class
        instance = errors[:count].mean()
        prior = errors[count:].mean() if n_class else torch.zeros((), device=errors.device)
        total = instance + self.params.prior_loss_weight * prior
        return total, float(instance.detach()), float(prior.detach())


def _batches(epoch_length: int, batch_size: int, steps: int, generator: Any) -> Iterator[list[int]]:
    """``steps`` batches of positions: shuffled epochs, read in order."""
    import torch

    order: list[int] = []
    for _ in range(steps):
        while len(order) < batch_size:
            order += torch.randperm(epoch_length, generator=generator).tolist()
        yield order[:batch_size]
        order = order[batch_size:]


@dataclass
class _Data:
    """Instance images with their prompts, and the class images of prior preservation."""

    pixels: list[Any]
    prompts: list[str]
    class_pixels: list[Any]
    class_prompt: str

    @property
    def epoch_length(self) -> int:
        """Positions in one epoch (class images cycle alongside the instance images)."""
        return max(len(self.pixels), len(self.class_pixels))

    def batch(self, positions: list[int]) -> tuple[Any, list[str], int]:
        """Pixels and prompts of a batch, class images last; and how many are class images."""
        import torch

        pixels = [self.pixels[i % len(self.pixels)] for i in positions]
        prompts = [self.prompts[i % len(self.prompts)] for i in positions]
        if self.class_pixels:
            pixels += [self.class_pixels[i % len(self.class_pixels)] for i in positions]
            prompts += [self.class_prompt] * len(positions)
        return torch.stack(pixels), prompts, len(prompts) - len(positions)


def total_steps(params: FinetuneParams, epoch_length: int) -> int:
    """``steps`` if given, else ``epochs`` passes over ``epoch_length`` positions."""
    if params.steps is not None:
        return params.steps
    return (params.epochs or 1) * math.ceil(epoch_length / (params.batch_size or 1))


def _train(
    trainer: _Trainer, data: _Data, steps: int, *, progress: bool
) -> tuple[list[float], list[float]]:
    """The optimizer loop; losses of the instance and class images per step."""
    import torch
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    params = trainer.params
    trainable = trainer.setup()
    optimizer = torch.optim.AdamW(trainable, lr=params.learning_rate or 0)
    schedule = get_scheduler(
        params.lr_schedule, optimizer, num_warmup_steps=0, num_training_steps=steps
    )
    scaler = torch.amp.GradScaler("cuda", enabled=trainer.half == torch.float16)
    losses: list[float] = []
    prior_losses: list[float] = []
    batches = _batches(data.epoch_length, params.batch_size or 1, steps, trainer.generator)
    with torch.enable_grad():  # a caller may have turned gradients off
        for positions in tqdm(batches, total=steps, desc="fine-tuning", disable=not progress):
            pixels, prompts, n_class = data.batch(positions)
            loss, instance, prior = trainer.loss(pixels, prompts, n_class)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(instance)
            if n_class:
                prior_losses.append(prior)
    return losses, prior_losses


# --------------------------------------------------------------------------- saving


def _save_lora(unet: Any, folder: Path) -> None:
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(
        str(folder), unet_lora_layers=state, safe_serialization=True
    )


def _save_pipeline(params: FinetuneParams, parts: dict[str, Any], folder: Path) -> None:
    """The base pipeline with the trained UNet (and text encoder), in fp32, loadable as is."""
    import torch

    components = {k: v for k, v in parts.items() if k != "noise_scheduler"}
    pipe = _pipeline_class(params.mode)(**{**components, "requires_safety_checker": False})
    for name in ("unet", "vae", "text_encoder"):
        _place(components[name], "cpu", torch.float32)
    pipe.save_pretrained(str(folder), safe_serialization=True)


def finetune(
    manifest_csv: str | os.PathLike[str],
    out: str | os.PathLike[str],
    params: FinetuneParams,
    *,
    progress: bool = True,
) -> Path:
    """Fine-tune on one condition; returns the LoRA folder or the DreamBooth pipeline folder."""
    import torch
    from diffusers import DDPMScheduler

    from dermsynth.generate.prompts import default_prompt_table, render_prompt
    from dermsynth.io import atomic_folder, atomic_write_json

    params = params.resolved()
    out = Path(out)
    rows = _training_rows(manifest_csv, params.condition)
    resolution = params.resolution or 512
    # Images and prompts first: a bad image stops the run before any weights are read.
    pixels = _pixels(list(rows["path"]), resolution)
    table = default_prompt_table(rows)
    template = params.template or PAPER_TEMPLATE
    prompts = [
        render_prompt({str(k): v for k, v in r.items()}, template) for _, r in table.iterrows()
    ]
    device, half = _device(params)

    torch.manual_seed(params.random_seed)
    parts = _components(params)
    made, class_paths = 0, list[Path]()
    if params.prior_preservation:
        folder = class_folder(params, out)
        class_paths, made = class_images(params, parts, folder, device, half)
    data = _Data(pixels, prompts, _pixels(class_paths, resolution), params.class_prompt)
    parts["noise_scheduler"] = DDPMScheduler.from_config(parts["scheduler"].config)
    trainer = _Trainer(
        params, parts, device, half, torch.Generator().manual_seed(params.random_seed)
    )
    steps = total_steps(params, data.epoch_length)
    began = time.perf_counter()
    losses, prior_losses = _train(trainer, data, steps, progress=progress)
    record = {
        **asdict(params),
        "steps_run": steps,
        "images": len(pixels),
        "class_images": len(class_paths),
        "class_images_made": made,
        "device": device,
        "seconds": round(time.perf_counter() - began, 2),
        "losses": losses,
        "prior_losses": prior_losses,
        "data": str(manifest_csv),
    }
    with atomic_folder(out) as tmp:
        if params.method == "lora":
            _save_lora(parts["unet"], tmp)
            record["lora_file"] = LORA_FILE
        else:
            _save_pipeline(params, parts, tmp)
        atomic_write_json(tmp / "finetune.json", record)
    return out
