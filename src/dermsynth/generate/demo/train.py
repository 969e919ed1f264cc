"""Training the demo generator: data, the loop, resumable checkpoints and the finished folder.

The loop uses diffusers' pieces: ``DDPMScheduler`` for the forward process and the velocity
target, ``EMAModel`` for the averaged weights and ``get_cosine_schedule_with_warmup`` for the
learning rate. The loss is the plain mean squared error of the velocity: it weights the image
error by ``1 + SNR``, so the nearly noise-free steps, which leave the last grain of noise in a
sample, are learned as well as the noisy ones (min-SNR weights, tried first, left the samples
of a short CPU run visibly grainy). A checkpoint every
``checkpoint_every`` steps (``.<out>.partial/checkpoint.pt`` beside the output, written
atomically) holds everything the next step depends on, random state included, so an
interrupted run resumes to the weights of an uninterrupted one; the finished folder appears in
one step (:func:`dermsynth.io.atomic_folder`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from diffusers.training_utils import EMAModel

from dermsynth.data.fst import FST_TYPES
from dermsynth.errors import DermsynthError
from dermsynth.generate.demo.conditioning import NULL_FST, DemoConditioning
from dermsynth.generate.demo.pipeline import (
    DemoPipeline,
    build_unet,
    noise_schedule,
    sampling_scheduler,
    to_pixels,
)
from dermsynth.io import (
    FolderLock,
    atomic_folder,
    atomic_save,
    atomic_write_json,
    atomic_write_text,
)

RECORD_FILE = "training.json"
README_FILE = "README.txt"
CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = "dermsynth-demo-generator/2"
# The simulated draw the shipped model learns from: not the demo's own (random_seed=0).
SHIPPED_DATA: dict[str, Any] = {"scale": 1.0, "image_size": 256, "random_seed": 1000}


@dataclass(frozen=True)
class DemoTrainConfig:
    """Everything that decides a training run (recorded in ``training.json``); defaults: shipped."""

    resolution: int = 64
    patch_size: int = 2
    block_out_channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 1
    steps: int = 10000
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    ema_power: float = 0.75
    uncond_share: float = 0.1
    random_seed: int = 0

    def validate(self) -> None:
        """Refuse values that cannot train, naming the option."""
        grid, halvings = (
            self.resolution // max(1, self.patch_size),
            len(self.block_out_channels) - 1,
        )
        if self.patch_size < 1 or self.resolution % self.patch_size:
            raise DermsynthError(f"patch size {self.patch_size} must divide --resolution")
        if self.resolution < 8 or grid % 2**halvings:
            raise DermsynthError(
                f"--resolution {self.resolution} must be >= 8 and, over {self.patch_size}x"
                f"{self.patch_size} patches, halve {halvings} times (e.g. 64 with 3 channel levels)"
            )
        if not self.block_out_channels or any(c < 8 or c % 8 for c in self.block_out_channels):
            raise DermsynthError(
                f"--channels must be multiples of 8, got {list(self.block_out_channels)}"
            )
        for name, value in (("steps", self.steps), ("batch-size", self.batch_size)):
            if value < 1:
                raise DermsynthError(f"--{name} must be >= 1, got {value}")
        if not self.learning_rate > 0:
            raise DermsynthError(f"--learning-rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.uncond_share < 1.0:
            raise DermsynthError(f"uncond_share must be in [0, 1), got {self.uncond_share}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise DermsynthError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    def record(self) -> dict[str, Any]:
        """Settings as JSON-ready values (with the noise schedule they imply)."""
        out = asdict(self)
        out["block_out_channels"] = list(self.block_out_channels)
        out["noise_schedule"] = noise_schedule()
        return out


# -- data ---------------------------------------------------------------------------------------


def training_rows(csv: str | os.PathLike[str]) -> pd.DataFrame:
    """The manifest's training rows (a plan's ``split == "train"`` only), sorted by image id."""
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


def data_fingerprint(rows: pd.DataFrame) -> str:
    """SHA-256 over each image's id, label, FST and bytes: the exact data a model learned."""
    digest = hashlib.sha256()
    columns = (rows[c].tolist() for c in ("image_id", "label", "fst", "path"))
    for image_id, label, fst, path in zip(*columns, strict=True):
        content = hashlib.sha256(Path(str(path)).read_bytes()).hexdigest()
        digest.update(f"{image_id}\t{label}\t{int(fst)}\t{content}\n".encode())
    return digest.hexdigest()


