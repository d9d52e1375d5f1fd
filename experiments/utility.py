"""Utility beside privacy: what the defended, shaped stream still does for its owner.

Infer: top-1 agreement of the cloud's answers (the edge's summary keeps them per frame) with the
undefended model on an ideal link, run here on the very frames the edge captured (the same source,
frame count and seed, so the same float inputs); a captured frame the cloud never answered counts as
disagreement. Learning modes: the mean cosine of the sent update to the undefended one (the edge
measures it), 1.0 without a defence.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from experiments.spec import Cell


def utility_of(cell: Cell, folder: Path, stats: dict[str, Any]) -> dict[str, Any]:
    if cell.mode != "infer":
        cosine = (stats.get("defence") or {}).get("update_cosine", 1.0)
        return {"utility": cosine, "metric": "update_cosine"}
    reference = reference_top1(cell.source, cell.model, cell.split, cell.size, cell.frames, cell.seed % 2**31)
    if not reference:
        return {}
    served = {int(seq): c for seq, c in (stats.get("top1") or {}).items()}
    agree = sum(1 for seq, c in reference.items() if served.get(seq) == c)
    return {"utility": agree / len(reference), "metric": "top1_agreement"}


@functools.lru_cache(maxsize=16)
def reference_top1(source: str, model: str, split: str, size: int, frames: int, seed: int) -> dict[int, int]:
    """seq -> the undefended model's top-1 (image models; {} for clip models)."""
    import torch

    from splitleak.models import build_split_model
    from splitleak.video import open_source, to_model_input

    net = build_split_model(model, split, size=size)
    if net.input_kind != "image":
        return {}
    out = {}
    with open_source(source, frames=frames, seed=seed) as frames_in, torch.inference_mode():
        for frame in frames_in:
            x = torch.from_numpy(to_model_input(frame.image, net.size))[None]
            out[frame.index] = int(net.tail(net.head(x)).argmax(dim=1)[0])
    return out
