"""The demo's generator: a small condition- and skin-type-conditional pixel-space diffusion model.

The model is a diffusers ``UNet2DModel`` (32x32 RGB by default, about 1.1 M parameters) trained
on a DDPM forward process (cosine schedule, 1000 steps) with the plain MSE loss and AdamW. It
predicts the velocity ``v = sqrt(a) * noise - sqrt(1 - a) * image`` rather than the noise: with
noise prediction the nearly pure-noise steps, which decide a pure sample's overall colour (the
skin tone), carry almost no weight in the loss, and a small model trained for minutes never
learns them; the v target weights them fully and changes nothing else. It is conditioned on the image's condition and
Fitzpatrick skin type (FST) through a factorised class embedding: one learned vector per
condition plus one per FST, summed and added to the timestep embedding
(``class_embed_type="identity"``). A separate embedding per (condition, FST) pair would learn each
cell from its own few images; with the sum the rare cells (few V-VI images of most conditions,
as in Table 1) take their skin tone from every condition of that type and their morphology from
every type of that condition. Both tables have a "null" entry, used for a share of the training
images (and for images of unknown FST), so sampling can use classifier-free guidance.

Sampling makes variations of a seed (SDEdit): the seed crop is noised to timestep
``strength * T`` and denoised under the target condition and FST; strength 1 without an image
is pure generation. Every image has its own ``torch.Generator`` seed, so results do not depend on
the batch they ran in.

A model folder holds ``save_pretrained`` pieces and two small files::

    unet/                      UNet2DModel config and safetensors (the EMA weights)
    scheduler/                 the sampling scheduler (DDIM, timesteps T-1 to 0)
    conditioning.safetensors   condition and FST embeddings (EMA)
    demo_model.json            condition index, training settings, data fingerprint, loss curve
    README.txt                 what the folder is and the command that reproduces it

The package ships one such folder (:data:`SHIPPED_MODEL`), trained by
:func:`reproduce_shipped_model` on a simulated draw of its own (``random_seed=1000``), so the
generator never saw an image of the demo's data (``random_seed=0``), test images included.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dermsynth.data.fst import FST_TYPES
from dermsynth.errors import DermsynthError

SHIPPED_MODEL = Path(__file__).resolve().parent / "weights" / "demo"
META_FILE = "demo_model.json"
CONDITIONING_FILE = "conditioning.safetensors"
README_FILE = "README.txt"
CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = "dermsynth-demo-generator/1"
# The simulated draw the shipped model learns from: not the demo's own (random_seed=0).
SHIPPED_DATA: dict[str, Any] = {"scale": 1.0, "image_size": 256, "random_seed": 1000}
NULL_FST = 0  # FST embedding row of "no skin type" (unknown FST, and guidance's unconditional)


@dataclass(frozen=True)
class DemoTrainParams:
    """What decides a training run (recorded in ``demo_model.json``)."""

    resolution: int = 32
    steps: int = 800
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.995
    uncond_share: float = 0.1
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    random_seed: int = 0

    def validate(self) -> None:
        """Refuse values that cannot train."""
        if self.resolution < 16 or self.resolution % 8:
            raise DermsynthError(
                f"--resolution must be a multiple of 8 and >= 16, got {self.resolution}"
            )
        if self.resolution % 2 ** (len(self.block_out_channels) - 1):
            raise DermsynthError(
                f"--resolution {self.resolution} does not halve {len(self.block_out_channels) - 1} times"
            )
        for name, value in (("steps", self.steps), ("batch-size", self.batch_size)):
            if value < 1:
                raise DermsynthError(f"--{name} must be >= 1, got {value}")
        if self.learning_rate <= 0:
            raise DermsynthError(f"--learning-rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.uncond_share < 1.0:
            raise DermsynthError(f"uncond_share must be in [0, 1), got {self.uncond_share}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise DermsynthError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


class ConditionEmbedding(torch.nn.Module):
    """Condition vector + FST vector, added to the UNet's timestep embedding.

    Condition rows ``0..n-1`` are the conditions and row ``n`` is "no condition"; FST rows
    ``1..6`` are the types and row 0 is "no type".
    """

    def __init__(self, n_conditions: int, dim: int) -> None:
        super().__init__()
        self.n_conditions = n_conditions
        self.condition = torch.nn.Embedding(n_conditions + 1, dim)
        self.fst = torch.nn.Embedding(len(FST_TYPES) + 1, dim)

    def forward(self, condition: torch.Tensor, fst: torch.Tensor) -> torch.Tensor:
        """One vector per image."""
        return self.condition(condition) + self.fst(fst)


def _diffusers() -> Any:
    try:
        import diffusers
    except ImportError:
        raise DermsynthError(
            "the demo generator needs diffusers: pip install 'dermsynth[generate]'"
        ) from None
    return diffusers


def normalise_label(name: str) -> str:
    """Case- and spacing-insensitive key of a condition name."""
    return " ".join(str(name).replace("_", " ").lower().split())


def to_pixels(image: Image.Image, resolution: int) -> np.ndarray:
    """An RGB image as a float array in [-1, 1], resized to ``resolution`` (HWC)."""
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


# -- model folder ------------------------------------------------------------------------------


def read_meta(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``demo_model.json`` of a model folder; a clear error when it is not one."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DermsynthError(
            f"demo model folder {folder} not found; train one with `dermsynth generator "
            "train-demo --out DIR`, or leave --model empty for the shipped one"
        )
    path = folder / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DermsynthError(
            f"{folder} is not a demo generator folder (no {META_FILE}); give a folder written "
            "by `dermsynth generator train-demo`"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DermsynthError(f"{path} is unreadable ({exc})") from None
    if meta.get("format") != FORMAT:
        raise DermsynthError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    missing = [p for p in ("unet", "scheduler", CONDITIONING_FILE) if not (folder / p).exists()]
    if missing:
        raise DermsynthError(
            f"{folder} lacks {', '.join(missing)}; re-run `dermsynth generator train-demo`"
        )
    return meta


def _build_unet(params: DemoTrainParams, n_conditions: int) -> tuple[Any, ConditionEmbedding]:
    diffusers = _diffusers()
    depth = len(params.block_out_channels)
    # Attention only at the coarsest level (and the mid block): cheap at 8x8, and enough to
    # place one lesion coherently in a 32 px frame.
    down = ("DownBlock2D",) * (depth - 1) + ("AttnDownBlock2D",)
    up = ("AttnUpBlock2D",) + ("UpBlock2D",) * (depth - 1)
    unet = diffusers.UNet2DModel(
        sample_size=params.resolution,
        in_channels=3,
        out_channels=3,
        block_out_channels=tuple(params.block_out_channels),
        layers_per_block=params.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        attention_head_dim=32,
        norm_num_groups=16,
        class_embed_type="identity",
    )
    embedding = ConditionEmbedding(n_conditions, params.block_out_channels[0] * 4)
    return unet, embedding


def _noise_schedule_config() -> dict[str, Any]:
    # Cosine betas (improved DDPM) keep more signal at mid timesteps than linear ones, which at
    # 32 px would spend most of the schedule on images that are already pure noise.
    return {
        "num_train_timesteps": 1000,
        "beta_schedule": "squaredcos_cap_v2",
        "prediction_type": "v_prediction",
    }


def sampling_scheduler() -> Any:
    """DDIM over evenly spaced timesteps from pure noise (t = T - 1) down to t = 0.

    Starting at T - 1 makes pure samples start from pure noise; ending at 0 lets the last step
    remove the faint noise that a small model's coarser steps leave behind.
    """
    diffusers = _diffusers()
    return diffusers.DDIMScheduler(
        **_noise_schedule_config(),
        clip_sample=True,
        set_alpha_to_one=True,
        timestep_spacing="linspace",
    )


# -- training ----------------------------------------------------------------------------------


def _training_rows(csv: str | os.PathLike[str]) -> Any:
    from dermsynth.data.manifest import load_manifest

    manifest = load_manifest(csv)
    if "split" in manifest.columns:
        # Only training rows: a plan's test rows must never shape anything the classifier sees.
        manifest = manifest[manifest["split"] == "train"]
    manifest = manifest[manifest["path"].astype(str).str.strip() != ""]
    if manifest.empty:
        raise DermsynthError(
            f"{csv}: no training images (rows with split == 'train' and an image path)"
        )
    return manifest.sort_values("image_id").reset_index(drop=True)


def _fingerprint(rows: Any) -> str:
    """SHA-256 over each image's id, label, FST and bytes: the exact data a model learned."""
    digest = hashlib.sha256()
    for row in rows.itertuples(index=False):
        content = hashlib.sha256(Path(row.path).read_bytes()).hexdigest()
        digest.update(f"{row.image_id}\t{row.label}\t{int(row.fst)}\t{content}\n".encode())
    return digest.hexdigest()


