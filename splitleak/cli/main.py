"""Entry point: parse, dispatch, and turn bad input into a one-line reason and exit code 2."""
from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import entry_points
from typing import NoReturn

from splitleak.cli import models
from splitleak.errors import SplitleakError

# The actors add their sub-commands through this entry-point group (pyproject.toml): each entry is an
# add_parsers(subparsers) that sets args.run. The core names no actor (tests/test_import_graph.py).
COMMAND_GROUP = "splitleak.commands"


class OneLineParser(argparse.ArgumentParser):
    """A bad argument is one line on stderr and exit code 2, as every other bad input is (sub-parsers inherit it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="splitleak",
        description="Measure how much of a private video stream leaks out of split inference: "
        "run an edge and a cloud, tap the stream, attack what crossed the wire.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    models.add_parsers(sub)
    plugins = sorted(entry_points(group=COMMAND_GROUP), key=lambda point: point.name)
    if not plugins:
        parser.exit(2, "splitleak: error: no sub-commands are registered; install the project "
                       "(pip install -e .) so its entry points exist\n")
    for point in plugins:
        point.load()(sub)
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
