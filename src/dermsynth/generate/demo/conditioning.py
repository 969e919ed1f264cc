"""The demo generator's conditioning: one learned vector per condition plus one per skin type.

The sum is added to the UNet's timestep embedding (``class_embed_type="identity"``). A vector
per (condition, FST) pair would learn each cell from its own few images; with the sum the rare
cells (few V-VI images of most conditions, as in Table 1) take their skin tone from every
condition of that type and their morphology from every type of that condition. Both tables
have a "null" row (unknown FST, and the unconditional branch of classifier-free guidance).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from dermsynth.data.fst import FST_TYPES
from dermsynth.errors import DermsynthError

NULL_FST = 0  # FST row of "no skin type": unknown FST, and guidance's unconditional branch


def normalise_label(name: str) -> str:
    """Case- and spacing-insensitive key of a condition name."""
    return " ".join(str(name).replace("_", " ").lower().split())


class DemoConditioning(ModelMixin, ConfigMixin):
    """Condition vector + FST vector per image (rows ``0..n-1`` conditions, ``n`` none)."""

    config_name = "config.json"  # type: ignore[assignment]  # diffusers declares it None

    @register_to_config
    def __init__(self, conditions: Sequence[str] = (), embedding_dim: int = 128) -> None:
        super().__init__()
        self.condition = torch.nn.Embedding(len(conditions) + 1, embedding_dim)
        self.fst = torch.nn.Embedding(len(FST_TYPES) + 1, embedding_dim)
        self._index = {normalise_label(c): i for i, c in enumerate(conditions)}

    @property
    def conditions(self) -> list[str]:
        """The conditions it knows, in index order."""
        return list(self.config["conditions"])

    @property
    def null_condition(self) -> int:
        """Row of "no condition"."""
        return len(self.config["conditions"])

    def condition_ids(self, labels: Sequence[str]) -> torch.Tensor:
        """Row of each label (case and spacing forgiven); one line naming the known ones if not."""
        ids = []
        for label in labels:
            key = normalise_label(label)
            if key not in self._index:
                raise DermsynthError(
                    f"the demo generator does not know the condition {label!r}; it knows "
                    f"{', '.join(self.conditions)}"
                )
            ids.append(self._index[key])
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def fst_ids(self, fsts: Sequence[int]) -> torch.Tensor:
        """Row of each skin type (1..6); unknown types are refused."""
        bad = [f for f in fsts if int(f) not in FST_TYPES]
        if bad:
            raise DermsynthError(f"the demo generator needs a skin type 1..6, got {bad[0]}")
        return torch.tensor([int(f) for f in fsts], dtype=torch.long, device=self.device)

    def forward(self, condition_ids: torch.Tensor, fst_ids: torch.Tensor) -> torch.Tensor:
        """One embedding per image."""
        return self.condition(condition_ids) + self.fst(fst_ids)

    def unconditional(self, n: int) -> torch.Tensor:
        """The null embedding, ``n`` times (classifier-free guidance's other branch)."""
        condition = torch.full((n,), self.null_condition, dtype=torch.long, device=self.device)
        return self(condition, torch.full_like(condition, NULL_FST))
