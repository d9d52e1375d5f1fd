"""Attack chains for the video-leakage benchmark: gradients -> features (fvi) -> frames (dmb).

A fedsgd stream of resnet18 cut at a split point (frozen head, the rest trains) is recorded through a
real loopback cloud and edge on held-out frames of the bundled clip (benchmarks.footage: frames the
prior never saw); `splitleak attack --chain fvi,dmb` inverts its gradients to features and the
features to frames. The upper bound is dmb, with the same options, on the TRUE features: an
infer-mode recording of the same frames through the same head.

    rows(quick=True)   layer3 at 64 px, 2 frames, tiny budgets (a few minutes on a CPU)
    rows(quick=False)  layer2 and layer3 at 64 px, 4 frames; fvi 2,000 Adam steps, dmb 300 steps
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import footage
from splitleak.video import save_png

SIZE = 64


@dataclass(frozen=True)
class Budget:
    splits: tuple[str, ...]
    frames: int
    fvi: dict[str, Any]
    dmb: dict[str, Any]
    prior_steps: tuple[int, int, int]  # UNet, VAE, decoder-only steps of the cached prior


def budget(quick: bool) -> Budget:
    if quick:
        return Budget(("layer3",), 2, {"optimizer": "lbfgs", "iterations": 5},
                      {"iterations": 10, "sampler.steps": 5, "start.restarts": 1, "pixel.steps": 20}, (150, 60, 20))
    return Budget(("layer2", "layer3"), 4, {"iterations": 2000},
                  {"iterations": 300, "sampler.steps": 10, "start.restarts": 2, "pixel.steps": 200}, (3000, 1500, 2000))


def record(folder: Path, source: Path, split: str, mode: str, frames: int) -> Path:
    """What the cloud's recorder writes for resnet18/`split` in `mode` on `source`'s frames (loopback gRPC)."""
    from cloud.server import CloudConfig, CloudServer
    from edge.session import EdgeConfig
    from edge.streamer import EdgeStreamer
    from edge.trainer import EdgeTrainer

    rec = folder / f"rec-{split}-{mode}"
    server = CloudServer(CloudConfig(listen="127.0.0.1:0", record=str(rec)))
    try:
        config = EdgeConfig(cloud=f"127.0.0.1:{server.port}", source=str(source), model="resnet18", size=SIZE,
                            split=split, mode=mode, frames=frames, truth=str(folder / f"truth-{mode}"), progress=False)
        (EdgeStreamer if mode == "infer" else EdgeTrainer)(config).run()
    finally:
        server.stop(1)
    return rec


def held_out_folder(folder: Path, frames: int) -> Path:
    """The held-out frames as PNGs at their own size: the edge's source (it resizes as it would a camera)."""
    from splitleak.video import open_source

    seqs, _ = footage.held_out(frames, SIZE)
    src = folder / "source"
    src.mkdir(parents=True, exist_ok=True)
    with open_source(footage.CLIP) as clip:
        for f in clip:
            if f.index in seqs:
                save_png(src / f"{f.index:04d}.png", f.image.transpose(2, 0, 1) / 255.0)
    return src


def chain_row(folder: Path, split: str, b: Budget, prior: Path) -> dict[str, Any]:
    from adversary.runner.chain import ChainRun, run_chain

    source = held_out_folder(folder, b.frames)
    gradients = record(folder, source, split, "fedsgd", b.frames)
    features = record(folder, source, split, "infer", b.frames)
    dmb = [(f"dmb.{k}", str(v)) for k, v in b.dmb.items()]
    fvi = [(f"fvi.{k}", str(v)) for k, v in b.fvi.items()]
    truth = str(folder / "truth-fedsgd")
    chain = run_chain("fvi,dmb", ChainRun(str(gradients), str(folder / f"chain-{split}"), truth=truth,
                                          prior=str(prior), progress=False), fvi + dmb)
    bound = run_chain("dmb", ChainRun(str(features), str(folder / f"bound-{split}"), truth=truth, prior=str(prior),
                                      progress=False), dmb)
    inverted, frames = chain["stages"]
    seconds = sum(s["scores"].get("seconds") or 0.0 for s in chain["stages"])
    return {"setting": "frame", "model": f"resnet18/{split}@{SIZE}", "attack": None, "chain": "fvi,dmb",
            "local_steps": 1, "batch": 1, "feature_cos": inverted["scores"]["mean_feature_cosine"],
            "feature_rel_error": inverted["scores"]["mean_feature_rel_error"],
            "psnr": frames["scores"]["mean_psnr"], "ssim": frames["scores"]["mean_ssim"],
            "seconds_per_frame": seconds / b.frames, "upper_bound_psnr": bound["stages"][0]["scores"]["mean_psnr"],
            "upper_bound_ssim": bound["stages"][0]["scores"]["mean_ssim"], "frames": b.frames}


def rows(quick: bool, cache: str = "runs/feature_inversion_cache") -> list[dict[str, Any]]:
    """One row per split point: the chain's feature cosine and PSNR beside dmb's on the true features."""
    b = budget(quick)
    unet, vae, decoder = b.prior_steps
    prior, _ = footage.cached_prior(Path(cache), SIZE, unet, vae, 8, decoder_steps=decoder)
    with tempfile.TemporaryDirectory(prefix="chains-") as work:
        return [chain_row(Path(work) / split, split, b, prior) for split in b.splits]
