"""Attack chains for the video-leakage benchmark: gradients -> features (fvi) -> frames (dmb).

The video paper's feature setting: a classifier (its Table II `moderate`: FC-sigmoid 256, FC-sigmoid
128, FC) trained by fedsgd over resnet18's frozen layer2 / layer3 features. The stream is recorded
through a real loopback cloud and edge (`--classifier moderate`) on held-out frames of the bundled
clip (benchmarks.footage: frames the prior never saw); `splitleak attack --chain fvi,dmb` inverts its
gradients to features and the features to frames. The upper bound is dmb, with the same options, on
the TRUE features: an infer-mode recording of the same frames through the same head. The full run
adds resnet18's own tail (layer4 + fc trained over frozen layer3) as the classifier.

    rows(quick=True)   layer2 and layer3, 2 frames, fvi L-BFGS 20, tiny dmb (a few minutes on a CPU)
    rows(quick=False)  4 frames, fvi at its defaults, dmb 50 steps (docs/chains.md's table), and the own-tail row
Both end with the clip-feature chain's row (clip_chain.py: fvi,do through clipnet's frozen 3D head).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import footage
from benchmarks.common import record_in_process
from splitleak.video import save_png

SIZE = 64
CLASSIFIER = "moderate"  # the video paper's classifier with non-linearities (Table II)
FVI_MODERATE = {"optimizer": "lbfgs", "iterations": 20}  # --quick: cosine 0.9995 at layer2 in ~3 s/frame
# the full run: fvi at the CLI's defaults (Adam, up to 20,000 iterations, ending below 1e-12), as a user runs
# it: cosine 1.0000 (relative error 5e-7) at layer2 and layer3, measured at ~140 / ~35 s per frame
FVI_DEFAULTS: dict[str, Any] = {}
FVI_OWN_TAIL = {"optimizer": "lbfgs", "iterations": 5}  # layer4 + fc: 5 iterations reach cosine 0.999 at layer3


@dataclass(frozen=True)
class Case:
    """One row: the split point, the classifier over its features (None: resnet18's own tail), fvi's options."""

    split: str
    classifier: str | None
    fvi: dict[str, Any]
    frames: int | None = None  # fewer frames than the budget's (a slow tail)


@dataclass(frozen=True)
class Budget:
    cases: tuple[Case, ...]
    frames: int
    dmb: dict[str, Any]
    prior_steps: tuple[int, int, int]  # UNet, VAE, decoder-only steps of the cached prior


def budget(quick: bool) -> Budget:
    fvi = FVI_MODERATE if quick else FVI_DEFAULTS
    moderate = (Case("layer2", CLASSIFIER, fvi), Case("layer3", CLASSIFIER, fvi))
    if quick:
        return Budget(moderate, 2, {"iterations": 10, "sampler.steps": 5, "start.restarts": 1, "pixel.steps": 20},
                      (150, 60, 20))
    return Budget(moderate + (Case("layer3", None, FVI_OWN_TAIL, frames=1),), 4,
                  {"iterations": 50, "sampler.steps": 10, "start.restarts": 1, "pixel.steps": 100}, (3000, 1500, 2000))


def record(folder: Path, source: Path, case: Case, mode: str, frames: int) -> Path:
    """What the cloud's recorder writes for resnet18/`split` (+ classifier) in `mode` on `source`'s frames."""
    rec = folder / f"rec-{mode}"
    record_in_process(rec, source=str(source), model="resnet18", size=SIZE, split=case.split, mode=mode,
                      frames=frames, truth=str(folder / f"truth-{mode}"), classifier=case.classifier)
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


def chain_row(folder: Path, case: Case, b: Budget, prior: Path) -> dict[str, Any]:
    from adversary.runner.chain import ChainRun, run_chain

    frames = case.frames or b.frames
    source = held_out_folder(folder, frames)
    gradients = record(folder, source, case, "fedsgd", frames)
    features = record(folder, source, case, "infer", frames)
    dmb = [(f"dmb.{k}", str(v)) for k, v in b.dmb.items()]
    fvi = [(f"fvi.{k}", str(v)) for k, v in case.fvi.items()]
    truth = str(folder / "truth-fedsgd")
    chain = run_chain("fvi,dmb", ChainRun(str(gradients), str(folder / "chain"), truth=truth, prior=str(prior),
                                          progress=False), fvi + dmb)
    bound = run_chain("dmb", ChainRun(str(features), str(folder / "bound"), truth=truth, prior=str(prior),
                                      progress=False), dmb)
    inverted, recovered = chain["stages"]
    seconds = sum(s["scores"].get("seconds") or 0.0 for s in chain["stages"])
    tail = case.classifier or "own tail"
    return {"setting": "frame", "model": f"resnet18/{case.split}+{tail}@{SIZE}", "attack": None,
            "chain": "fvi,dmb", "local_steps": 1, "batch": 1, "feature_cos": inverted["scores"]["mean_feature_cosine"],
            "feature_rel_error": inverted["scores"]["mean_feature_rel_error"],
            "psnr": recovered["scores"]["mean_psnr"], "ssim": recovered["scores"]["mean_ssim"],
            "seconds_per_frame": seconds / frames, "upper_bound_psnr": bound["stages"][0]["scores"]["mean_psnr"],
            "upper_bound_ssim": bound["stages"][0]["scores"]["mean_ssim"], "frames": frames,
            "fvi": case.fvi, "dmb": b.dmb}


def rows(quick: bool, cache: str = "runs/feature_inversion_cache", prior: str | None = None) -> list[dict[str, Any]]:
    """One row per case: the chain's feature cosine and PSNR beside dmb's on the true features.
    `prior`: a train-prior folder to invert with instead of the cached one (trained here when missing)."""
    b = budget(quick)
    if prior is None:
        unet, vae, decoder = b.prior_steps
        prior = str(footage.cached_prior(Path(cache), SIZE, unet, vae, 8, decoder_steps=decoder)[0])
    from benchmarks.video_leakage import clip_chain

    with tempfile.TemporaryDirectory(prefix="chains-") as work:
        found = [chain_row(Path(work) / f"{c.split}-{c.classifier or 'own'}", c, b, Path(prior)) for c in b.cases]
        return found + [clip_chain.row(quick, Path(work) / "clipnet")]  # the clip-feature chain: fvi, then do
