"""The feature-inversion family: one verb, `reconstruct`, and the threat-model case it runs in.

Following breaching, the case (who holds what) is kept apart from the attack: the attack
gets the features that crossed the wire plus what the case grants, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from adversary.attack import Attack


class _CaseBase:
    """What both threat-model cases share: a prior adds the "prior" grant; inputs are square."""

    input_shape: tuple[int, ...]
    grants: frozenset[str]
    prior: Any

    def __post_init__(self) -> None:
        if self.prior is not None:
            self.grants = frozenset(self.grants) | {"prior"}

    @property
    def size(self) -> int:
        """Side of the square input."""
        return int(self.input_shape[-1])


@dataclass
class WhiteBoxCase(_CaseBase):
    """White-box feature inversion: the attacker holds the head F1 (architecture and weights).

    `input_shape` is one input's shape, e.g. (3, size, size); `seed` makes the attack repeatable.
    `prior` (a DiffusionPrior the attacker holds) adds the "prior" grant; `frames` is the wire
    metadata (stream, seq) of the batch being inverted, in order, when the caller knows it.
    """

    head: nn.Module
    input_shape: tuple[int, ...]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    grants: frozenset[str] = frozenset({"features", "head_weights", "head_architecture", "input_size"})
    prior: Any = None
    frames: tuple[tuple[str, int], ...] | None = None


@dataclass
class FeatureResult:
    """What a feature attack recovered: images (B, *input_shape) in [0, 1], the feature loss each
    returned image scores (B,), per-iteration batch means of each loss term, and what the run chose
    (e.g. the step plan it ran, the share of neighbour pixels each frame accepted)."""

    images: torch.Tensor
    loss: torch.Tensor | None = None
    trace: dict[str, list[float]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class FeatureInversionAttack(Attack):
    """Base class: subclasses set `name`, `access` and `Config`, and implement `reconstruct`."""

    family: ClassVar[str] = "feature"
    access: ClassVar[frozenset[str]] = frozenset({"features"})
    inverts_clips: ClassVar[bool] = False  # takes a clip head's features (the dummy a whole clip (3, T, H, W))

    def reconstruct(self, features: torch.Tensor, case: WhiteBoxCase) -> FeatureResult:
        """Images for features (B, *feature_shape), with their feature loss."""
        raise NotImplementedError


def masked_targets(features: torch.Tensor, case: WhiteBoxCase) -> tuple[torch.Tensor, torch.Tensor]:
    """Tapped features on the case's device, non-finite entries zeroed, and the mask of finite ones."""
    z = features.to(case.device, torch.float32)
    mask = torch.isfinite(z)
    return torch.where(mask, z, torch.zeros((), device=case.device)), mask
