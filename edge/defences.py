"""Defences the edge applies before anything leaves it, parsed from `--defence NAME[:key=value,...]`.

- `noise:sigma=S`: Gaussian noise on features (or on an update), std S times the tensor's RMS, so one
  S means the same signal-to-noise ratio at any split point.
- `subsample:keep=N`: send every N-th frame only (the rest are captured, never sent).
- `topk:ratio=R`: keep the R fraction of largest-magnitude entries of each tensor, zero the rest.
- `clip:norm=C,sigma=S[,delta=D]`: DP-SGD for gradient updates: each example's gradient clipped to
  L2 norm C (over all its tensors), summed, Gaussian noise of std S*C added, divided by the batch;
  (epsilon, delta) from Opacus's RDP accountant, one step per update at sample rate batch/frames.
Quantisation is the codecs' job (`--codec`). `none` is no defence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch

from splitleak.errors import SplitleakError

Update = dict[str, torch.Tensor]
GradientsOf = Callable[[torch.Tensor, torch.Tensor], Update]  # (inputs, labels) -> gradients


@dataclass
class Defence:
    """No defence; subclasses override what they change. `modes`: the edge modes it applies to."""

    NAME: ClassVar[str] = "none"
    PARAMS: ClassVar[dict[str, type]] = {}
    modes: ClassVar[tuple[str, ...]] = ("infer", "fedsgd", "fedavg", "split")
    seed: int = 0
    generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)
        self.check()

    def check(self) -> None:
        """Range checks; SplitleakError naming the parameter."""

    def keep_frame(self, index: int) -> bool:
        return True

    def features(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def update(self, inputs: torch.Tensor, labels: torch.Tensor, gradients_of: GradientsOf) -> Update:
        """The update to send for a batch (fedsgd); by default the batch's mean gradient, defended per tensor."""
        return {n: self.features(g) for n, g in gradients_of(inputs, labels).items()}

    def report(self) -> dict[str, Any]:
        """What the defence did, for the edge's summary."""
        return {"name": self.NAME, "params": {k: getattr(self, k) for k in self.PARAMS}}

    def _gaussian(self, like: torch.Tensor, std: float) -> torch.Tensor:
        noise = torch.randn(like.shape, generator=self.generator, dtype=torch.float32)
        return like + std * noise.to(like.device, like.dtype)


@dataclass
class FeatureNoise(Defence):
    NAME: ClassVar[str] = "noise"
    PARAMS: ClassVar[dict[str, type]] = {"sigma": float}
    sigma: float = 0.1

    def check(self) -> None:
        _require(math.isfinite(self.sigma) and self.sigma >= 0, f"noise: sigma must be >= 0, got {self.sigma}")

    def features(self, z: torch.Tensor) -> torch.Tensor:
        rms = float(z.detach().float().pow(2).mean().sqrt())
        return self._gaussian(z, self.sigma * rms)


@dataclass
class Subsample(Defence):
    NAME: ClassVar[str] = "subsample"
    PARAMS: ClassVar[dict[str, type]] = {"keep": int}
    modes: ClassVar[tuple[str, ...]] = ("infer",)
    keep: int = 2

    def check(self) -> None:
        _require(self.keep >= 1, f"subsample: keep must be an integer >= 1, got {self.keep}")

    def keep_frame(self, index: int) -> bool:
        return index % self.keep == 0


@dataclass
class TopK(Defence):
    NAME: ClassVar[str] = "topk"
    PARAMS: ClassVar[dict[str, type]] = {"ratio": float}
    ratio: float = 0.1

    def check(self) -> None:
        _require(0 < self.ratio <= 1, f"topk: ratio must be within (0, 1], got {self.ratio}")

    def features(self, z: torch.Tensor) -> torch.Tensor:
        return prune_top_k(z, self.ratio)