@dataclass
class TrainingData:
    """Images in [-1, 1] (NCHW) with their condition and FST rows, and the draw weights."""

    images: torch.Tensor
    condition_ids: torch.Tensor
    fst_ids: torch.Tensor
    weights: torch.Tensor
    conditions: list[str] = field(default_factory=list)


def load_training_data(rows: pd.DataFrame, resolution: int, progress: bool) -> TrainingData:
    """Centre squares at ``resolution`` (as `generate` crops a seed without a box)."""
    from tqdm.auto import tqdm

    from dermsynth.data.images import load_rgb
    from dermsynth.generate.seeds import square_around

    pixels = np.empty((len(rows), resolution, resolution, 3), dtype=np.float32)
    for i, path in enumerate(
        tqdm(list(rows["path"]), desc="loading", unit="img", disable=not progress)
    ):
        image = load_rgb(path)
        pixels[i] = to_pixels(image.crop(square_around(None, image.size, 1.0)), resolution)
    conditions = sorted(rows["label"].astype(str).unique())
    index = {c: i for i, c in enumerate(conditions)}
    fst = rows["fst"].astype(int).to_numpy()
    return TrainingData(
        images=torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(),
        condition_ids=torch.tensor([index[c] for c in rows["label"].astype(str)]),
        fst_ids=torch.from_numpy(np.where(np.isin(fst, FST_TYPES), fst, NULL_FST)),
        weights=_draw_weights(fst),
        conditions=conditions,
    )


def _draw_weights(fst: np.ndarray) -> torch.Tensor:
    # Images are drawn with weight 1/sqrt(count of their FST): dark types, rare as in Table 1,
    # are seen more often than their share without being repeated as often as full balancing.
    values, counts = np.unique(fst, return_counts=True)
    per_type = dict(zip(values.tolist(), counts.tolist(), strict=True))
    weights = np.array([1.0 / math.sqrt(per_type[f]) for f in fst.tolist()])
    return torch.from_numpy(weights / weights.sum())


