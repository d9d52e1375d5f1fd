"""Probe for the clip-feature chain (`fvi,do` with a 3D head; the chain itself: clip_chain.py): DO through
clipnet's frozen r3d_18 head on the TRUE features of held-out frames of the bundled clip, the chain's ceiling.

    python -m benchmarks.video_leakage.clip_do_probe [--size 32] [--steps 300] [--split pool|extract]

Prints the feature loss DO reaches and each frame's PSNR beside a uniform gray clip's.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio

from adversary.feature.do import descend_pixels
from adversary.losses import feature_loss
from benchmarks import footage
from splitleak.models import build_split_model


def probe(size: int, steps: int, split: str, seed: int = 0) -> dict:
    """DO (Adam lr 0.1, TV 0.01, cosine decay) from N(0, 0.5) logits against the clip's true features."""
    model = build_split_model("clipnet", split, size=size)
    for p in model.head.parameters():
        p.requires_grad_(False)
    seqs, frames = footage.held_out(model.clip_len, size)  # (T, 3, H, W) in [0, 1]
    clip = torch.from_numpy(frames).float().permute(1, 0, 2, 3)[None]  # (1, 3, T, H, W)
    with torch.no_grad():
        z = model.head(clip)
    mask = torch.ones_like(z, dtype=torch.bool)
    start = torch.randn(clip.shape, generator=torch.Generator().manual_seed(seed)) * 0.5
    began = time.perf_counter()
    x = torch.sigmoid(descend_pixels(start, model.head, z, mask, steps, 0.1, 0.01, 0.01))
    seconds = time.perf_counter() - began
    with torch.no_grad():
        loss = float(feature_loss(model.head(x), z, mask)[0])

    def psnr(video: torch.Tensor) -> list[float]:
        return [float(peak_signal_noise_ratio(frames[t], video[0, :, t].numpy(), data_range=1))
                for t in range(len(seqs))]

    return {"frames": seqs, "features": list(z.shape[1:]), "feature_loss": loss, "seconds": seconds,
            "psnr": psnr(x), "gray_psnr": psnr(torch.full_like(clip, 0.5))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--split", default="pool", choices=["pool", "extract"])
    args = p.parse_args()
    torch.set_num_threads(1)
    r = probe(args.size, args.steps, args.split)
    print(f"clipnet/{args.split} at {args.size} px, features {r['features']}, frames {r['frames'][0]}..{r['frames'][-1]}")
    print(f"DO {args.steps} steps: feature loss {r['feature_loss']:.2e}, {r['seconds']:.0f} s")
    print("PSNR per frame:", np.round(r["psnr"], 2).tolist())
    print(f"mean PSNR {np.mean(r['psnr']):.2f} dB; a uniform gray clip {np.mean(r['gray_psnr']):.2f} dB")


if __name__ == "__main__":
    main()
