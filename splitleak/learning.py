"""What edge and adversary must agree on in collaborative learning: which module is trained,
how its loss and gradients are computed, and how parameters are named on the wire.

The trained module is always the split model's tail: with split point `none` the tail is the
whole model (normalisation included) trained on raw frames; with a split point the head is a
frozen feature extractor and only the tail (the classifier over its features) is trained.
Gradients are taken with the module in eval mode (BatchNorm uses its running statistics), so
a gradient is a deterministic function of (weights, inputs, labels) that an attacker can replay.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from splitleak.models import SplitModel

LABELS = "labels"


def trained_module(model: SplitModel) -> nn.Module:
    """The part of a split model that learning updates (and whose gradients cross the wire)."""
    return model.tail


def parameter_names(module: nn.Module) -> list[str]:
    return [name for name, p in module.named_parameters() if p.requires_grad]


def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the batch; labels are class ids (B,) or soft labels (B, C)."""
    if labels.dim() == 2:
        return torch.sum(-labels * F.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.cross_entropy(logits, labels)


def gradients(module: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
              names: Iterable[str] | None = None, create_graph: bool = False) -> dict[str, torch.Tensor]:
    """d loss / d parameter for the named parameters (all trainable ones by default)."""
    params = dict(module.named_parameters())
    names = list(names) if names is not None else parameter_names(module)
    value = loss(module(inputs), labels)
    grads = torch.autograd.grad(value, [params[n] for n in names], create_graph=create_graph)
    return dict(zip(names, grads))


def state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters and buffers, detached: what the cloud broadcasts each round."""
    return {name: t.detach() for name, t in module.state_dict().items()}
