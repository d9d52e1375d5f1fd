"""Training any super-resolution model, and saving / loading it as safetensors plus a JSON config.

`train_model(model, next_batch, ...)` is model-agnostic: `next_batch(step)` returns (inputs, target),
the model is called as `model(*inputs)`, the loss (L1 by default, as Real-ESRNet's pixel loss)
compares its output with `target`. Adam with a cosine learning-rate decay, gradient clipping, a tqdm
bar. `save_model` / `load_model_dir` write and read `DIR/model.safetensors` + `DIR/config.json`
(no pickle anywhere).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from splitleak.errors import SplitleakError
from splitleak.recording import write_json

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
Batch = tuple[Sequence[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TrainSpec:
    """What `splitleak train-sr` asks a method's trainer for (adversary.enhance.registry.register_trainer).

    source: footage spec (open_source); size: side of the clean frames; patch: side of the clean
    training crops (None: whole frames); frames / stride: which frames of the source to load."""

    source: str
    out: str
    scale: int = 4
    size: int = 128
    patch: int | None = 64
    steps: int = 300
    batch: int = 8
    lr: float = 5e-4
    frames: int | None = 300
    stride: int = 1
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    degradation: str | None = None  # a preset of adversary.enhance.degrade.PRESETS; None: the method's default
    base: str | None = None  # video: a train-sr noref folder whose generator upsamples (None: bicubic)

    def describe(self) -> dict[str, Any]:
        """The spec as config.json records it."""
        described = {k: v for k, v in asdict(self).items() if k not in ("out", "progress")}
        if self.base is None:  # only video has one; older configs (and cache keys) never named it
            del described["base"]
        return described


@dataclass
class TrainLog:
    """Per-step losses and the wall time of the run."""

    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self, tail: int = 20) -> dict[str, Any]:
        """First and last (mean of the last `tail` steps) loss, steps and seconds, for config.json."""
        last = self.losses[-tail:]
        return {"steps": len(self.losses), "seconds": round(self.seconds, 2),
                "first_loss": self.losses[0] if self.losses else None,
                "final_loss": sum(last) / len(last) if last else None}


def train_model(model: nn.Module, next_batch: Callable[[int], Batch], *, steps: int, lr: float = 2e-4,
                device: str | torch.device = "cpu", loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.l1_loss,
                clip_grad: float = 1.0, progress: bool = True, desc: str = "train-sr") -> TrainLog:
    """Train `model` in place for `steps` steps on batches from `next_batch(step)`; return the losses.

    The model ends in eval mode on `device`. A non-finite loss stops the run with SplitleakError
    (the learning rate is too high for the data)."""
    from tqdm import tqdm

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise SplitleakError(f"bad number of training steps {steps!r}: expected a positive integer")
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    log, start = TrainLog(), time.perf_counter()
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        inputs, target = next_batch(step)
        out = model(*(x.to(device) for x in inputs))
        value = loss(out, target.to(device))
        if not torch.isfinite(value):
            raise SplitleakError(f"training diverged at step {step} (loss {value.item()}); lower the learning rate")
        opt.zero_grad(set_to_none=True)
        value.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        opt.step()
        sched.step()
        log.losses.append(value.item())
        bar.set_postfix(loss=f"{value.item():.4f}", refresh=False)
    log.seconds = time.perf_counter() - start
    model.eval()
    return log


def save_model(out_dir: str | Path, model: nn.Module, config: dict[str, Any]) -> Path:
    """Write DIR/model.safetensors (the state dict) and DIR/config.json (`config`, which must say
    `method` so a loader knows what it holds); return DIR."""
    from safetensors.torch import save_file

    if "method" not in config:
        raise ValueError("a saved model's config must name its method")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE))
    write_json(out / CONFIG_FILE, config)
    return out


def read_config(model_dir: str | Path, method: str | None = None) -> dict[str, Any]:
    """DIR/config.json as a dict, checked to be a JSON object (for `method`, naming it); SplitleakError otherwise."""
    path = Path(model_dir) / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except OSError as err:
        raise SplitleakError(f"cannot read {path}: {err.strerror or err}") from None
    except ValueError as err:
        raise SplitleakError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise SplitleakError(f"{path}: expected a JSON object")
    if method is not None and config.get("method") != method:
        raise SplitleakError(f"{model_dir} holds a {config.get('method')!r} model, not a {method!r} one")
    return config


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file; SplitleakError if it is missing or corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise SplitleakError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise SplitleakError(f"cannot read weights {path}: {str(err).splitlines()[0] if str(err) else err}") from None


def load_model_dir(model_dir: str | Path, model: nn.Module) -> nn.Module:
    """Load DIR/model.safetensors into `model` (strict: every key, every shape); SplitleakError on a mismatch."""
    state = read_state_dict(Path(model_dir) / WEIGHTS_FILE)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise SplitleakError(f"the weights in {model_dir} do not fit the model its config.json describes: "
                             f"{str(err).splitlines()[0]}") from None
    return model.eval()


def load_trained(model_dir: str | Path, method: str, build: Callable[[dict[str, Any]], nn.Module]) -> nn.Module:
    """A model saved by `save_model` for `method`: DIR/config.json read and checked, `build(config)`
    makes the empty model, DIR/model.safetensors fills it (strict). One-line SplitleakError when the
    folder is missing, not a folder, another method's, or its files are corrupt or do not fit."""
    path = Path(model_dir)
    if not path.is_dir():
        raise SplitleakError(f"weights for {method!r} must be a train-sr folder (model.safetensors + config.json); "
                             f"{model_dir} is {'a file' if path.exists() else 'not found'}")
    config = read_config(path, method)
    try:
        model = build(config)
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise SplitleakError(f"{path / CONFIG_FILE} does not describe a {method!r} model: "
                             f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    return load_model_dir(path, model)


def load_at_scale(model_dir: str | Path, method: str, build: Callable[[dict[str, Any]], nn.Module], scale: int,
                  device: torch.device) -> nn.Module:
    """`load_trained`, on `device`, refusing weights trained for another upscale factor (the net's
    `config.scale`)."""
    net = load_trained(model_dir, method, build).to(device)
    if net.config.scale != scale:
        raise SplitleakError(f"the weights {model_dir} are for scale {net.config.scale}, not --scale {scale}")
    return net


def model_config(method: str, arch: str, net: Any, spec: TrainSpec, model: nn.Module, log: TrainLog,
                 degradation: Any, init: str, **extra: Any) -> dict[str, Any]:
    """What config.json records for a trained model: method, net (a dataclass), parameters, the
    degradation (a dataclass), the training spec and losses, plus `extra`."""
    return {"method": method, "arch": arch, "net": asdict(net), "scale": spec.scale, **extra,
            "parameters": sum(p.numel() for p in model.parameters()), "degradation": asdict(degradation),
            "training": {**spec.describe(), **log.summary(), "loss": "L1", "optimizer": "Adam, cosine decay",
                         "init": init}}
