"""The attacker's copy of a model made twice differentiable, with the same values.

Every gradient attack differentiates a gradient (a double backward). Two ops of the zoo have none in
torch: hardsigmoid (mobilenet_v3_small's squeeze-excitation; "derivative for aten::hardsigmoid_backward
is not implemented") and CPU's fused scaled-dot-product attention (vit_b_16's nn.MultiheadAttention:
"_scaled_dot_product_flash_attention_for_cpu_backward"). `twice_differentiable` rewrites only the module
it is given (the attacker's rebuilt copy), never a class or a global flag, so the edge and cloud models
and every other module of the process are untouched. nn.Hardswish has a double backward and is kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel


class Relu6Hardsigmoid(nn.Module):
    """hardsigmoid as relu6(x + 3) / 6: the same values (the kernel computes exactly this), and a
    second derivative (relu6's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3) / 6


class MathAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention whose forward runs on the math kernel of scaled-dot-product attention:
    plain matmul and softmax ops, each with a double backward. The backward follows the ops recorded
    in the forward, so scoping the kernel choice to the forward is enough."""

    def forward(self, *args, **kwargs):  # type: ignore[override]
        with sdpa_kernel(SDPBackend.MATH):
            return super().forward(*args, **kwargs)


def twice_differentiable(module: nn.Module) -> nn.Module:
    """Rewrite `module` in place so a double backward runs through it; returns it. Parameters,
    buffers and state-dict keys are unchanged (the attention keeps its very parameters)."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Hardsigmoid:
                setattr(parent, name, Relu6Hardsigmoid())
            elif type(child) is nn.MultiheadAttention:
                child.__class__ = MathAttention  # a subclass adding no state: the same parameters stay
    return module