@dataclass
class ClipNoise(Defence):
    """DP-SGD on the edge's update; needs per-example gradients, so it applies to fedsgd only."""

    NAME: ClassVar[str] = "clip"
    PARAMS: ClassVar[dict[str, type]] = {"norm": float, "sigma": float, "delta": float}
    modes: ClassVar[tuple[str, ...]] = ("fedsgd",)
    norm: float = 1.0
    sigma: float = 1.0
    delta: float = 1e-5
    sample_rate: float = 1.0  # batch / frames, set by the edge
    accountant: Any = field(init=False, repr=False, default=None)

    def check(self) -> None:
        _require(math.isfinite(self.norm) and self.norm > 0, f"clip: norm must be > 0, got {self.norm}")
        _require(math.isfinite(self.sigma) and self.sigma >= 0, f"clip: sigma must be >= 0, got {self.sigma}")
        _require(0 < self.delta < 1, f"clip: delta must be within (0, 1), got {self.delta}")
        from opacus.accountants import RDPAccountant

        self.accountant = RDPAccountant()

    def update(self, inputs: torch.Tensor, labels: torch.Tensor, gradients_of: GradientsOf) -> Update:
        total: Update = {}
        for i in range(len(inputs)):
            for name, g in clip_update(gradients_of(inputs[i:i + 1], labels[i:i + 1]), self.norm).items():
                total[name] = total[name] + g if name in total else g.clone()
        if self.sigma > 0:
            self.accountant.step(noise_multiplier=self.sigma, sample_rate=self.sample_rate)
        return {n: self._gaussian(g, self.sigma * self.norm) / len(inputs) for n, g in total.items()}

    def epsilon(self) -> float | None:
        """Opacus's (epsilon, delta) guarantee so far; None before any noisy step (infinite)."""
        return self.accountant.get_epsilon(self.delta) if self.accountant.history else None

    def report(self) -> dict[str, Any]:
        return {**super().report(), "epsilon": self.epsilon(), "delta": self.delta,
                "steps": sum(n for _, _, n in self.accountant.history), "sample_rate": self.sample_rate}


def clip_update(update: Update, norm: float) -> Update:
    """Scale an update so its L2 norm over all tensors is at most `norm`."""
    total = math.sqrt(sum(float(g.detach().float().pow(2).sum()) for g in update.values()))
    scale = min(1.0, norm / total) if total > 0 else 1.0
    return {n: g * scale for n, g in update.items()}


def prune_top_k(t: torch.Tensor, ratio: float) -> torch.Tensor:
    """Keep the ceil(ratio * numel) largest |entries| of t (ties may keep a few more), zero the rest."""
    keep = max(1, math.ceil(ratio * t.numel()))
    if keep >= t.numel():
        return t
    threshold = t.detach().abs().flatten().kthvalue(t.numel() - keep + 1).values
    return torch.where(t.abs() >= threshold, t, torch.zeros_like(t))


REGISTRY: dict[str, type[Defence]] = {cls.NAME: cls for cls in (Defence, FeatureNoise, Subsample, TopK, ClipNoise)}


def parse_defence(text: str, *, mode: str = "infer", seed: int = 0) -> Defence:
    """`NAME[:key=value,...]` -> a Defence for `mode`; SplitleakError naming what is wrong."""
    name, _, rest = (text or "none").strip().partition(":")
    cls = REGISTRY.get(name.strip().lower())
    if cls is None:
        raise SplitleakError(f"unknown defence {name!r}; choose one of: {', '.join(REGISTRY)}")
    if mode not in cls.modes:
        raise SplitleakError(f"defence {cls.NAME!r} applies to --mode {'/'.join(cls.modes)}, not {mode}")
    params: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in cls.PARAMS:
            known = ", ".join(cls.PARAMS) or "none"
            raise SplitleakError(f"defence {cls.NAME}: bad parameter {part!r} (parameters: {known})")
        try:
            params[key] = cls.PARAMS[key](value.strip())
        except ValueError:
            raise SplitleakError(f"defence {cls.NAME}: {key}={value.strip()!r} is not "
                                 f"{'an integer' if cls.PARAMS[key] is int else 'a number'}") from None
    return cls(seed=seed, **params)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise SplitleakError(message)
