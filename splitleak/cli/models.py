"""`splitleak models`: the zoo, its split points and the feature shape at an input size."""
from __future__ import annotations

import argparse
import json
import math

from splitleak.cli.common import size_px
from splitleak.errors import SplitleakError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list models, split points and feature shapes",
                       description="List every model with its split points and the per-frame feature shape "
                       "(what crosses the wire) at the given input size.")
    p.add_argument("--size", type=size_px, help="input size in pixels (default: each model's own)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from splitleak.models import describe

    rows = describe(args.size)
    if all("error" in row for row in rows):
        raise SplitleakError(f"no model takes {args.size}px inputs (e.g. {rows[0]['error']})")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['name']}  ({row['input_kind']}, {row['size']}px, {row['num_classes']} classes)")
        if "error" in row:
            print(f"  {row['error']}")
            continue
        for point in row["split_points"]:
            shape = point["feature_shape"]
            kib = 4 * math.prod(shape) / 1024
            print(f"  {point['name']:<8} {'x'.join(map(str, shape)):<16} {kib:>10.1f} KiB fp32")
    return 0
