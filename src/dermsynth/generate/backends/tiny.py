"""A tiny Stable Diffusion pipeline built offline from small configs, with random weights.

UNet, VAE and CLIP text encoder are a few hundred kilobytes each, the tokenizer is a byte-level
BPE made here from the 256 byte symbols (no merges), so every code path of the diffusers
backend (inpaint, img2img, text-to-image, schedulers, LoRA, fine-tuning) runs on a CPU in
seconds without a network. Weights come from a fixed torch seed: the same every time. The
images are noise-like; they test plumbing, not quality.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dermsynth.config import GeneratorSettings
from dermsynth.errors import DermsynthError
from dermsynth.generate.backends.diffusers_backend import DiffusersBackend

TINY_MAX_TOKENS = 128
TINY_WEIGHT_SEED = 0


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes (GPT-2 / CLIP mapping)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def tiny_tokenizer() -> Any:
    """A CLIP tokenizer whose vocabulary is every byte, alone and word-final."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    symbols = _byte_symbols()
    for symbol in symbols:
        vocab[symbol] = len(vocab)
    for symbol in symbols:
        vocab[symbol + "</w>"] = len(vocab)
    # Character-level prompts are long, hence more positions than CLIP's 77.
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=TINY_MAX_TOKENS)


def tiny_components(mode: str) -> dict[str, Any]:
    """UNet (9 input channels for inpainting, else 4), VAE, text encoder, tokenizer, scheduler."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_WEIGHT_SEED)
        unet = UNet2DConditionModel(
            sample_size=32,
            in_channels=9 if mode == "inpaint" else 4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=32,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(32, 64),
            latent_channels=4,
            norm_num_groups=32,
            sample_size=64,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
                hidden_size=32,
                intermediate_size=37,
                num_attention_heads=4,
                num_hidden_layers=2,
                vocab_size=len(tokenizer),
                max_position_embeddings=TINY_MAX_TOKENS,
            )
        )
    # Stable Diffusion's own noise schedule and default scheduler (PNDM), so `--scheduler
    # default` and the swaps behave as they do with real weights.
    scheduler = PNDMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": scheduler,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }


def tiny_pipeline(mode: str) -> Any:
    """The tiny pipeline of a mode, in memory."""
    import diffusers

    from dermsynth.generate.backends.diffusers_backend import PIPELINE_CLASSES

    cls = getattr(diffusers, PIPELINE_CLASSES[mode])
    return cls(**tiny_components(mode))


def save_tiny_pipeline(folder: str | os.PathLike[str], mode: str = "inpaint") -> Path:
    """Write the tiny pipeline as a diffusers folder (for the diffusers backend and fine-tuning)."""
    pipe = tiny_pipeline(mode)
    pipe.save_pretrained(str(folder))
    return Path(folder)


class TinyBackend(DiffusersBackend):
    """The diffusers backend driving the tiny pipeline instead of loading weights."""

    name = "tiny"
    default_resolution = 64

    def __init__(self, params: GeneratorSettings) -> None:
        super().__init__(params)

    @property
    def model_name(self) -> str:
        """Always ``tiny`` (the model is built, not loaded)."""
        return "tiny"

    def check(self) -> None:
        """Only the common checks: there is no model location to check."""
        if self.params.model.strip() not in ("", "tiny"):
            raise DermsynthError(
                "the tiny backend builds its own model; to run a saved folder use "
                f"--backend diffusers --model {self.params.model}"
            )
        self._check_common()

    def _load_pipeline(self, cls: Any, dtype: Any) -> Any:
        import torch

        pipe = cls(**tiny_components(self.params.mode))
        # Built in fp32; only a half-precision run needs a cast.
        return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)
