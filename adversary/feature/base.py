"""The feature-inversion family: one verb, `reconstruct`, and the threat-model case it runs in.

Following breaching, the case (who holds what) is kept apart from the attack: the attack
gets the features that crossed the wire plus what the case grants, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from splitleak.errors import SplitleakError


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


class FeatureInversionAttack:
    """Base class: subclasses set `name` and `access`, and implement `reconstruct`."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = "feature"
    access: ClassVar[frozenset[str]] = frozenset({"features"})

    def config(self) -> dict[str, object]:
        """The attack's hyper-parameters, for config.json."""
        return {}

    def check_access(self, case: WhiteBoxCase) -> None:
        """SplitleakError if the attack needs something the case does not grant."""
        missing = self.access - case.grants
        if missing:
            raise SplitleakError(f"attack {self.name!r} needs {', '.join(sorted(missing))}, "
                                 f"which this threat model does not grant")

    def reconstruct(self, features: torch.Tensor, case: WhiteBoxCase) -> torch.Tensor:
        """Images (B, *case.input_shape) in [0, 1] from features (B, *feature_shape)."""
        raise NotImplementedError
