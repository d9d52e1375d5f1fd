"""One reconstruction run of a prior-based feature attack: the targets, the objective and what the
run keeps (each frame's best image, the loss trace). Attacks create one per `reconstruct` call, so
the attack object itself never holds a run's state."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from adversary.feature.base import WhiteBoxCase, masked_targets
from adversary.losses import feature_loss, total_variation
from splitleak.errors import SplitleakError

PRIOR_ACCESS = frozenset({"features", "head_weights", "head_architecture", "prior"})
CHECK_EVERY = 25  # optimisation steps between read-backs of what a run tracks on the device


def require_prior(name: str, case: Any) -> Any:
    """The case's prior on the case's device; SplitleakError when the case holds none."""
    prior = getattr(case, "prior", None)
    if prior is None:
        raise SplitleakError(f"attack {name!r} needs a diffusion prior: pass --prior DIR "
                             f"(a folder from `splitleak train-prior`, or a diffusers pipeline)")
    if prior.device != case.device:
        prior.to(case.device)
    return prior


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 (fp16 where bf16 is missing) autocast on CUDA; nothing elsewhere."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def adam(params: Iterable[torch.Tensor], lr: float) -> torch.optim.Adam:
    """Adam; on CUDA the fused kernel (one launch per step, its step counter kept on the device)."""
    params = list(params)
    fused = bool(params) and all(p.device.type == "cuda" for p in params)
    return torch.optim.Adam(params, lr=lr, fused=True) if fused else torch.optim.Adam(params, lr=lr)


def to_head_input(x: torch.Tensor, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Decoded images (B, 3, s, s) -> the head's input shape (resized, grey if it takes 1 channel)."""
    x = x.float()
    channels, side = int(input_shape[0]), tuple(int(n) for n in input_shape[1:])
    if tuple(x.shape[-2:]) != side:
        x = F.interpolate(x, size=side, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    if channels == 1:
        x = x.mean(1, keepdim=True)
    elif channels != x.shape[1]:
        raise SplitleakError(f"the head takes {channels} channels; the prior makes {x.shape[1]}")
    return x


class Best:
    """Keeps, per frame, the image with the lowest feature loss seen so far."""

    def __init__(self) -> None:
        self.loss: torch.Tensor | None = None
        self.x: torch.Tensor | None = None

    def restart(self, rows: torch.Tensor | None = None) -> None:
        """Forget what was seen so far, for every frame or for the frames where `rows` (bool) is set:
        the next update sets those."""
        if rows is None or self.loss is None:
            self.loss = self.x = None
        else:
            self.loss = torch.where(rows.to(self.loss.device), torch.inf, self.loss)

    def update(self, loss: torch.Tensor, x: torch.Tensor) -> None:
        loss, x = loss.detach().float(), x.detach()
        if self.loss is None:
            self.loss, self.x = loss.clone(), x.clone()
            return
        better = loss < self.loss
        self.loss = torch.where(better, loss, self.loss)
        self.x = torch.where(better.view(-1, *[1] * (x.dim() - 1)), x, self.x)


class Trace:
    """Per-step batch means of each loss term. They stay on the device and are read back every `every`
    logged steps, all terms at once: one host sync per read-back instead of one per term per step.
    Reading the trace (`flush`, `in`, `[]`) reads back what is pending."""

    def __init__(self, every: int = CHECK_EVERY) -> None:
        self.every, self.values = max(1, int(every)), {}
        self._pending: list[tuple[str, torch.Tensor]] = []
        self._steps = 0

    def log(self, **terms: torch.Tensor) -> None:
        self._pending.extend((key, value.detach().float().mean()) for key, value in terms.items())
        self._steps += 1
        if self._steps % self.every == 0:
            self.flush()

    def flush(self) -> dict[str, list[float]]:
        """Every term's values so far, as floats (one read-back of what is pending)."""
        if self._pending:
            values = torch.stack([value for _, value in self._pending]).tolist()
            for (key, _), value in zip(self._pending, values):
                self.values.setdefault(key, []).append(value)
            self._pending = []
        return self.values

    def __contains__(self, key: str) -> bool:
        return key in self.flush()

    def __getitem__(self, key: str) -> list[float]:
        return self.flush()[key]


@dataclass
class Fit:
    """A run's targets z (masked where not finite), its objective
    feature_loss(F1(x), z) + lambda_s * TV(x), and what it keeps: each frame's best image, a trace."""

    case: WhiteBoxCase
    prior: Any
    z: torch.Tensor
    mask: torch.Tensor
    lambda_s: float
    amp: bool = True
    best: Best = field(default_factory=Best)
    trace: Trace = field(default_factory=Trace)
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, features: torch.Tensor, case: WhiteBoxCase, prior: Any, lambda_s: float, amp: bool,
             check_every: int = CHECK_EVERY) -> "Fit":
        z, mask = masked_targets(features, case)
        return cls(case, prior, z, mask, lambda_s, amp, trace=Trace(check_every))

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.case.device, self.amp)

    def image_loss(self, x: torch.Tensor, z: torch.Tensor | None = None,
                   mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(objective, feature loss, x at the head's size) per frame for decoded images x, against the
        run's targets or the given ones."""
        x = to_head_input(x, self.case.input_shape)
        feat = feature_loss(self.case.head(x).float(), self.z if z is None else z, self.mask if mask is None else mask)
        return feat + self.lambda_s * total_variation(x), feat, x

    def log(self, **terms: torch.Tensor) -> None:
        self.trace.log(**terms)

    def descend_latent(self, w: torch.Tensor, steps: int, lr: float) -> None:
        """`steps` Adam steps on the VAE latent w, x = D(w), then one pass that only scores the final
        w; the run's `best` collects each frame's best image."""
        w = w.requires_grad_(True)
        opt = adam([w], lr)
        with torch.enable_grad():
            for step in range(steps + 1):
                with self.autocast():
                    loss, feat, x = self.image_loss(self.prior.decode(w))
                self.best.update(feat, x)
                self.log(feature=feat, total=loss)
                if step == steps:
                    break
                (w.grad,) = torch.autograd.grad(loss.sum(), w)
                opt.step()
