"""LoRA fine-tuning of a Stable Diffusion UNet on one condition's training images.

DreamBooth-style: each training image is paired with its own prompt (the paper's template
filled with the image's condition and skin type), and low-rank adapters on the UNet's attention
projections learn the condition's appearance. The inpainting variant trains the 9-channel
inpainting UNet on random border masks, the way ``generate --mode inpaint`` uses it. The
adapters are saved in diffusers' LoRA format, so ``generate --lora OUT`` loads them. Prior
preservation and text-encoder training are left out: the base model's text side stays as is.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dermsynth.errors import DermsynthError

LORA_FILE = "pytorch_lora_weights.safetensors"
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


@dataclass
class FinetuneParams:
    """What decides a fine-tuning run (written to ``finetune.json``)."""

    model: str = "tiny"
    condition: str = ""
    mode: str = "text2img"
    steps: int = 500
    learning_rate: float = 1e-4
    rank: int = 4
    batch_size: int = 1
    resolution: int | None = None
    random_seed: int = 0
    device: str = "auto"
    precision: str = "auto"

    def validate(self) -> None:
        """Refuse values that cannot train."""
        if self.mode not in ("text2img", "inpaint"):
            raise DermsynthError(f"--mode must be text2img or inpaint, got {self.mode!r}")
        for name, value in (
            ("steps", self.steps),
            ("rank", self.rank),
            ("batch-size", self.batch_size),
        ):
            if value < 1:
                raise DermsynthError(f"--{name} must be >= 1, got {value}")
        if self.learning_rate <= 0:
            raise DermsynthError(f"--learning-rate must be > 0, got {self.learning_rate}")
        if self.resolution is not None and (self.resolution < 8 or self.resolution % 8):
            raise DermsynthError(f"--resolution must be a multiple of 8, got {self.resolution}")


def _training_rows(manifest_csv: str | os.PathLike[str], condition: str) -> Any:
    from dermsynth.data.manifest import load_manifest, resolve_conditions

    manifest = load_manifest(manifest_csv)
    if "split" in manifest.columns:
        manifest = manifest[manifest["split"] == "train"]
    if not condition:
        raise DermsynthError("--condition is required: the condition whose images to learn")
    (label,) = resolve_conditions([condition], manifest["label"].unique())
    rows = manifest[manifest["label"] == label].reset_index(drop=True)
    if rows.empty:
        raise DermsynthError(f"{manifest_csv}: no training images of {label!r}")
    return rows


def _components(params: FinetuneParams) -> dict[str, Any]:
    if params.model in ("", "tiny"):
        from dermsynth.generate.backends.tiny import tiny_components

        return tiny_components(params.mode)
    import diffusers

    cls = (
        diffusers.StableDiffusionInpaintPipeline
        if params.mode == "inpaint"
        else diffusers.StableDiffusionPipeline
    )
    local = Path(params.model).expanduser().exists()
    try:
        pipe = cls.from_pretrained(
            params.model, safety_checker=None, requires_safety_checker=False, local_files_only=local
        )
    except (OSError, ValueError) as exc:
        raise DermsynthError(
            f"cannot load model {params.model!r} ({exc}); give a hub id reachable from here or a "
            "local folder with model_index.json"
        ) from None
    return dict(pipe.components)


def finetune(
    manifest_csv: str | os.PathLike[str],
    out: str | os.PathLike[str],
    params: FinetuneParams,
    *,
    progress: bool = True,
) -> Path:
    """Train LoRA adapters; returns the folder holding ``pytorch_lora_weights.safetensors``."""
    params.validate()
    rows = _training_rows(manifest_csv, params.condition)
    resolution = params.resolution or (64 if params.model in ("", "tiny") else 512)

    import numpy as np
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from tqdm.auto import tqdm

    from dermsynth.config import MaskConfig
    from dermsynth.data.images import load_rgb
    from dermsynth.generate.prompts import default_prompt_table, render_prompt
    from dermsynth.generate.seeds import generated_mask, square_around

    # Images and prompts first: a bad image stops the run before any weights are read.
    images = []
    for path in rows["path"]:
        image = load_rgb(path)
        crop = image.crop(square_around(None, image.size, 1.0))
        pixels = np.asarray(crop.resize((resolution, resolution)), dtype=np.float32) / 127.5 - 1.0
        images.append(torch.from_numpy(pixels).permute(2, 0, 1))
    prompts = [render_prompt(r) for r in default_prompt_table(rows).to_dict("records")]

    device = params.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    half = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(params.precision)
    if params.precision == "auto":
        half = torch.float16 if device.startswith("cuda") else None
    if half is not None and not device.startswith("cuda"):
        raise DermsynthError(f"--precision {params.precision} needs a GPU")
    frozen_dtype = half or torch.float32

    torch.manual_seed(params.random_seed)
    parts = _components(params)
    unet, vae, text_encoder, tokenizer = (
        parts[k] for k in ("unet", "vae", "text_encoder", "tokenizer")
    )
    noise_scheduler = DDPMScheduler.from_config(parts["scheduler"].config)
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
        if frozen_dtype == torch.float32:
            module.to(device)
        else:
            module.to(device, dtype=frozen_dtype)
    unet.add_adapter(
        LoraConfig(
            r=params.rank,
            lora_alpha=params.rank,
            init_lora_weights="gaussian",
            target_modules=LORA_TARGETS,
        )
    )
    trainable = [p for p in unet.parameters() if p.requires_grad]
    for p in trainable:  # adapters train in fp32 even when the frozen weights are half
        p.data = p.data.float()
    optimizer = torch.optim.AdamW(trainable, lr=params.learning_rate)
    generator = torch.Generator().manual_seed(params.random_seed)
    scale = vae.config.scaling_factor

    def encode(pixels: torch.Tensor) -> torch.Tensor:
        return vae.encode(pixels.to(device, frozen_dtype)).latent_dist.sample() * scale

    losses: list[float] = []
    began = time.perf_counter()
    unet.train()
    with torch.enable_grad():  # a caller may have turned gradients off
        for _ in tqdm(range(params.steps), desc="fine-tuning", unit="step", disable=not progress):
            pick = torch.randint(len(images), (params.batch_size,), generator=generator).tolist()
            pixels = torch.stack([images[i] for i in pick])
            with torch.no_grad():
                latents = encode(pixels)
                ids = tokenizer(
                    [prompts[i] for i in pick],
                    padding="max_length",
                    truncation=True,
                    max_length=tokenizer.model_max_length,
                    return_tensors="pt",
                ).input_ids
                text = text_encoder(ids.to(device))[0]
            noise = torch.randn(latents.shape, generator=generator).to(device, latents.dtype)
            steps_t = torch.randint(
                noise_scheduler.config.num_train_timesteps, (len(pick),), generator=generator
            ).to(device)
            model_input = noise_scheduler.add_noise(latents, noise, steps_t)
            if params.mode == "inpaint":
                keep = float(torch.empty(1).uniform_(0.3, 0.8, generator=generator))
                mask_image = generated_mask(resolution, MaskConfig(keep=keep, feather=0))
                mask = torch.from_numpy(np.asarray(mask_image, dtype=np.float32) / 255.0)[
                    None, None
                ]
                mask = (mask >= 0.5).float().expand(len(pick), 1, -1, -1)
                with torch.no_grad():
                    masked = encode(pixels * (1 - mask))
                small = F.interpolate(mask, size=latents.shape[-2:]).to(device, latents.dtype)
                model_input = torch.cat([model_input, small, masked], dim=1)
            prediction = unet(model_input, steps_t, text).sample
            if noise_scheduler.config.prediction_type == "v_prediction":
                target = noise_scheduler.get_velocity(latents, noise, steps_t)
            else:
                target = noise
            loss = F.mse_loss(prediction.float(), target.float())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lora_state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(
        str(out), unet_lora_layers=lora_state, safe_serialization=True
    )
    from dermsynth.io import atomic_write_json

    atomic_write_json(
        out / "finetune.json",
        {
            **asdict(params),
            "resolution": resolution,
            "images": len(images),
            "device": device,
            "seconds": round(time.perf_counter() - began, 2),
            "losses": losses,
            "lora_file": LORA_FILE,
            "data": str(manifest_csv),
        },
    )
    return out
