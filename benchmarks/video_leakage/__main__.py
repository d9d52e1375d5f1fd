"""Video leakage benchmark (issue 26): frame, clip-feature, clip-raw and FedAvg settings side by side.

`python -m benchmarks.video_leakage [--quick] [--json PATH] [--only fedavg,saturated,...] [--prior DIR]`

Each setting is a module of this package exposing `rows(quick: bool) -> list[dict]`; every row
names its `setting`, `model`, `attack` or `chain`, `local_steps`, `batch`, `feature_cos` (where
features are the target), `psnr`, `ssim` and `seconds_per_frame`, measured on held-out frames of
the bundled footage streamed through the real services and attacked through the CLI's code path.
"""
from __future__ import annotations

import importlib
import time
from typing import Any

import torch

from benchmarks.common import parser, print_table, write
from benchmarks.footage import add_prior_option

SETTINGS = ("saturated", "fedavg", "clips", "chains")  # the package's modules, in the order they run
COLUMNS = ["setting", "model", "attack", "chain", "local_steps", "batch", "feature_cos", "psnr", "ssim",
           "seconds_per_frame"]
CHAIN_COLUMNS = ["feature_rel_error", "upper_bound_psnr", "upper_bound_ssim"]  # the chain beside its upper bound


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--only", help=f"comma-separated settings to run (default all: {','.join(SETTINGS)})")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    add_prior_option(p)  # the chains' diffusion prior
    args = p.parse_args()
    wanted = args.only.split(",") if args.only else list(SETTINGS)
    unknown = [w for w in wanted if w not in SETTINGS]
    if unknown:
        p.error(f"unknown setting {unknown[0]!r}; choose from {', '.join(SETTINGS)}")
    torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    for name in wanted:
        started = time.perf_counter()
        module = importlib.import_module(f"benchmarks.video_leakage.{name}")
        found = module.rows(args.quick, prior=args.prior) if name == "chains" else module.rows(args.quick)
        seconds[name] = time.perf_counter() - started
        print_table(found, COLUMNS + (CHAIN_COLUMNS if name == "chains" else []))
        rows += found
    print_table(rows, COLUMNS)
    write(args.json, rows, {"quick": args.quick, "settings": wanted, "seconds": seconds})


if __name__ == "__main__":
    main()
