"""`splitleak audit`: how exposed a model's input is at a split point (or through FedSGD gradients), before attacking."""
from __future__ import annotations

import argparse
import sys

from splitleak.checks import check_output_dir
from splitleak.cli.common import add_device, add_threads, apply_threads, int_in, positive_int, resolve_device, seed, size_px


def add_parsers(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser(
        "audit", help="score how exposed the input is at a split point, before attacking",
        description="Audit a model at a split point (or every one, --split all) or its FedSGD gradients "
                    "(--mode fedsgd): the distance relation between inputs and features (gradients), the "
                    "Jacobian's spectrum, a short attack, and one exposure score (docs/audit.md). Writes "
                    "OUT/audit.json, audit.csv, audit.png and a distance scatter plot per configuration.")
    audit.add_argument("--model", required=True, help="a model of the zoo (`splitleak models`)")
    target = audit.add_mutually_exclusive_group(required=True)
    target.add_argument("--split", metavar="POINT", help="a split point of the model, or `all`")
    target.add_argument("--mode", choices=("fedsgd",), help="audit the FedSGD gradients of the whole model")
    audit.add_argument("--source", default="sample:bikes", metavar="SRC",
                       help="frames: a video file, a folder of images, sample:NAME, synthetic[:WxH], camera:N "
                            "(default sample:bikes)")
    audit.add_argument("--weights", default="seed:0", help="seed:N, a state-dict file or a torchvision weight name")
    audit.add_argument("--size", type=size_px, help="frame side in pixels (default: the model's)")
    audit.add_argument("--frames", type=int_in(4, 4096), default=12,
                       help="frames read from the source for the pairs (default 12, at least 4)")
    audit.add_argument("--rank", type=int_in(1, 512), default=16, help="top-k singular values estimated (default 16)")
    audit.add_argument("--attack-iterations", type=positive_int,
                       help="the short attack's budget (default: do 60 iterations, idlg-batched 5 L-BFGS "
                            "steps; rgap, where it reads the model, has none)")
    audit.add_argument("--out", default="runs/audit", metavar="DIR", help="output folder (default runs/audit)")
    audit.add_argument("--seed", type=seed, default=0, help="seed (default 0)")
    audit.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device(audit)
    add_threads(audit)
    audit.set_defaults(run=run_audit_command)


def run_audit_command(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")
    from dataclasses import replace

    from adversary.audit.run import AuditConfig, run_audit
    from adversary.audit.short_attack import Budget

    apply_threads(args)
    budget = Budget()
    if args.attack_iterations:
        budget = replace(budget, feature_iterations=args.attack_iterations, gradient_iterations=args.attack_iterations)
    cfg = AuditConfig(model=args.model, split=args.split, mode=args.mode, source=args.source, weights=args.weights,
                      size=args.size, frames=args.frames, rank=args.rank, budget=budget, seed=args.seed,
                      device=resolve_device(args.device))
    result = run_audit(cfg, args.out, progress=not args.quiet)
    for row in result["rows"]:
        where = row.get("split") or row.get("mode")
        print(f"{row['model']}/{where}: score {row['score']:.3f} (distance {row['distance_part']:.3f}, "
              f"invertibility {row['invertibility_part']:.3f}, attack {row['attack_part']:.3f}; "
              f"{row['seconds']:.1f} s)")
    print(f"wrote {args.out}/audit.json, audit.csv, audit.png", file=sys.stderr)
    return 0
