"""The adversary's sub-commands: tap, attack, evaluate, attack-live, train-victim, train-prior, enhance, train-sr, report, audit.

Every module here imports only argparse helpers at the top; the attack code (torch) loads
when a command runs, so `splitleak --help` stays light.
"""
from __future__ import annotations

import argparse

from adversary.cli import attack, audit, enhance, live, prior, report, tap


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the adversary's sub-commands, in the order `splitleak --help` lists them."""
    for module in (tap, attack, live, prior, enhance, report, audit):
        module.add_parsers(sub)
