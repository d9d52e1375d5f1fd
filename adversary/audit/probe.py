"""The map the audit looks at: x -> the head's features (split inference) or x -> the FedSGD gradient
of the trained module (split `none`, `--mode fedsgd`), flattened, with its Jacobian products.

Both directions of the Jacobian come from torch.func: jvp (J v, forward mode) and vjp (J^T u). Attention
runs on the math SDPA kernel, whose ops support forward mode (the fused CPU kernel does not).
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch.func import functional_call, grad, jvp, vjp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from adversary.gradient.second_order import twice_differentiable
from splitleak import learning
from splitleak.models import NONE, SplitModel

FEATURES, GRADIENTS = "features", "gradients"
GRADIENT_LABEL = 0  # every input's gradient is taken at this class: pairs differ only in their inputs


@contextmanager
def forward_mode_ok() -> Iterator[None]:
    """Attention through ops with forward-mode rules: the math SDPA kernel, not MultiheadAttention's fused
    inference path (taken when no parameter needs a gradient, blind to forward-mode dual tensors)."""
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


@dataclass
class Probe:
    """x (B, *input_shape) in [0, 1] -> (B, m) vectors, and J v / J^T u at one input."""

    model: SplitModel
    kind: str  # FEATURES | GRADIENTS

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.model.input_shape)

    @property
    def input_dim(self) -> int:
        return int(torch.Size(self.input_shape).numel())

    def single(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The map on one input (*input_shape) -> (m,)."""
        if self.kind == FEATURES:
            head = self.model.head
            return lambda x: head(x.unsqueeze(0)).flatten()
        module = learning.trained_module(self.model)
        names = learning.parameter_names(module)
        params = {n: p.detach() for n, p in module.named_parameters()}
        label = torch.tensor([GRADIENT_LABEL], device=next(iter(params.values())).device)

        def gradient(x: torch.Tensor) -> torch.Tensor:
            def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
                return learning.loss(functional_call(module, p, (x.unsqueeze(0),)), label)
            g = grad(loss)(params)
            return torch.cat([g[n].flatten() for n in names])
        return gradient

    def values(self, x: torch.Tensor, chunk: int = 16) -> torch.Tensor:
        """(B, m) for a batch of inputs; features in chunks, gradients one input at a time."""
        out = []
        with torch.no_grad() if self.kind == FEATURES else torch.enable_grad():
            if self.kind == FEATURES:
                out = [self.model.head(x[i:i + chunk]).flatten(1) for i in range(0, len(x), chunk)]
            else:  # per-sample gradients, vectorised
                f = vmap(self.single())
                out = [f(x[i:i + chunk]) for i in range(0, len(x), chunk)]
        return torch.cat(out).detach()

    def jvp(self, x: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
        """J(x) v for each row v of tangents (k, *input_shape) -> (k, m)."""
        if self.kind == FEATURES:
            head = self.model.head
            with forward_mode_ok():
                return jvp(lambda a: head(a).flatten(1), (x.unsqueeze(0).repeat(len(tangents), *[1] * x.dim()),), (tangents,))[1].detach()
        f = self.single()
        with forward_mode_ok():
            return vmap(lambda v: jvp(f, (x,), (v,))[1])(tangents).detach()

    def vjp(self, x: torch.Tensor, cotangents: torch.Tensor) -> torch.Tensor:
        """J(x)^T u for each row u of cotangents (k, m) -> (k, *input_shape)."""
        if self.kind == FEATURES:
            head = self.model.head
            _, pull = vjp(lambda a: head(a).flatten(1), x.unsqueeze(0).repeat(len(cotangents), *[1] * x.dim()))
            return pull(cotangents)[0].detach()
        _, pull = vjp(self.single(), x)
        return vmap(lambda u: pull(u)[0])(cotangents).detach()


def probe_for(model: SplitModel) -> Probe:
    """Gradients where the model is cut at `none` (FedSGD on raw frames), the head's features otherwise.
    A gradient probe differentiates the gradient again: the audit's own copy of the model is rewritten to
    layers with a double backward (hardsigmoid, fused attention), the same values."""
    if model.split != NONE:
        return Probe(model, FEATURES)
    twice_differentiable(model.network)
    return Probe(model, GRADIENTS)
