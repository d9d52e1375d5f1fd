"""Tiny timing probes that size the survey's budgets: seconds per attack iteration per model.

One "evaluation" is what every gradient attack repeats: the dummy batch's gradient with its graph
(create_graph) and the backward of the gradient distance to the dummy inputs. DLG / iDLG spend up to
`lbfgs.max_iter` (20) evaluations per L-BFGS step; IG one per Adam step.
`python -m benchmarks.survey.probe [--models a,b] [--batches 1,4] [--threads 1]`
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from splitleak.models import build_split_model

MODELS = ("lenet", "cnn6", "simple", "moderate", "resnet18", "resnet50", "mobilenet_v3_small", "vit_b_16")


def probe_size(model: str) -> int:
    """The survey's input size: 32 px for all (vit_b_16's 16 px patches make 32 px a 2x2 grid)."""
    return 32


def seconds_per_evaluation(model: str, batch: int, size: int | None = None, repeat: int = 2) -> dict[str, float]:
    """Best-of-`repeat` seconds of one second-order evaluation on a seeded `model` (split none)."""
    m = build_split_model(model, "none", size=size or probe_size(model), weights="seed:0")
    module = m.tail
    params = [p for p in module.parameters() if p.requires_grad]
    shape = (batch, *m.input_shape)
    labels = torch.arange(batch) % m.num_classes
    true = torch.autograd.grad(F.cross_entropy(module(torch.rand(shape)), labels), params)
    x = torch.rand(shape, requires_grad=True)
    best = float("inf")
    for _ in range(repeat + 1):  # the first is warm-up
        start = time.perf_counter()
        grads = torch.autograd.grad(F.cross_entropy(module(x), labels), params, create_graph=True)
        dist = sum(((g - t) ** 2).sum() for g, t in zip(grads, true))
        (dx,) = torch.autograd.grad(dist, x)
        best = min(best, time.perf_counter() - start)
    return {"model": model, "batch": batch, "size": size or probe_size(model), "seconds": best,
            "parameters": sum(p.numel() for p in params)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batches", default="1,4")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for model in args.models.split(","):
        for b in (int(v) for v in args.batches.split(",")):
            r = seconds_per_evaluation(model, b)
            print(f"{model:20s} batch {b}  {r['seconds'] * 1000:9.1f} ms/evaluation  {r['parameters']:>10,d} params",
                  flush=True)


if __name__ == "__main__":
    main()
