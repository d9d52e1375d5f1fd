"""The clip-feature chain measured: `splitleak attack --chain fvi,do` on clipnet's fedsgd gradient of one
clip of held-out frames of the bundled clip (benchmarks.footage: frames 200..219 of sample:bikes, T = 20,
clipnet's clip length), recorded through a real loopback cloud and edge at 32 px, split `pool`.

    python -m benchmarks.video_leakage.clip_chain [--fvi-fast] [--do-iterations N]

fvi and do run at the CLI's defaults unless told (`--fvi-fast`: L-BFGS, 50 iterations, relative match).
Prints the chain's feature cosine, do's mean PSNR / SSIM (at 128 px as chain.json scores frames, and at
the truth's 32 px), and a uniform gray clip's PSNR at 32 px beside it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from adversary.metrics import psnr
from benchmarks import footage
from benchmarks.common import record_in_process
from benchmarks.video_leakage.chains import held_out_folder
from splitleak.models import get_spec
from splitleak.video import load_png

SIZE, SPLIT = 32, "pool"
FVI_FAST = [("fvi.optimizer", "lbfgs"), ("fvi.iterations", "50"), ("fvi.match.relative", "true")]


def record(folder: Path, frames: int) -> tuple[Path, Path]:
    """clipnet/pool fedsgd on the held-out frames through a real loopback cloud: (recording, truth)."""
    source = held_out_folder(folder, frames)
    record_in_process(folder / "rec", source=str(source), model="clipnet", size=SIZE, split=SPLIT, mode="fedsgd",
                      frames=frames, label=0, truth=str(folder / "truth"))
    return folder / "rec", folder / "truth"


def gray_psnr(truth: Path) -> float:
    """A uniform gray clip's mean PSNR against the truth frames."""
    frames = [load_png(p) for p in sorted(truth.glob("*.png"))]
    return float(np.mean([psnr(np.full_like(x, 0.5), x) for x in frames]))


def measure(work: Path, options: list[tuple[str, str]]) -> dict:
    """Record one clip, run `fvi,do` on it with `options`: the chain's scores and a gray clip's PSNR."""
    from adversary.runner.chain import ChainRun, run_chain

    rec, truth = record(work, get_spec("clipnet").clip_len or 1)
    chain = run_chain("fvi,do", ChainRun(str(rec), str(work / "chain"), truth=str(truth), progress=False), options)
    fvi, do = (s["scores"] for s in chain["stages"])
    return {"fvi": fvi, "do": do, "gray_psnr": gray_psnr(truth)}


def row(quick: bool, work: Path) -> dict:
    """The video-leakage benchmark's row (benchmarks/video_leakage/chains.py collects it): the CLI's defaults,
    or with `quick` fvi L-BFGS 50 and do 100 iterations. `gray_psnr_native`: a uniform gray clip at 32 px."""
    options = FVI_FAST + [("do.iterations", "100")] if quick else []
    m = measure(work, options)
    fvi, do, frames = m["fvi"], m["do"], get_spec("clipnet").clip_len or 1
    seconds = (fvi.get("seconds") or 0.0) + (do.get("seconds") or 0.0)
    return {"setting": "clip-features", "model": f"clipnet/{SPLIT}@{SIZE}", "attack": None, "chain": "fvi,do",
            "local_steps": 1, "batch": 1, "feature_cos": fvi["mean_feature_cosine"],
            "feature_rel_error": fvi["mean_feature_rel_error"], "psnr": do["mean_psnr"], "ssim": do["mean_ssim"],
            "psnr_native": do["mean_psnr_native"], "gray_psnr_native": m["gray_psnr"],
            "seconds_per_frame": seconds / frames, "frames": frames, "options": dict(options)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fvi-fast", action="store_true", help="fvi L-BFGS 50 iterations, relative match")
    p.add_argument("--do-iterations", type=int, default=None, help="do's iterations (default: its own)")
    args = p.parse_args()
    torch.set_num_threads(1)  # a shared machine; quality, not time, is what this measures
    options = (FVI_FAST if args.fvi_fast else []) + \
        ([("do.iterations", str(args.do_iterations))] if args.do_iterations else [])
    with tempfile.TemporaryDirectory(prefix="clipchain-") as work:
        m = measure(Path(work), options)
        fvi, do = m["fvi"], m["do"]
        print(json.dumps({"frames": footage.held_out(get_spec("clipnet").clip_len or 1, SIZE)[0][::19],
                          "options": dict(options), "feature_cosine": fvi["mean_feature_cosine"],
                          "feature_rel_error": fvi["mean_feature_rel_error"], "fvi_seconds": fvi.get("seconds"),
                          "do_mean_psnr": do["mean_psnr"], "do_mean_ssim": do["mean_ssim"],
                          "do_mean_psnr_native": do["mean_psnr_native"], "do_mean_ssim_native": do["mean_ssim_native"],
                          "do_seconds": do.get("seconds"), "gray_psnr": m["gray_psnr"]}, indent=1))

if __name__ == "__main__":
    main()
