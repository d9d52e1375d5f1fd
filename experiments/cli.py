"""`splitleak run EXPERIMENT.yaml`: run an experiment's cells (the experimenter drives all three actors)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from splitleak.checks import check_output_dir
from splitleak.cli.common import positive_int
from splitleak.errors import SplitleakError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run an experiment: network conditions x codecs x defences x attacks",
                         description="Take the product of the experiment file's axes; per cell start a cloud and "
                         "an edge on loopback, attack the tap's recording, score it against the truth and measure "
                         "utility. Rows go to OUT/results.jsonl and results.csv, plots to OUT/plots "
                         "(docs/experiments.md).")
    run.add_argument("experiment", metavar="EXPERIMENT.yaml", help="the experiment file")
    run.add_argument("--out", metavar="DIR", help="results folder (default runs/<name>[-quick])")
    run.add_argument("--resume", action="store_true",
                     help="skip failed cells too (a plain rerun skips finished cells and retries failed ones)")
    run.add_argument("--quick", action="store_true", help="shrink every cell (frames, iterations) to the file's quick:")
    run.add_argument("--ray", metavar="ADDRESS|auto",
                     help="run each cell as a Ray task: on the cluster at ADDRESS, or on a local instance (auto)")
    run.add_argument("--workers", type=positive_int, help="with --ray auto: CPUs of the local instance (cells at once)")
    run.add_argument("--link-backend", choices=("emulator", "tc"),
                     help="how links are made (replaces the file's link_backend): the edge's application-level "
                          "emulator (default), or tc: cloud and edge in two network namespaces joined by a veth "
                          "pair, shaped by the kernel (tbf for rate, netem for delay/jitter/loss where the kernel "
                          "has it; needs root and iproute2)")
    run.add_argument("--threads", type=positive_int, default=1,
                     help="torch threads of each cell's attack (default 1; its cloud and edge run one each): "
                          "with --ray, the CPUs each task asks for")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(run=run_command)


def run_command(args: argparse.Namespace) -> int:
    from experiments.runner import run_experiment, summary_lines
    from experiments.spec import load_experiment

    experiment = load_experiment(args.experiment, quick=args.quick, link_backend=args.link_backend)  # the whole file, before anything runs
    out = Path(args.out or f"runs/{experiment.name}{'-quick' if args.quick else ''}")
    check_output_dir(str(out), "--out")
    if args.ray:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise SplitleakError("--ray needs Ray: pip install -e '.[ray]'") from None
    elif args.workers:
        raise SplitleakError("--workers applies to --ray auto")
    rows = run_experiment(experiment, out, resume=args.resume, ray=args.ray, workers=args.workers,
                          progress=not args.quiet, source_file=args.experiment, threads=args.threads)
    print("\n".join(summary_lines(rows)))
    failed = sum(r["status"] != "ok" for r in rows)
    print(f"{len(rows)} cells, {failed} failed; results in {out}/results.csv, plots in {out}/plots", file=sys.stderr)
    return 0
