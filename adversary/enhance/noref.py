"""`noref`: blind super-resolution with no reference frame (the paper's Real-ESRGAN case).

With `--weights FILE` any pretrained model spandrel knows (RealESRGAN_x4plus.pth, SwinIR, HAT, ...);
with `--weights DIR` a compact RRDBNet trained here by `splitleak train-sr --method noref` on footage
degraded as Real-ESRGAN does (adversary.enhance.degrade). Both load through spandrel.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from adversary.enhance.base import Enhancer
from adversary.enhance.degrade import DegradeConfig, preset
from adversary.enhance.pairs import PairSampler, load_footage
from adversary.enhance.registry import register, register_trainer
from adversary.enhance.rrdb import RRDBConfig, RRDBNet, init_as_upsampler
from adversary.enhance.training import TrainSpec, read_config, save_model, train_model
from adversary.enhance.weights import load_descriptor
from splitleak.errors import SplitleakError

DEFAULT_NET = RRDBConfig(num_feat=32, num_block=2)  # ~0.5 M parameters: trains in minutes on 2 CPU cores


@register
class NoRef(Enhancer):
    name = "noref"
    weights = "required"

    def __init__(self, scale: int = 4, device: str = "cpu", weights: str | None = None) -> None:
        super().__init__(scale, device, weights)
        if Path(str(weights)).is_dir():
            read_config(str(weights), method="noref")
        self.model = load_descriptor(str(weights), self.device)
        if self.model.scale != scale:
            raise SplitleakError(f"the weights {weights} upscale x{self.model.scale}; pass --scale {self.model.scale}")
        self.architecture = self.model.architecture.name

    def forward(self, low: torch.Tensor, refs: torch.Tensor | None) -> torch.Tensor:
        return self.model(low)


def build_generator(config: dict[str, Any]) -> RRDBNet:
    """The empty RRDBNet a train-sr noref folder's config.json describes (its "net" entry)."""
    return RRDBNet(RRDBConfig(**config["net"]))


def train_noref(spec: TrainSpec, net: RRDBConfig = DEFAULT_NET, degradation: DegradeConfig | None = None,
                frames: torch.Tensor | None = None) -> dict[str, Any]:
    """Train a compact RRDBNet on degraded/clean pairs from `spec.source` (or the clean `frames` given);
    save it to `spec.out`; return its config. The degradation defaults to Real-ESRGAN's (spec.degradation)."""
    degradation = degradation or preset(spec.degradation or "realesrgan")
    net = RRDBConfig(net.num_feat, net.num_block, net.grow, spec.scale).check()
    torch.manual_seed(spec.seed)
    if frames is None:
        frames = load_footage(spec.source, spec.size, spec.frames, spec.stride)
    sampler = PairSampler(frames, spec.scale, spec.patch, degradation, spec.seed)
    model = init_as_upsampler(RRDBNet(net))

    def next_batch(step: int) -> tuple[tuple[torch.Tensor], torch.Tensor]:
        pairs = sampler.pairs(spec.batch)
        return (pairs.low,), pairs.high

    log = train_model(model, next_batch, steps=spec.steps, lr=spec.lr, device=spec.device,
                      progress=spec.progress, desc="train-sr noref")
    config = {"method": "noref", "arch": "RRDBNet (Real-ESRGAN key names; spandrel loads it as ESRGAN)",
              "net": asdict(net), "scale": spec.scale, "frames_loaded": len(sampler),
              "parameters": sum(p.numel() for p in model.parameters()), "degradation": asdict(degradation),
              "training": {**spec.describe(), **log.summary(), "loss": "L1", "optimizer": "Adam, cosine decay",
                           "init": "smooth upsampler (rrdb.init_as_upsampler)"}}
    save_model(spec.out, model, config)
    return config


register_trainer("noref")(train_noref)