def _dihedral(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Each image under one of the 8 flips and rotations (``k`` in 0..7): lesions have no up."""
    out = torch.where((k % 2 == 1)[:, None, None, None], x.flip(3), x)
    out = torch.where(((k // 2) % 2 == 1)[:, None, None, None], out.flip(2), out)
    return torch.where((k // 4 == 1)[:, None, None, None], out.transpose(2, 3), out)


# -- the loop -----------------------------------------------------------------------------------


class _Trainer:
    """Model, optimizer, schedules, EMA and random state of one run; one call per step."""

    def __init__(self, config: DemoTrainConfig, conditions: Sequence[str]) -> None:
        torch.manual_seed(config.random_seed)
        self.config = config
        self.unet = build_unet(
            config.resolution, config.patch_size, config.block_out_channels, config.layers_per_block
        )
        self.conditioning = DemoConditioning(
            conditions=list(conditions), embedding_dim=config.block_out_channels[0] * 4
        )
        self.params = [*self.unet.parameters(), *self.conditioning.parameters()]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.learning_rate, weight_decay=0.0)
        self.lr = get_cosine_schedule_with_warmup(
            self.optimizer, min(config.warmup_steps, config.steps // 10), config.steps
        )
        self.ema = EMAModel(
            self.params, decay=config.ema_decay, use_ema_warmup=True, power=config.ema_power
        )
        self.noise = DDPMScheduler(**noise_schedule())
        self.generator = torch.Generator().manual_seed(config.random_seed)
        self.step = 0
        self.losses: list[float] = []
        self.seconds = 0.0  # wall-clock time of the steps
        self.cpu_seconds = 0.0  # CPU time of the steps, all threads: what a busy machine hides

    def state_dict(self) -> dict[str, Any]:
        """Everything the next step depends on."""
        return {
            "unet": self.unet.state_dict(),
            "conditioning": self.conditioning.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr": self.lr.state_dict(),
            "ema": self.ema.state_dict(),
            "generator": self.generator.get_state(),
            "step": self.step,
            "losses": list(self.losses),
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` stopped."""
        self.unet.load_state_dict(state["unet"])
        self.conditioning.load_state_dict(state["conditioning"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr.load_state_dict(state["lr"])
        self.ema.load_state_dict(state["ema"])
        self.generator.set_state(state["generator"])
        self.step, self.losses = state["step"], state["losses"]
        self.seconds, self.cpu_seconds = state["seconds"], state["cpu_seconds"]

    def train_step(self, data: TrainingData) -> float:
        """One optimizer step on a weighted draw of ``batch_size`` images; returns its loss."""
        c, g, n = self.config, self.generator, self.config.batch_size
        pick = torch.multinomial(data.weights, n, replacement=True, generator=g)
        x0 = _dihedral(data.images[pick], torch.randint(0, 8, (n,), generator=g))
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, self.noise.config.num_train_timesteps, (n,), generator=g)
        drop = torch.rand(n, generator=g) < c.uncond_share
        condition = torch.where(drop, self.conditioning.null_condition, data.condition_ids[pick])
        fst = torch.where(drop, NULL_FST, data.fst_ids[pick])
        noisy = torch.nn.functional.pixel_unshuffle(
            self.noise.add_noise(x0, noise, t), c.patch_size
        )
        predicted = self.unet(noisy, t, class_labels=self.conditioning(condition, fst)).sample
        target = self.noise.get_velocity(x0, noise, t)
        loss = torch.nn.functional.mse_loss(
            torch.nn.functional.pixel_shuffle(predicted, c.patch_size), target
        )
        value = float(loss.item())
        if not math.isfinite(value):
            # Stop before the step is applied: a diverged run would otherwise go on for
            # thousands of steps and write a model of NaN weights (the checkpoints before this
            # step are intact, but the same settings diverge again at the same step).
            raise DermsynthError(
                f"training diverged at step {self.step + 1} of {c.steps} (loss {value}); lower "
                f"--learning-rate (now {c.learning_rate}) and train again"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.lr.step()
        self.ema.step(self.params)
        self.step += 1
        self.losses.append(value)
        return self.losses[-1]

    def averaged_pipeline(self) -> DemoPipeline:
        """The pipeline with the EMA weights (the trained ones are left as they are)."""
        self.ema.store(self.params)
        self.ema.copy_to(self.params)
        try:
            pipe = DemoPipeline(
                unet=_copy(self.unet),
                scheduler=sampling_scheduler(),
                conditioning=_copy(self.conditioning),
                patch_size=self.config.patch_size,
            )
        finally:
            self.ema.restore(self.params)
        return pipe


def _copy(module: Any) -> Any:
    return copy.deepcopy(module).eval()


def _run_steps(
    trainer: _Trainer, data: TrainingData, save: Callable[[], None], every: int, progress: bool
) -> None:
    from tqdm.auto import tqdm

    total = trainer.config.steps
    began, seconds_before = time.perf_counter(), trainer.seconds
    cpu_began, cpu_before = time.process_time(), trainer.cpu_seconds
    bar = tqdm(
        total=total, initial=trainer.step, desc="train-demo", unit="step", disable=not progress
    )
    with bar:
        while trainer.step < total:
            trainer.train_step(data)
            trainer.seconds = seconds_before + time.perf_counter() - began
            trainer.cpu_seconds = cpu_before + time.process_time() - cpu_began
            bar.update(1)
            if trainer.step % 25 == 0:
                bar.set_postfix(loss=f"{np.mean(trainer.losses[-100:]):.4f}")
            if trainer.step % every == 0 and trainer.step < total:
                save()


def train_demo_generator(
    csv: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: DemoTrainConfig | None = None,
    *,
    checkpoint_every: int = 100,
    data_note: str = "",
    progress: bool = True,
) -> Path:
    """Train the demo generator on a manifest's images (a plan's ``split == "train"`` rows only).

    Images are centre-cropped, resized to ``config.resolution`` and flipped or rotated at random;
    batches draw images with weight ``1/sqrt(count of their FST)``. Resumable (see the module
    docstring); a folder already trained with the same settings on the same data is returned
    as it is. Deterministic for a seed on one machine and thread count. ``data_note`` says where
    the data came from (written to the README).
    """
    config = config or DemoTrainConfig()
    config.validate()
    if checkpoint_every < 1:
        raise DermsynthError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    out = _check_out(Path(out_dir).expanduser())
    rows = training_rows(csv)
    fingerprint = data_fingerprint(rows)
    if _already_trained(out, config, fingerprint):
        return out
    partial = out.parent / f".{out.name}.partial"
    checkpoint = partial / CHECKPOINT_FILE
    with FolderLock(partial, "a demo generator training run"):
        data = load_training_data(rows, config.resolution, progress)
        trainer = _Trainer(config, data.conditions)
        state = _read_checkpoint(checkpoint, config, fingerprint)
        if state is not None:
            trainer.load_state_dict(state)

        def save() -> None:
            snapshot = {
                "settings": config.record(),
                "data_fingerprint": fingerprint,
                "trainer": trainer.state_dict(),
            }
            atomic_save(checkpoint, lambda handle: torch.save(snapshot, handle))

        _run_steps(trainer, data, save, checkpoint_every, progress)
        record = _record(trainer, rows, csv, fingerprint, data_note)
        with atomic_folder(out) as folder:
            pipe = trainer.averaged_pipeline()
            # The UNet is stored in half precision (half the size to ship); loading upcasts it
            # to fp32 exactly, so every load of the folder samples the same images.
            pipe.unet.half()
            pipe.save_pretrained(str(folder), safe_serialization=True)
            atomic_write_json(folder / RECORD_FILE, record)
            atomic_write_text(folder / README_FILE, readme(record))
    shutil.rmtree(partial, ignore_errors=True)
    return out


def _check_out(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise DermsynthError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / RECORD_FILE).is_file():
        raise DermsynthError(
            f"{out} is a non-empty folder that holds no demo generator; choose a new --out"
        )
    return out


def read_record(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``training.json`` of a model folder (empty if there is none)."""
    try:
        return dict(json.loads((Path(folder) / RECORD_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return {}


def _already_trained(out: Path, config: DemoTrainConfig, fingerprint: str) -> bool:
    record = read_record(out)
    return (
        record.get("settings") == config.record()
        and record.get("data_fingerprint") == fingerprint
        and (out / "model_index.json").is_file()
    )


def _read_checkpoint(
    checkpoint: Path, config: DemoTrainConfig, fingerprint: str
) -> dict[str, Any] | None:
    """The checkpoint of the same run (settings and data), else None: a different run starts over."""
    if not checkpoint.is_file():
        return None
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, ValueError):
        return None
    same = state.get("settings") == config.record() and state.get("data_fingerprint") == fingerprint
    return state["trainer"] if same else None


def _record(
    trainer: _Trainer, rows: pd.DataFrame, csv: Any, fingerprint: str, note: str
) -> dict[str, Any]:
    import diffusers

    return {
        "format": FORMAT,
        "settings": trainer.config.record(),
        "conditions": trainer.conditioning.conditions,
        "resolution": trainer.config.resolution,
        "data_fingerprint": fingerprint,
        "data": {
            "csv": str(Path(csv)),
            "note": note,
            "images": len(rows),
            "per_fst": {
                str(k): int(v) for k, v in sorted(rows["fst"].astype(int).value_counts().items())
            },
            "per_condition": {
                str(k): int(v) for k, v in sorted(rows["label"].value_counts().items())
            },
        },
        "loss_curve": loss_curve(trainer.losses),
        "train_seconds": round(trainer.seconds, 1),
        "train_cpu_seconds": round(trainer.cpu_seconds, 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }


def loss_curve(losses: Sequence[float], points: int = 50) -> list[list[float]]:
    """``[step, mean loss]`` over equal windows: enough to see that training converged."""
    if not losses:
        return []
    size = max(1, math.ceil(len(losses) / points))
    return [
        [min(i + size, len(losses)), round(float(np.mean(losses[i : i + size])), 5)]
        for i in range(0, len(losses), size)
    ]


def _command(settings: dict[str, Any], note: str, csv: str) -> str:
    """The train-demo command line that makes these settings."""
    channels = ",".join(str(c) for c in settings["block_out_channels"])
    command = (
        f"dermsynth generator train-demo --out DIR --resolution {settings['resolution']} "
        f"--channels {channels} --steps {settings['steps']} --batch-size {settings['batch_size']} "
        f"--learning-rate {settings['learning_rate']} --random-seed {settings['random_seed']}"
    )
    return command if note.startswith("simulate_dataset") else f"{command} --data {csv}"


def readme(record: dict[str, Any]) -> str:
    """The model folder's README: what it is, what it learned from, how to remake it."""
    s, data = record["settings"], record["data"]
    res, curve = record["resolution"], record["loss_curve"]
    cli = set(DemoTrainConfig.__dataclass_fields__) - {
        "resolution",
        "block_out_channels",
        "steps",
        "batch_size",
        "learning_rate",
        "random_seed",
    }
    defaults = DemoTrainConfig().record()
    api_only = sorted(k for k in cli if s.get(k) != defaults.get(k))
    lines = [
        "dermsynth demo generator",
        "========================",
        "",
        f"A class- and skin-type-conditional pixel-space diffusion model at {res}x{res} px: a",
        "diffusers DiffusionPipeline (DemoPipeline: UNet2DModel on "
        f"{s['patch_size']}x{s['patch_size']} pixel patches,",
        "SDE-DPM-Solver++ scheduler, condition + Fitzpatrick-type embedding), for",
        "`dermsynth generate --backend demo` (img2img variations of seed images, or text2img).",
        "Load: dermsynth.generate.demo.load_demo_pipeline(FOLDER), or DemoPipeline.from_pretrained.",
        "SIMULATED DATA ONLY: not real patients.",
        "",
        f"Trained on: {data['note'] or 'the manifest ' + data['csv']} ({data['images']} images).",
        f"Images per FST: {data['per_fst']}.",
        f"Data fingerprint (sha256 of ids, labels, FST and image bytes): {record['data_fingerprint']}",
        f"Model: channels {s['block_out_channels']}, {s['layers_per_block']} ResNet layer(s) per "
        "level, attention at the coarsest level.",
        f"Training: {s['steps']} steps, batch {s['batch_size']}, AdamW lr {s['learning_rate']} "
        f"(cosine, {min(s['warmup_steps'], s['steps'] // 10)} warm-up), EMA {s['ema_decay']} (warm-up power "
        f"{s['ema_power']}), loss MSE of v; {record['train_seconds']} s wall, "
        f"{record['train_cpu_seconds']} s CPU time on {record['threads']} thread(s).",
        f"Final loss (mean of the last window): {curve[-1][1] if curve else 'n/a'}.",
        "",
        "Reproduce (the same weights on the same machine and thread count; float rounding may",
        "differ slightly elsewhere):",
        f"  OMP_NUM_THREADS={record['threads']} {_command(s, data['note'], data['csv'])}",
    ]
    if api_only:
        lines.append(
            f"  (and, through DemoTrainConfig, {', '.join(f'{k}={s[k]}' for k in api_only)})"
        )
    return "\n".join([*lines, ""])


def reproduce_shipped_model(
    out_dir: str | os.PathLike[str],
    config: DemoTrainConfig | None = None,
    *,
    work_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
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
        return train_demo_generator(csv, out_dir, config, data_note=note, progress=progress)
