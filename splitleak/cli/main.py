"""Entry point: parse, dispatch, and turn bad input into a one-line reason and exit code 2."""
from __future__ import annotations

import argparse
import logging
import sys

from splitleak.cli import attack, demo, live, models, prior, services
from splitleak.errors import SplitleakError

# Each module adds its sub-commands with add_parsers(subparsers); each sets args.run.
COMMANDS = (models, services, attack, live, prior, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="splitleak",
        description="Measure how much of a private video stream leaks out of split inference: "
        "run an edge and a cloud, tap the stream, attack what crossed the wire.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return args.run(args) or 0
    except SplitleakError as err:
        print(f"splitleak {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"splitleak {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
