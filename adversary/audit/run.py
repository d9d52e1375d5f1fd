"""Run the audit over (model, split points | fedsgd): frames once, then per configuration the distance
relation, the Jacobian spectrum, the short attack and the score; outputs written by `report`."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from adversary.audit import distance, invertibility
from adversary.audit.frames import load_frames
from adversary.audit.probe import GRADIENTS, probe_for
from adversary.audit.report import write_outputs
from adversary.audit.score import exposure
from adversary.audit.short_attack import Budget, run_short_attack
from splitleak import learning
from splitleak.errors import SplitleakError
from splitleak.models import NONE, build_split_model, get_spec, split_points

FEDSGD = "fedsgd"
ALL = "all"


@dataclass
class AuditConfig:
    """What to audit and how much effort each measure gets; written into audit.json's config."""

    model: str
    split: str | None = None  # a split point or "all"; None with mode "fedsgd"
    mode: str | None = None  # "fedsgd": the gradients of the whole model trained on raw frames
    source: str = "sample:bikes"
    weights: str = "seed:0"
    size: int | None = None  # default: the model's
    frames: int = 12
    rank: int = 16  # top-k singular values of the Jacobian
    samples: int = 2  # sample inputs the spectrum is taken at
    power: int = 1
    budget: Budget = field(default_factory=Budget)
    seed: int = 0
    device: str = "cpu"

    def targets(self) -> list[str]:
        """The split points to audit (`none` for fedsgd); SplitleakError on a bad model, split or mode."""
        spec = get_spec(self.model)
        if (self.mode is None) == (self.split is None):
            raise SplitleakError("give either --split POINT|all or --mode fedsgd")
        if self.mode is not None:
            if self.mode != FEDSGD:
                raise SplitleakError(f"unknown mode {self.mode!r}; the audit takes: {FEDSGD}")
            return [NONE]
        points = split_points(spec.name)[1:]
        if self.split == ALL:
            if not points:
                raise SplitleakError(f"{spec.name} has no split points; audit it with --mode fedsgd")
            return points
        if self.split not in points:
            raise SplitleakError(f"unknown split point {self.split!r} for {spec.name}; choose one of: "
                                 f"{', '.join(points + [ALL])}")
        return [self.split]

    def frame_size(self) -> int:
        spec = get_spec(self.model)
        size = spec.default_size if self.size is None else self.size
        spec.check_size(size)
        if spec.input_kind != "image":
            raise SplitleakError(f"the audit takes image models; {spec.name} takes clips")
        return size


def audit_one(cfg: AuditConfig, split: str, frames: torch.Tensor, out: Path | None = None) -> dict[str, Any]:
    """One row: the configuration's parts, score and seconds (scatter plot into `out` if given)."""
    start = time.perf_counter()
    model = build_split_model(cfg.model, split, size=int(frames.shape[-1]), weights=cfg.weights, device=cfg.device)
    for p in model.network.parameters():
        p.requires_grad_(False)
    probe = probe_for(model)
    if probe.kind == GRADIENTS:
        for p in learning.trained_module(model).parameters():
            p.requires_grad_(True)
    frames = frames.to(cfg.device)
    row: dict[str, Any] = {"model": cfg.model}
    row.update({"mode": FEDSGD} if split == NONE else {"split": split})
    timings: dict[str, float] = {}

    t = time.perf_counter()
    rel = distance.measure(probe.values, frames, cfg.seed)
    timings["distance"] = time.perf_counter() - t
    if out is not None:
        name = split if split != NONE else FEDSGD
        distance.scatter(rel, out / f"distance_{cfg.model}_{name}.png", f"{cfg.model}/{name}")

    t = time.perf_counter()
    spectra = [_spectrum(probe, frames[i], cfg) for i in _sample_indices(len(frames), cfg.samples)]
    timings["invertibility"] = time.perf_counter() - t
    spec = {k: float(np.mean([s.summary()[k] for s in spectra]))
            for k in ("effective_rank", "condition", "stable_rank", "stable_rank_share")}
    rgap = invertibility.rgap_ranks(learning.trained_module(model), probe.input_shape, cfg.seed) \
        if probe.kind == GRADIENTS else None

    attack = run_short_attack(probe, frames, cfg.budget, cfg.seed)
    timings["short_attack"] = attack["seconds"]

    row.update(exposure(rel.spearman, rel.spread_ratio, spec["stable_rank"], probe.input_dim, attack["psnr"]))
    row.update(rel.summary())
    row.update(spec)
    row["top_singular_values"] = spectra[0].summary()["top_singular_values"]
    row.update({"attack_psnr": attack["psnr"], "attack": attack["attack"], "attack_iterations": attack["iterations"],
                "attack_frames": len(attack["psnr_frames"])})
    if rgap is not None:
        row["rgap_rank_report"] = rgap
        row["rgap_unique_layers"] = f"{sum(r['unique'] for r in rgap)}/{len(rgap)}"
    row["part_seconds"] = timings
    row["seconds"] = time.perf_counter() - start
    return row


def _sample_indices(n: int, samples: int) -> list[int]:
    return sorted({round(i * (n - 1) / max(1, samples - 1)) for i in range(max(1, samples))}) if samples > 1 else [0]


def _spectrum(probe: Any, x: torch.Tensor, cfg: AuditConfig) -> invertibility.Spectrum:
    return invertibility.randomized_spectrum(lambda v: probe.jvp(x, v), lambda u: probe.vjp(x, u),
                                             probe.input_shape, cfg.rank, power=cfg.power, seed=cfg.seed,
                                             device=x.device)


def run_audit(cfg: AuditConfig, out: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Audit every target of `cfg`; write audit.json / .csv / .png (and scatter plots) into `out` if given."""
    targets = cfg.targets()
    size = cfg.frame_size()
    frames = load_frames(cfg.source, cfg.frames, size)
    folder = Path(out) if out is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    rows = [audit_one(cfg, split, frames, folder)
            for split in tqdm(targets, desc=f"audit {cfg.model}", unit="config", disable=not progress)]
    config = {**asdict(cfg), "size": size, "targets": targets, "score": "see docs/audit.md"}
    if folder is not None:
        write_outputs(folder, rows, config)
    return {"rows": rows, "config": config}
