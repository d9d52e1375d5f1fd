"""The enhancement benchmark's Low frames: clips streamed through the services, then DLG on the recordings.

Each clip's window is streamed by a real edge (fedsgd, lenet, 32x32, batch 1) to a recording cloud
over loopback. The recordings are read back into batch-1 GradientCases (each update against its
round's recorded state, as `splitleak attack` replays them) and ALL frames of all clips go through
the batched engine's `reconstruct_many` in one call, as benchmarks/gradient.py drives it: one
L-BFGS run per frame, vectorised, instead of one engine call per update. `stop_loss=0` polishes
every frame to the end of its budget (the paper's 1e-5 stop rule costs ~7 dB of PSNR).
Results are cached under runs/enhance-bench/ by their settings.
"""
from __future__ import annotations

import copy
import hashlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

import adversary.gradient  # noqa: F401  (registers the gradient attacks)
from adversary.gradient.base import GradientCase
from adversary.registry import get_attack
from adversary.runner.updates import Models, plan_recording, wire_gradients, wire_labels
from benchmarks.common import record_training
from splitleak.recording import RecordingReader
from splitleak.video import to_model_input

LOW = 32
HIGH = 128  # the edge streams the 128x128 frames the enhancement is scored against (High)
STREAM = "enh"
ATTACK = "dlg-batched"


@dataclass(frozen=True)
class Recording:
    """How the edge trains while it is recorded. The paper inverts each frame's gradient at an untrained
    LeNet (DLG's setting); at the edge's defaults (one label, lr 0.01) the model saturates after round 0
    and its gradients shrink ~250x (docs/gradient-inversion.md), so DLG recovers little. `lr` small keeps
    every update at a model that has barely moved from its start; `labels` "cycle" gives frame i class
    i mod 10 (an edge --labels CSV) instead of one class for the whole window."""

    lr: float = 0.01
    labels: str = "one"  # "one" (clip index as the label) or "cycle"


def cache_key(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def high_frame(image: np.ndarray) -> np.ndarray:
    """The clip frame at 128x128 (uint8 RGB), as High is made. Streaming it rather than the original keeps
    Low on High's pixel grid: the edge's own crop of a 640x272 original at 32 px is offset by ~half a
    low-res pixel from the 128 px crop (25 dB between its 32 px input and High pooled 4x4)."""
    return np.rint(to_model_input(image, HIGH).transpose(1, 2, 0) * 255).astype(np.uint8)


def labels_csv(frames: int, path: Path) -> str:
    """An edge --labels file giving frame i the class i mod 10 (one-frame segments)."""
    path.write_text("".join(f"{i},{i + 1},{i % 10}\n" for i in range(frames)))
    return str(path)


def record(images: list[np.ndarray], window: list[int], label: int, work: Path, rec: Recording) -> Path:
    """Stream the window's frames (fedsgd, lenet, 32x32) to a recording cloud; the recording's folder."""
    folder = work / "source"
    folder.mkdir(parents=True)
    for i, idx in enumerate(window):  # lossless PNGs of High; the edge's area resize makes Low from them
        cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(high_frame(images[idx]), cv2.COLOR_RGB2BGR))
    labels = labels_csv(len(window), work / "labels.csv") if rec.labels == "cycle" else None
    return record_training(work, source=str(folder), model="lenet", split="none", size=LOW, mode="fedsgd",
                           frames=len(window), label=label, lr=rec.lr, stream_id=STREAM, labels=labels)[0]


