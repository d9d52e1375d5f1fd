"""`splitleak report`: one self-contained HTML page over a `splitleak run` results folder."""
from __future__ import annotations

import argparse
import sys

from splitleak.checks import check_output_file


def add_parsers(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="an HTML page over an experiment's results",
                            description="Write one self-contained HTML page (tables, plots, truth vs reconstruction "
                                        "grids, links to videos) over a `splitleak run` results folder.")
    report.add_argument("results", metavar="RESULTS_DIR", help="the folder `splitleak run --out` wrote")
    report.add_argument("--out", metavar="FILE.html", help="where to write the page (default RESULTS_DIR/report.html)")
    report.set_defaults(run=run_report)


def run_report(args: argparse.Namespace) -> int:
    check_output_file(args.out, "--out")
    from adversary.report import write_report

    done = write_report(args.results, args.out)
    print(f"wrote {done['path']}: {done['rows']} cells, {done['images']} images embedded, {done['videos']} video "
          f"links, {done['bytes'] / 1e6:.2f} MB", file=sys.stderr)
    return 0
