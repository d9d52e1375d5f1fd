"""Multi-frame DMB variants vs single-frame DMB on consecutive held-out frames.

The feature-inversion benchmark's assets (its cached prior and victim, benchmarks.footage's
held-out bikes frames; default 8, in one window of 8, as in its multi rows), and every variant
at the same sampler budget: `iterations` sampler runs per frame.
  single   dmb, each frame alone; singleN: with N iterations (to match a variant's wall time)
  default  dmb-multi's defaults (independent inversions, fused)
  alg2     dmb-multi as Algorithm 2 is written (lambda_c = 0.05 on our scale, shared initial noise,
           no fusion, no coarse steps, no latent refinement)
  untied   dmb-multi without tie and fusion: must match single (a sanity row)
Any variant may end in /KEY=VALUE items: extra attack options (default/fuse=3.0,
alg2/coarse_steps=2); the attack parses and checks them.
`--clip sample:carphone --start 90` takes the frames from another bundled clip or place (held out
from the prior, the inverters and the victim either way; the prior has only seen bikes).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from adversary.configs import presets
from adversary.feature.dmb_multi import MultiConfig
from benchmarks import footage
from benchmarks.common import parser, print_table, write
from benchmarks.feature_inversion import settings

WINDOW = MultiConfig().frames.window
FIXED = {"single": ("dmb", {}), "default": ("dmb-multi", {}),
         "alg2": ("dmb-multi", dict(presets(MultiConfig)["paper"])), "untied": ("dmb-multi", {"fuse": 0.0})}


def variant(name: str) -> tuple[str, dict[str, Any], int | None]:
    """(attack, options, iterations or None for the benchmark's) for a variant name; a name may
    end in /KEY=VALUE items, extra attack options (e.g. default/fuse=3.0), passed on as text for the attack to check."""
    base, *extra = name.split("/")
    attack, options, iterations = _base_variant(base)
    for item in extra:
        key, sep, value = item.partition("=")
        if not (sep and key and value):
            raise SystemExit(f"bad option {item!r} in variant {name!r}: want KEY=VALUE")
        options[key] = value  # text: the attack's config parses and checks it
    return attack, options, iterations


def _base_variant(name: str) -> tuple[str, dict[str, Any], int | None]:
    if name in FIXED:
        return FIXED[name][0], dict(FIXED[name][1]), None
    if name.startswith("single") and name[6:].isdigit() and int(name[6:]) > 0:
        return "dmb", {}, int(name[6:])
    raise SystemExit(f"unknown variant {name!r}: single, singleN, default, alg2 or untied")


def head_spec(text: str) -> tuple[str, str, str]:
    parts = text.split(":")
    if len(parts) != 3 or parts[2] not in ("random", "trained"):
        raise SystemExit(f"--heads wants MODEL:SPLIT:random|trained, got {text!r}")
    return parts[0], parts[1], parts[2]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--heads", default="resnet18:layer1:random,resnet18:layer3:trained",
                   help="comma-separated MODEL:SPLIT:random|trained")
    p.add_argument("--variants", default="single,default,alg2", help="comma-separated (see above)")
    p.add_argument("--frames", type=int, default=8, help="consecutive held-out frames (one batch)")
    p.add_argument("--clip", default=footage.CLIP,
                   help="bundled clip to take them from (the prior saw only bikes; the trained victim the first "
                        "70%% of bikes, bigbuckbunny and carphone)")
    p.add_argument("--start", type=int, help="first frame (default: a third into the clip's held-out last 30%%)")
    p.add_argument("--window", type=int, default=WINDOW, help="frames per multi-frame group")
    p.add_argument("--iterations", type=int, help="sampler runs per frame (default: the feature benchmark's)")
    p.add_argument("--threads", type=int, default=1)
    footage.add_prior_option(p)
    p.add_argument("--cache", default="runs/feature_inversion_cache")
    p.add_argument("--work", default="runs/multi_frame")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    s = settings(args.quick)
    iterations = args.iterations or s.iterations
    heads = [head_spec(h) for h in args.heads.split(",") if h]
    variants = {name: variant(name) for name in args.variants.split(",") if name}
    cache, work = Path(args.cache), Path(args.work)
    prior_dir, _ = footage.benchmark_prior(cache, s, args.prior)
    victim_path, _ = footage.cached_victim(cache, s.size, s.victim_epochs)
    try:
        seqs, images = footage.held_out(args.frames, s.size, args.clip, args.start)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    shutil.rmtree(work, ignore_errors=True)
    truth = footage.write_truth(work / "truth", seqs, images)

    rows: list[dict[str, Any]] = []
    for head in tqdm(heads, desc="heads", unit="head"):
        model, split, victim = head
        rec = footage.write_recording(work / "recordings" / "-".join(head),
                                      footage.head(model, split, s.size, victim, victim_path), seqs, images,
                                      args.clip)
        for name, (attack, opts, own_iterations) in variants.items():
            opts = {"sampler_steps": s.steps, **opts, **({"window": args.window} if attack == "dmb-multi" else {})}
            start = time.perf_counter()
            metrics = footage.invert(rec, attack, work / "out" / f"{'-'.join(head)}-{name}", truth,
                                     own_iterations or iterations, opts, prior_dir, victim, victim_path, args.frames)
            psnr, summary = [f["psnr"] for f in metrics["frames"]], metrics["summary"]
            rows.append({"model": model, "split": split, "victim": victim, "variant": name, "attack": attack,
                         "options": opts, "iterations": own_iterations or iterations, "psnr": summary["mean_psnr"],
                         "ssim": summary["mean_ssim"],
                         "psnr_per_frame": psnr, "seconds_per_frame": (time.perf_counter() - start) / len(psnr),
                         "fused_share": (metrics["config"].get("attack_run") or {}).get("fused_share")})
            tqdm.write(f"{'/'.join(head):<28} {name:<8} psnr {rows[-1]['psnr']:6.2f}  ssim {rows[-1]['ssim']:.3f}")
    print_table(rows, ["model", "split", "victim", "variant", "psnr", "ssim", "seconds_per_frame"])
    for head in heads:
        single = next((r for r in rows if (r["model"], r["split"], r["victim"]) == head and r["variant"] == "single"),
                      None)
        for r in rows:
            if single and (r["model"], r["split"], r["victim"]) == head and r is not single:
                print(f"  {'/'.join(head):<28} {r['variant']:<8} {r['psnr'] - single['psnr']:+.2f} dB vs single")
    write(args.json, rows, {"clip": args.clip, "frames": [int(q) for q in seqs], "window": args.window,
                            "iterations": iterations, "ddim_steps": s.steps, "prior": str(prior_dir),
                            "quick": args.quick,
                            "budget": "every variant: `iterations` sampler runs per frame"})


if __name__ == "__main__":
    main()
