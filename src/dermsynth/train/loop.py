"""The training loop, shared by both paths: ``forward`` is the whole model on images (slow
path) or only its tail on cached trunk features (fast path); everything else is the same."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from dermsynth.config import ClassifierConfig

Batches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]
Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class LoopState:
    """What a resumed run needs: finished epochs, the log, and early-stopping bookkeeping."""

    epoch: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)
    best_val: float = -1.0
    best_state: dict[str, torch.Tensor] | None = None
    since_best: int = 0
    stopped_early: bool = False


def make_optimizer(
    model: nn.Module, config: ClassifierConfig
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.StepLR]:
    """Adam (default lr unless ``config.lr``) on the trainable parameters; StepLR(7, 0.1)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = (
        torch.optim.Adam(params) if config.lr is None else torch.optim.Adam(params, lr=config.lr)
    )
    return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, config.step_size, config.gamma)


def _to(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


@torch.no_grad()
def log_probs(
    model: nn.Module,
    forward: Forward,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    *,
    amp: bool = False,
    channels_last: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities (float32, one row per item, in order) in eval mode, and the targets."""
    model.eval()
    out, targets = [], []
    for inputs, target in batches:
        with torch.autocast(device.type, enabled=amp):
            out.append(forward(_to(inputs, device, channels_last)).float().cpu())
        targets.append(torch.as_tensor(target))
    if not out:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return torch.cat(out).numpy(), torch.cat(targets).numpy()


def fit(
    model: nn.Module,
    forward: Forward,
    train: Batches,
    val: Batches | None,
    config: ClassifierConfig,
    device: torch.device,
    state: LoopState,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    on_epoch: Callable[[LoopState], None],
) -> LoopState:
    """Train from ``state.epoch + 1`` to ``config.epochs`` (or early stop); ``on_epoch`` saves."""
    amp = config.amp and device.type == "cuda"
    channels_last = config.channels_last and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    loss_fn = nn.NLLLoss()
    bar = tqdm(
        range(state.epoch + 1, config.epochs + 1),
        desc="epochs",
        disable=not config.progress,
        initial=state.epoch,
        total=config.epochs,
    )
    for epoch in bar:
        start, total, correct, seen = time.perf_counter(), 0.0, 0, 0
        model.train()
        for inputs, targets in train():
            targets = targets.to(device)
            with torch.autocast(device.type, enabled=amp):
                logp = forward(_to(inputs, device, channels_last))
                loss = loss_fn(logp.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += loss.item() * len(targets)
            correct += int((logp.argmax(1) == targets).sum())
            seen += len(targets)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        val_acc = None
        if val is not None:
            probs, truth = log_probs(
                model, forward, val(), device, amp=amp, channels_last=channels_last
            )
            val_acc = float((probs.argmax(1) == truth).mean())
            if val_acc > state.best_val:  # keep the best epoch's weights, as the recipe does
                state.best_val, state.best_state, state.since_best = val_acc, _trained(model), 0
            else:
                state.since_best += 1
        state.epoch = epoch
        state.log.append(
            {
                "epoch": epoch,
                "loss": total / max(seen, 1),
                "train_acc": correct / max(seen, 1),
                "val_acc": val_acc,
                "lr": lr,
                "seconds": time.perf_counter() - start,
            }
        )
        bar.set_postfix(loss=f"{total / max(seen, 1):.3f}", val=val_acc)
        state.stopped_early = config.patience is not None and state.since_best >= config.patience
        on_epoch(state)
        if state.stopped_early:
            break
    return state


def _trained(model: nn.Module) -> dict[str, torch.Tensor]:
    trained_state = getattr(model, "trained_state", None)  # a Classifier keeps only what it trains
    return trained_state() if trained_state is not None else model.state_dict()