def _load_images(rows: Any, resolution: int, progress: bool) -> torch.Tensor:
    from tqdm.auto import tqdm

    from dermsynth.data.images import load_rgb
    from dermsynth.generate.seeds import square_around

    pixels = np.empty((len(rows), resolution, resolution, 3), dtype=np.float32)
    paths = list(rows["path"])
    for i, path in enumerate(tqdm(paths, desc="loading", unit="img", disable=not progress)):
        image = load_rgb(path)
        # The centre square, as `generate` crops a seed without a box.
        pixels[i] = to_pixels(image.crop(square_around(None, image.size, 1.0)), resolution)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()


def _sampling_weights(fst: np.ndarray) -> torch.Tensor:
    # Images are drawn with weight 1/sqrt(count of their FST): dark types, rare as in Table 1,
    # are seen more often than their share without being repeated as often as full balancing would.
    values, counts = np.unique(fst, return_counts=True)
    per_type = dict(zip(values.tolist(), counts.tolist(), strict=True))
    weights = np.array([1.0 / math.sqrt(per_type[f]) for f in fst.tolist()])
    return torch.from_numpy(weights / weights.sum())


def _learning_rate(params: DemoTrainParams, step: int) -> float:
    # A tenth of the run at most, so a short run is not spent warming up.
    warm = min(1.0, (step + 1) / max(1, min(params.warmup_steps, params.steps // 10)))
    progress = step / max(1, params.steps)
    return params.learning_rate * warm * 0.5 * (1 + math.cos(math.pi * progress))


def _settings(params: DemoTrainParams) -> dict[str, Any]:
    out = asdict(params)
    out["block_out_channels"] = list(params.block_out_channels)
    out["noise_schedule"] = _noise_schedule_config()
    return out


def _partial_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def train_demo_generator(
    csv: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    resolution: int = 32,
    steps: int = 800,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    random_seed: int = 0,
    checkpoint_every: int = 250,
    data_note: str = "",
    progress: bool = True,
) -> Path:
    """Train the demo generator on a manifest's images (a plan's ``split == "train"`` rows only).

    Images are centre-cropped, resized to ``resolution`` and flipped at random; batches draw
    images with weight ``1/sqrt(count of their FST)``. A checkpoint every ``checkpoint_every``
    steps (in ``.<out>.partial`` beside ``out_dir``) lets an interrupted run resume exactly where
    it stopped; the finished folder appears atomically. A folder already trained with the same
    settings on the same data is returned as it is. Deterministic for a seed on one machine.
    ``data_note`` says where the data came from (written to the README).
    """
    params = DemoTrainParams(
        resolution=resolution,
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        random_seed=random_seed,
    )
    params.validate()
    if checkpoint_every < 1:
        raise DermsynthError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise DermsynthError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / META_FILE).is_file():
        raise DermsynthError(
            f"{out} is a non-empty folder that holds no demo generator; choose a new --out"
        )

    rows = _training_rows(csv)
    fingerprint = _fingerprint(rows)
    settings = _settings(params)
    if (out / META_FILE).is_file():
        with contextlib.suppress(DermsynthError):
            meta = read_meta(out)
            if meta.get("settings") == settings and meta.get("data_fingerprint") == fingerprint:
                return out

    conditions = sorted(rows["label"].unique())
    cond_index = {c: i for i, c in enumerate(conditions)}
    images = _load_images(rows, params.resolution, progress)
    cond = torch.tensor([cond_index[c] for c in rows["label"]], dtype=torch.long)
    fst_values = rows["fst"].astype(int).to_numpy()
    fst = torch.tensor([f if f in FST_TYPES else NULL_FST for f in fst_values], dtype=torch.long)
    weights = _sampling_weights(fst_values)

    diffusers = _diffusers()
    train_scheduler = diffusers.DDPMScheduler(**_noise_schedule_config())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.random_seed)
        unet, embedding = _build_unet(params, len(conditions))
    ema_unet, ema_embedding = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(embedding)
    ema_embedding.requires_grad_(False)
    trained = [*unet.parameters(), *embedding.parameters()]
    averaged = [*ema_unet.parameters(), *ema_embedding.parameters()]
    optimizer = torch.optim.AdamW(trained, lr=params.learning_rate, weight_decay=1e-4)
    generator = torch.Generator("cpu").manual_seed(params.random_seed)
    losses: list[float] = []
    start = 0
    began = time.perf_counter()
    seconds_before = 0.0

    partial = _partial_dir(out)
    checkpoint = partial / CHECKPOINT_FILE
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state.get("settings") == settings and state.get("data_fingerprint") == fingerprint:
            unet.load_state_dict(state["unet"])
            embedding.load_state_dict(state["embedding"])
            ema_unet.load_state_dict(state["ema_unet"])
            ema_embedding.load_state_dict(state["ema_embedding"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            losses = list(state["losses"])
            start = int(state["step"])
            seconds_before = float(state.get("seconds", 0.0))

    from tqdm.auto import tqdm

    alphas = train_scheduler.alphas_cumprod
    unet.train()
    embedding.train()
    bar = tqdm(
        total=params.steps, initial=start, desc="train-demo", unit="step", disable=not progress
    )
    for step in range(start, params.steps):
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(params, step)
        pick = torch.multinomial(weights, params.batch_size, replacement=True, generator=generator)
        x0 = images[pick]
        flip_h = torch.rand(params.batch_size, generator=generator) < 0.5
        flip_v = torch.rand(params.batch_size, generator=generator) < 0.5
        x0 = torch.where(flip_h[:, None, None, None], x0.flip(3), x0)
        x0 = torch.where(flip_v[:, None, None, None], x0.flip(2), x0)
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, len(alphas), (params.batch_size,), generator=generator)
        drop = torch.rand(params.batch_size, generator=generator) < params.uncond_share
        c = torch.where(drop, torch.full_like(cond[pick], len(conditions)), cond[pick])
        f = torch.where(drop, torch.full_like(fst[pick], NULL_FST), fst[pick])
        noisy = train_scheduler.add_noise(x0, noise, t)
        predicted = unet(noisy, t, class_labels=embedding(c, f)).sample
        loss = torch.nn.functional.mse_loss(predicted, train_scheduler.get_velocity(x0, noise, t))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        # EMA with a warm-up, so early averages are not dominated by the random initial weights.
        decay = min(params.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for avg, cur in zip(averaged, trained, strict=True):
                avg.lerp_(cur, 1 - decay)
        losses.append(loss.item())
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-100:]):.4f}")
        done = step + 1
        if done % checkpoint_every == 0 and done < params.steps:
            _atomic_torch_save(
                {
                    "settings": settings,
                    "data_fingerprint": fingerprint,
                    "step": done,
                    "unet": unet.state_dict(),
                    "embedding": embedding.state_dict(),
                    "ema_unet": ema_unet.state_dict(),
                    "ema_embedding": ema_embedding.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(),
                    "losses": losses,
                    "seconds": seconds_before + time.perf_counter() - began,
                },
                checkpoint,
            )
    bar.close()

    meta = {
        "format": FORMAT,
        "conditions": conditions,
        "fst_index": {str(f): f for f in FST_TYPES} | {"unknown": NULL_FST},
        "null_condition": len(conditions),
        "resolution": params.resolution,
        "settings": settings,
        "data_fingerprint": fingerprint,
        "data": {
            "csv": str(Path(csv)),
            "note": data_note,
            "images": len(rows),
            "per_fst": {
                str(k): int(v) for k, v in sorted(rows["fst"].astype(int).value_counts().items())
            },
            "per_condition": {
                str(k): int(v) for k, v in sorted(rows["label"].value_counts().items())
            },
        },
        "loss_curve": _loss_curve(losses),
        "train_seconds": round(seconds_before + time.perf_counter() - began, 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }
    _write_folder(out, ema_unet, ema_embedding, meta)
    shutil.rmtree(partial, ignore_errors=True)
    return out


def _loss_curve(losses: Sequence[float], points: int = 50) -> list[list[float]]:
    """``[step, mean loss]`` over equal windows: enough to see that training converged."""
    if not losses:
        return []
    size = max(1, math.ceil(len(losses) / points))
    return [
        [min(i + size, len(losses)), round(float(np.mean(losses[i : i + size])), 5)]
        for i in range(0, len(losses), size)
    ]


def _readme(meta: dict[str, Any]) -> str:
    s = meta["settings"]
    data = meta["data"]
    note = data["note"] or f"the manifest {data['csv']}"
    command = (
        f"dermsynth generator train-demo --out DIR --resolution {s['resolution']} "
        f"--steps {s['steps']} --batch-size {s['batch_size']} --learning-rate {s['learning_rate']} "
        f"--random-seed {s['random_seed']}"
    )
    if not data["note"].startswith("simulate_dataset"):
        command += f" --data {data['csv']}"
    return "\n".join(
        [
            "dermsynth demo generator",
            "========================",
            "",
            "A class- and skin-type-conditional pixel-space diffusion model (diffusers UNet2DModel",
            f"+ DDIM scheduler) at {meta['resolution']}x{meta['resolution']} px, for `dermsynth generate "
            "--backend demo` (img2img variations of seed images, or text2img samples).",
            "Loader and sampler: dermsynth.generate.demo_model. SIMULATED DATA ONLY: not real patients.",
            "",
            f"Trained on: {note} ({data['images']} images).",
            f"Images per FST: {data['per_fst']}.",
            f"Data fingerprint (sha256 of ids, labels, FST and image bytes): {meta['data_fingerprint']}",
            f"Training: {s['steps']} steps, batch {s['batch_size']}, AdamW lr {s['learning_rate']} "
            f"(cosine, {s['warmup_steps']} warm-up), EMA {s['ema_decay']}, "
            f"{meta['train_seconds']} s on CPU ({meta.get('threads', '?')} thread(s)).",
            f"Final loss (mean of the last window): {meta['loss_curve'][-1][1] if meta['loss_curve'] else 'n/a'}.",
            "",
            "Reproduce (the same weights on the same machine and thread count, e.g. with",
            "OMP_NUM_THREADS set; float rounding may differ slightly elsewhere):",
            f"  OMP_NUM_THREADS={meta.get('threads', 1)} {command}",
            "",
        ]
    )


def _write_folder(
    out: Path, unet: Any, embedding: ConditionEmbedding, meta: dict[str, Any]
) -> None:
    """Write the model into a temporary folder beside ``out``, then swap it in."""
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        unet.save_pretrained(str(tmp / "unet"))
        sampling_scheduler().save_pretrained(str(tmp / "scheduler"))
        state = {k: v.detach().contiguous() for k, v in embedding.state_dict().items()}
        save_file(state, str(tmp / CONDITIONING_FILE))
        (tmp / META_FILE).write_text(
            json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        (tmp / README_FILE).write_text(_readme(meta), encoding="utf-8")
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def reproduce_shipped_model(
    out_dir: str | os.PathLike[str],
    *,
    work_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    **train_kwargs: Any,
) -> Path:
    """Simulate the shipped model's own training draw (:data:`SHIPPED_DATA`) and train on it.

    The draw is written to ``work_dir`` (kept, so a re-run resumes) or to a temporary folder.
    """
    from dermsynth.data.simulate import simulate_dataset

    note = (
        "simulate_dataset("
        + ", ".join(f"{k}={v}" for k, v in SHIPPED_DATA.items())
        + "), every row"
    )
    with contextlib.ExitStack() as stack:
        folder = work_dir or stack.enter_context(
            tempfile.TemporaryDirectory(prefix="dermsynth-demo-gen-")
        )
        csv = simulate_dataset(folder, **SHIPPED_DATA, progress=progress)
        return train_demo_generator(csv, out_dir, data_note=note, progress=progress, **train_kwargs)


# -- sampling ----------------------------------------------------------------------------------


class DemoGenerator:
    """A loaded demo model: turns (condition, FST, random seed[, seed image]) into images."""

    def __init__(
        self,
        unet: Any,
        embedding: ConditionEmbedding,
        scheduler: Any,
        meta: dict[str, Any],
        device: str = "cpu",
    ) -> None:
        self.unet = unet.eval().to(device)
        self.embedding = embedding.eval().to(device)
        self.scheduler = scheduler
        self.meta = meta
        self.device = device
        self._index = {normalise_label(c): i for i, c in enumerate(meta["conditions"])}

    @classmethod
    def load(
        cls, folder: str | os.PathLike[str] | None = None, device: str = "cpu"
    ) -> DemoGenerator:
        """Read a model folder (default: the shipped model)."""
        from safetensors.torch import load_file

        folder = Path(folder).expanduser() if folder else SHIPPED_MODEL
        meta = read_meta(folder)
        diffusers = _diffusers()
        unet = diffusers.UNet2DModel.from_pretrained(str(folder / "unet"))
        scheduler = diffusers.DDIMScheduler.from_pretrained(str(folder / "scheduler"))
        state = load_file(str(folder / CONDITIONING_FILE))
        embedding = ConditionEmbedding(len(meta["conditions"]), state["condition.weight"].shape[1])
        embedding.load_state_dict(state)
        return cls(unet, embedding, scheduler, meta, device)

    @property
    def resolution(self) -> int:
        """Side of the images the model makes."""
        return int(self.meta["resolution"])

    @property
    def conditions(self) -> list[str]:
        """The conditions it knows, in index order."""
        return list(self.meta["conditions"])

    def condition_index(self, label: str) -> int:
        """Index of a condition (case and spacing forgiven); a clear error when unknown."""
        try:
            return self._index[normalise_label(label)]
        except KeyError:
            raise DermsynthError(
                f"the demo generator does not know the condition {label!r}; it knows "
                f"{', '.join(self.conditions)}"
            ) from None

    @torch.no_grad()
    def generate(
        self,
        labels: Sequence[str],
        fsts: Sequence[int],
        random_seeds: Sequence[int],
        *,
        images: Sequence[Image.Image] | None = None,
        strength: float = 1.0,
        steps: int = 25,
        guidance: float = 1.0,
        scheduler: Any = None,
        size: int | None = None,
    ) -> list[Image.Image]:
        """One image per (label, FST, random seed): a variation of ``images`` or a pure sample.

        ``strength`` is the share of the schedule redrawn (SDEdit; ignored without images);
        ``guidance`` > 1 applies classifier-free guidance; ``scheduler`` replaces the model's
        DDIM; ``size`` resizes the outputs (bicubic) from the model's resolution.
        """
        n = len(labels)
        if not (len(fsts) == len(random_seeds) == n) or (images is not None and len(images) != n):
            raise ValueError("labels, fsts, random_seeds (and images) must have the same length")
        bad = [f for f in fsts if int(f) not in FST_TYPES]
        if bad:
            raise DermsynthError(f"the demo generator needs a skin type 1..6, got {bad[0]}")
        res = self.resolution
        cond = torch.tensor([self.condition_index(lbl) for lbl in labels], device=self.device)
        fst = torch.tensor([int(f) for f in fsts], device=self.device)
        class_emb = self.embedding(cond, fst)
        use_cfg = guidance > 1.0
        if use_cfg:
            null = self.embedding(
                torch.full_like(cond, len(self.conditions)), torch.full_like(fst, NULL_FST)
            )
            class_emb = torch.cat([class_emb, null])

        # A fresh scheduler per call: set_timesteps and multistep solvers keep state.
        sched = type(scheduler or self.scheduler).from_config((scheduler or self.scheduler).config)
        sched.set_timesteps(steps)
        # CPU generators: the same seed gives the same noise on any device and in any batch.
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in random_seeds]
        noise = torch.cat([torch.randn((1, 3, res, res), generator=g) for g in generators]).to(
            self.device
        )
        timesteps = sched.timesteps
        if images is None:
            x = noise * sched.init_noise_sigma
        else:
            begin = steps - min(int(steps * strength), steps)
            timesteps = timesteps[begin * sched.order :]
            if not len(timesteps):
                raise DermsynthError(
                    f"steps {steps} x strength {strength} leaves no denoising step"
                )
            if hasattr(sched, "set_begin_index"):
                sched.set_begin_index(begin * sched.order)
            seed = torch.from_numpy(np.stack([to_pixels(im, res) for im in images]))
            seed = seed.permute(0, 3, 1, 2).to(self.device)
            x = sched.add_noise(seed, noise, timesteps[:1].repeat(n))
        step_kwargs = (
            {"generator": generators}
            if "generator" in inspect.signature(sched.step).parameters
            else {}
        )
        for t in timesteps:
            model_in = sched.scale_model_input(x, t)
            if use_cfg:
                model_in = torch.cat([model_in, model_in])
            predicted = self.unet(model_in, t, class_labels=class_emb).sample
            if use_cfg:
                conditional, unconditional = predicted.chunk(2)
                predicted = unconditional + guidance * (conditional - unconditional)
            x = sched.step(predicted, t, x, **step_kwargs).prev_sample
        out = from_pixels(x)
        if size and size != res:
            out = [im.resize((size, size), Image.Resampling.BICUBIC) for im in out]
        return out


__all__ = [
    "SHIPPED_DATA",
    "SHIPPED_MODEL",
    "ConditionEmbedding",
    "DemoGenerator",
    "DemoTrainParams",
    "read_meta",
    "reproduce_shipped_model",
    "sampling_scheduler",
    "train_demo_generator",
]
