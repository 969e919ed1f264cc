"""The classifier: a backbone split into trunk and tail, the recipe head inside the tail."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from dermsynth.config import ClassifierConfig
from dermsynth.train.backbones import BackboneInfo, build_backbone
from dermsynth.train.datasets import normalize_batch


class Classifier(nn.Module):
    """``net`` is the whole torchvision (or timm) model with its head replaced.

    ``trunk`` and ``tail`` are views of the same modules (held in a tuple, so their parameters
    are registered once, under ``net``): ``forward(x) == tail(trunk(x)) == net(x)``.
    """

    def __init__(self, config: ClassifierConfig, classes: list[str]) -> None:
        super().__init__()
        frozen = not config.finetune
        built = build_backbone(
            config.backbone,
            config.weights,
            len(classes),
            frozen=frozen,
            hidden=config.hidden,
            dropout=config.dropout,
        )
        self.net = built.net
        self._halves = (built.trunk, built.tail)
        self.info: BackboneInfo = built.info
        self.classes = list(classes)
        self.frozen = frozen

    @property
    def trunk(self) -> nn.Module:
        """The part computed once per view on the fast path (frozen in the recipe)."""
        return self._halves[0]

    @property
    def tail(self) -> nn.Module:
        """What follows the trunk: frozen dropout-carrying layers, then the recipe head."""
        return self._halves[1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk output; without autograd when the trunk is frozen. A uint8 batch (from the
        data pipeline) is scaled and normalized here first."""
        if x.dtype == torch.uint8:
            x = normalize_batch(x, self.info.mean, self.info.std)
        if self.frozen:
            with torch.no_grad():
                return self.trunk(x)
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of each class."""
        return self.tail(self.features(x))

    def train(self, mode: bool = True) -> Classifier:
        """Train mode everywhere except a frozen trunk: frozen means its batch-norm statistics
        do not move either, which is also what makes its features cacheable."""
        super().train(mode)
        if self.frozen:
            self.trunk.eval()
        return self

    def saved_keys(self) -> list[str]:
        """State-dict keys a checkpoint stores: the trained parameters only when frozen (the
        frozen ones are rebuilt from the weights), everything when fine-tuned."""
        if not self.frozen:
            return list(self.net.state_dict())
        return [name for name, p in self.net.named_parameters() if p.requires_grad]

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The tensors of :meth:`saved_keys`, on the CPU."""
        state = self.net.state_dict()
        return {k: state[k].detach().cpu().clone() for k in self.saved_keys()}

    def frozen_fingerprint(self) -> str:
        """Cheap hash of the parameters a checkpoint does not store (to detect other weights)."""
        keep = set(self.saved_keys())
        digest = hashlib.sha1()
        for key, tensor in self.net.state_dict().items():
            if key in keep:
                continue
            digest.update(key.encode() + str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().reshape(-1)[:256].float().cpu().numpy().tobytes())
        return digest.hexdigest()
