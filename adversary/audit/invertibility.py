"""Local invertibility: the spectrum of the map's Jacobian at sample inputs, from Jacobian products only.

A randomised SVD (Halko, Martinsson & Tropp 2011, algorithms 4.4 and 5.1): Y = (J J^T)^q J Omega for a
Gaussian Omega of k + p columns (jvp, then vjp / jvp pairs, re-orthonormalised between them), Q = orth(Y),
B = Q^T J (vjps), whose singular values estimate J's top k. No dense Jacobian is formed: at 224 px J has
150,528 columns. The first product J Omega also gives Hutchinson's estimate of ||J||_F^2 = E ||J w||^2,
so the stable rank ||J||_F^2 / s_1^2 covers the whole spectrum, not only the top k.

Reported per map: the top-k singular values, their entropy effective rank (Roy & Vetterli 2007:
exp of the entropy of s_i / sum s), the top-k condition number s_1 / s_k, the stable rank and its share of
the input dimension. For FedSGD on a bias-free chain (cnn6), R-GAP's per-layer rank report too.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

Matvec = Callable[[torch.Tensor], torch.Tensor]  # rows in -> rows out


@dataclass
class Spectrum:
    singular_values: np.ndarray  # top k, descending
    frobenius2: float  # Hutchinson's estimate of ||J||_F^2
    input_dim: int

    @property
    def effective_rank(self) -> float:
        s = self.singular_values[self.singular_values > 0]
        if len(s) == 0:
            return 0.0
        p = s / s.sum()
        return float(np.exp(-(p * np.log(p)).sum()))

    @property
    def condition(self) -> float:
        s = self.singular_values
        return float(s[0] / s[-1]) if len(s) and s[-1] > 0 else float("inf")

    @property
    def stable_rank(self) -> float:
        s1 = float(self.singular_values[0]) if len(self.singular_values) else 0.0
        return float(self.frobenius2 / s1 ** 2) if s1 > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {"top_singular_values": [float(v) for v in self.singular_values],
                "effective_rank": self.effective_rank, "condition": self.condition,
                "stable_rank": self.stable_rank, "stable_rank_share": self.stable_rank / self.input_dim}


def _orth(rows: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of the span of the rows (k, m), as rows."""
    q, _ = torch.linalg.qr(rows.reshape(len(rows), -1).double().T)
    return q.T.to(rows.dtype).reshape(rows.shape)


def randomized_spectrum(jvp: Matvec, vjp: Matvec, input_shape: tuple[int, ...], k: int, oversample: int = 8,
                        power: int = 1, seed: int = 0, device: torch.device | str = "cpu") -> Spectrum:
    """Top-k singular values of J from jvp (rows (l, *input_shape) -> (l, m)) and vjp ((l, m) -> (l, *input_shape))."""
    n = int(np.prod(input_shape))
    cols = min(k + oversample, n)
    gen = torch.Generator().manual_seed(seed)
    omega = torch.randn((cols, *input_shape), generator=gen).to(device)
    y = jvp(omega)
    frobenius2 = float(y.double().pow(2).sum() / cols)
    for _ in range(power):
        y = jvp(_orth(vjp(_orth(y))))
    q = _orth(y)
    b = vjp(q).reshape(len(q), -1).double()  # B^T's rows: (Q^T J) = (J^T Q)^T
    s = torch.linalg.svdvals(b).cpu().numpy()[:k]
    return Spectrum(s, frobenius2, n)


def rgap_ranks(module: torch.nn.Module, input_shape: tuple[int, ...], seed: int = 0) -> list[dict[str, Any]] | None:
    """R-GAP's per-layer rank report where the trained module is a bias-free chain R-GAP reads; else None."""
    from adversary.gradient.rgap import chain, rank_report
    from splitleak.errors import SplitleakError

    try:
        ops = chain(module, input_shape)
    except SplitleakError:
        return None
    if any(getattr(op.module, "bias", None) is not None for op in ops):
        return None
    return rank_report(module, input_shape, seed)