def recorded_cases(recording: Path, seed: int = 0) -> list[GradientCase]:
    """One batch-1 case per recorded frame, in sequence order, each with its round's weights."""
    plan = plan_recording(str(recording), None)
    models = Models("cpu", None)
    wanted = {u.index: u for u in plan.updates}
    states, cases = {}, []
    for item in RecordingReader(str(recording)):  # states are recorded before their round's updates
        if item.kind == "state":
            states[item.index] = item
        update = wanted.get(item.index)
        if update is None:
            continue
        if update.batch != 1:
            raise SystemExit(f"expected batch-1 updates, got batch {update.batch}")
        state = plan.state_of(update)
        model = models.model(update.head)
        module = copy.deepcopy(models.module(update, states.get(state) if state is not None else None))
        cases.append((update.seq, GradientCase(module, wire_gradients(update, module, item), 1,
                                               tuple(model.input_shape), model.num_classes,
                                               wire_labels(update, item, model.num_classes),
                                               seed=seed + update.index)))
    return [c for _, c in sorted(cases, key=lambda p: p[0])]


def invert(cases: list[GradientCase], iterations: int, restarts: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """All cases through the batched engine at once: (recovered frames (N, 3, 32, 32), stats)."""
    attack = get_attack(ATTACK)(iterations=iterations, restarts=restarts, stop_loss=0.0, progress=True)
    start = time.perf_counter()
    results = attack.reconstruct_many(cases)
    seconds = time.perf_counter() - start
    loss = torch.cat([r.loss for r in results])
    stats = {"attack": ATTACK, "iterations": iterations, "restarts": restarts, "stop_loss": 0.0,
             "frames": len(cases), "seconds": seconds, "seconds_per_frame": seconds / len(cases),
             "success_rate": float(np.mean([bool(r.success.all()) for r in results])),
             "gradient_loss_median": float(loss.median()),
             "gradient_norm": [round(float(torch.cat([g.flatten() for g in c.gradients.values()]).norm()), 4)
                               for c in cases]}
    return torch.cat([r.inputs.detach().float().cpu() for r in results]), stats


def psnr32(recovered: torch.Tensor, images: list[np.ndarray], window: list[int]) -> list[float]:
    """PSNR (dB, float on [0, 1]) of each recovered frame against the edge's 32x32 input of it."""
    truth = torch.from_numpy(np.stack([to_model_input(high_frame(images[i]), LOW) for i in window]))
    mse = ((recovered.clamp(0, 1) - truth) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return (10 * torch.log10(1 / mse)).tolist()


def dlg_frames(clips: dict[str, tuple[list[np.ndarray], list[int]]], iterations: int, restarts: int,
               cache: Path, rec: Recording = Recording()) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """clip -> its window's DLG-recovered frames (N, 3, 32, 32) in window order, and the run's stats;
    recorded and inverted once per settings (cache/dlg-KEY.safetensors + .json)."""
    from safetensors.torch import load_file, save_file

    settings = {"attack": ATTACK, "iterations": iterations, "restarts": restarts, "stop_loss": 0.0,
                "model": "lenet", "size": LOW, "source_size": HIGH, "windows": {c: w for c, (_, w) in clips.items()},
                "recording": asdict(rec)}
    path = cache / f"dlg-{cache_key(settings)}.safetensors"
    if path.is_file() and path.with_suffix(".json").is_file():
        return load_file(str(path)), json.loads(path.with_suffix(".json").read_text())
    cases, owner = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for label, (clip, (images, window)) in enumerate(clips.items()):
            found = recorded_cases(record(images, window, label, Path(tmp) / clip, rec), seed=1000 * label)
            if len(found) != len(window):
                raise SystemExit(f"{clip}: the recording holds {len(found)} updates for {len(window)} frames")
            cases += found
            owner += [clip] * len(found)
    frames, stats = invert(cases, iterations, restarts)
    out = {c: frames[[i for i, o in enumerate(owner) if o == c]].contiguous() for c in clips}
    psnr = {c: psnr32(out[c], images, window) for c, (images, window) in clips.items()}
    stats["psnr32"] = {c: {"mean": float(np.mean(v)), "min": float(np.min(v)), "frames": v} for c, v in psnr.items()}
    stats["psnr32_mean"] = float(np.mean([x for v in psnr.values() for x in v]))
    cache.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path))
    path.with_suffix(".json").write_text(json.dumps({**settings, **stats}))
    return out, {**settings, **stats}
