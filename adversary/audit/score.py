"""One exposure score per (model, split or mode), higher where the input is more exposed.

Each part is mapped to [0, 1] by a fixed range chosen before any benchmark ran, and the score is their
plain mean (equal weights, nothing fitted):
    distance       = (max(0, rho) + (1 - spread_ratio)) / 2
                     rho: Spearman between input and feature distances; spread_ratio: the spread of input
                     distances at a given feature distance over their overall spread
    invertibility  = log(1 + stable_rank) / log(1 + input_dim)
                     the share of the input's dimensions the Jacobian resolves, on a log scale (1: an
                     isometry-like map, 0: a rank-one one)
    attack         = clip((psnr - 10) / (40 - 10), 0, 1)
                     the short attack's PSNR between 10 dB (a flat guess) and 40 dB (visually exact)
    score          = (distance + invertibility + attack) / 3
"""
from __future__ import annotations

import math

PSNR_FLOOR, PSNR_CEIL = 10.0, 40.0


def distance_part(spearman: float, spread_ratio: float) -> float:
    return (max(0.0, spearman) + (1.0 - min(1.0, max(0.0, spread_ratio)))) / 2


def invertibility_part(stable_rank: float, input_dim: int) -> float:
    return min(1.0, math.log1p(max(0.0, stable_rank)) / math.log1p(input_dim))


def attack_part(psnr: float) -> float:
    return min(1.0, max(0.0, (psnr - PSNR_FLOOR) / (PSNR_CEIL - PSNR_FLOOR)))


def exposure(spearman: float, spread_ratio: float, stable_rank: float, input_dim: int,
             psnr: float) -> dict[str, float]:
    """The three parts and their mean, the score."""
    parts = {"distance_part": distance_part(spearman, spread_ratio),
             "invertibility_part": invertibility_part(stable_rank, input_dim),
             "attack_part": attack_part(psnr)}
    return {"score": sum(parts.values()) / len(parts), **parts}
