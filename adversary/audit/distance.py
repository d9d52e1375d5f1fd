"""Distance relation: how tightly the distance between two inputs is fixed by the distance between
their features (gradients), over pairs of controlled similarity.

Pairs (by kind): a frame and itself plus Gaussian noise of several magnitudes ("perturbed"), neighbouring
frames of the clip (i, i+1) and (i, i+2) ("neighbour"), frames half the clip apart ("far"), a frame and a
uniform-noise image and two noise images ("noise"). Distances are RMS differences, the feature one over
the RMS of all the pairs' features (scale-free). Reported: Spearman's rho between the two, a least-squares
line log10 d_x = a + b log10 d_f with its R^2, and the spread of log10 d_x at a given feature distance
(the standard deviation within quantile bins of d_f, pooled) against its overall spread.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

EPSILONS = (0.003, 0.01, 0.03, 0.1)  # std of the Gaussian perturbations, in [0, 1] pixel units
BINS = 6
TINY = 1e-12


@dataclass
class Pairs:
    """Inputs (N, ...) and index pairs into them, each with its kind."""

    inputs: torch.Tensor
    pairs: list[tuple[int, int]] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)


def make_pairs(frames: torch.Tensor, seed: int = 0, perturbed: int = 4, noise: int = 4) -> Pairs:
    """The pairs of controlled similarity over `frames` (n >= 4 consecutive frames of a clip)."""
    gen = torch.Generator().manual_seed(seed)
    n = len(frames)
    extra: list[torch.Tensor] = []
    out = Pairs(frames)

    def add(x: torch.Tensor) -> int:
        extra.append(x)
        return n + len(extra) - 1

    for i in range(min(perturbed, n)):
        for eps in EPSILONS:
            noisy = (frames[i] + eps * torch.randn(frames[i].shape, generator=gen)).clamp(0, 1)
            out.pairs.append((i, add(noisy)))
            out.kinds.append("perturbed")
    for step in (1, 2):
        for i in range(n - step):
            out.pairs.append((i, i + step))
            out.kinds.append("neighbour")
    for i in range(n - n // 2):
        out.pairs.append((i, i + n // 2))
        out.kinds.append("far")
    for i in range(min(noise, n)):
        a = add(torch.rand(frames[i].shape, generator=gen))
        out.pairs.append((i, a))
        out.kinds.append("noise")
        if i % 2:
            out.pairs.append((a - 1, a))
            out.kinds.append("noise")
    out.inputs = torch.cat([frames, torch.stack(extra).to(frames.dtype)]) if extra else frames
    return out


@dataclass
class DistanceRelation:
    """Per pair: input and feature distances and kind; the relation's summary figures."""

    input_distance: np.ndarray
    feature_distance: np.ndarray
    kinds: list[str]
    spearman: float
    slope: float
    intercept: float
    r2: float
    spread: float  # pooled std of log10 d_x within bins of d_f
    spread_all: float  # std of log10 d_x over every pair

    @property
    def spread_ratio(self) -> float:
        """spread / spread_all: 0 = input distance fixed by feature distance, 1 = not narrowed at all."""
        return float(min(1.0, self.spread / max(self.spread_all, TINY)))

    def summary(self) -> dict[str, float]:
        return {"spearman": self.spearman, "slope": self.slope, "intercept": self.intercept, "r2": self.r2,
                "spread": self.spread, "spread_all": self.spread_all, "spread_ratio": self.spread_ratio,
                "pairs": len(self.kinds)}


def rms_distances(vectors: torch.Tensor, pairs: list[tuple[int, int]]) -> np.ndarray:
    """RMS difference of each pair of rows of (N, m) vectors."""
    flat = vectors.reshape(len(vectors), -1).double()
    a, b = (torch.tensor(ix) for ix in zip(*pairs))
    return (flat[a] - flat[b]).pow(2).mean(1).sqrt().cpu().numpy()


def relation(input_d: np.ndarray, feature_d: np.ndarray, kinds: list[str], bins: int = BINS) -> DistanceRelation:
    """Fit and summarise log10 input distance against log10 feature distance."""
    lx, lf = np.log10(np.maximum(input_d, TINY)), np.log10(np.maximum(feature_d, TINY))
    rho = float(spearmanr(input_d, feature_d).statistic) if np.ptp(feature_d) > 0 else 0.0
    slope, intercept = np.polyfit(lf, lx, 1) if np.ptp(lf) > 0 else (0.0, float(lx.mean()))
    resid = lx - (slope * lf + intercept)
    total = float(((lx - lx.mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / total if total > 0 else 0.0
    return DistanceRelation(input_d, feature_d, kinds, rho if np.isfinite(rho) else 0.0, float(slope),
                            float(intercept), r2, binned_spread(lf, lx, bins), float(lx.std()))


def binned_spread(lf: np.ndarray, lx: np.ndarray, bins: int) -> float:
    """Pooled within-bin std of lx over `bins` quantile bins of lf (the spread at a given feature distance);
    equal feature distances share a bin, so a map that forgets its input narrows nothing."""
    edges = np.unique(np.quantile(lf, np.linspace(0, 1, bins + 1)[1:-1]))
    idx = np.digitize(lf, edges, right=True)
    groups = [np.flatnonzero(idx == b) for b in np.unique(idx)]
    groups = [g for g in groups if len(g) > 1]
    if not groups:
        return 0.0
    within = sum(float(((lx[g] - lx[g].mean()) ** 2).sum()) for g in groups)
    return float(np.sqrt(within / sum(len(g) for g in groups)))


def measure(vectors: Callable[[torch.Tensor], torch.Tensor], frames: torch.Tensor, seed: int = 0) -> DistanceRelation:
    """The distance relation of the map `vectors` ((N, ...) inputs -> (N, m)) over the pairs of `frames`."""
    pairs = make_pairs(frames, seed)
    feats = vectors(pairs.inputs)
    scale = float(feats.double().pow(2).mean().sqrt()) or 1.0
    input_d = rms_distances(pairs.inputs, pairs.pairs)
    feature_d = rms_distances(feats, pairs.pairs) / scale
    return relation(input_d, feature_d, pairs.kinds)


def scatter(rel: DistanceRelation, path: Path, title: str) -> None:
    """Log-log scatter of input vs feature distance, one colour per pair kind, and the fitted line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    kinds = np.array(rel.kinds)
    for kind in dict.fromkeys(rel.kinds):
        sel = kinds == kind
        ax.scatter(rel.feature_distance[sel], rel.input_distance[sel], s=12, label=kind)
    f = np.logspace(np.log10(max(rel.feature_distance.min(), TINY)), np.log10(max(rel.feature_distance.max(), TINY)))
    ax.plot(f, 10 ** (rel.intercept + rel.slope * np.log10(f)), "k--", lw=1, label="fit")
    ax.set(xscale="log", yscale="log", xlabel="feature distance (relative RMS)", ylabel="input distance (RMS)",
           title=f"{title}: rho={rel.spearman:.2f}, spread={rel.spread:.2f}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
