"""Arguments shared by several sub-commands, their checked types, and the one place that resolves --device.

Every value a command line gives is checked before any work starts (argparse types here, output
paths by splitleak.checks): a bad one is one line and exit code 2, never a traceback, a hang or a
multi-gigabyte allocation later on.
"""
from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Callable

from splitleak.checks import MAX_BATCH, MAX_SEED, MAX_SIZE_PX, MAX_THREADS
from splitleak.errors import SplitleakError

if TYPE_CHECKING:  # grpc loads when a command runs, not for --help
    from splitleak.wire.channel import TlsFiles


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto (cuda when available; default)")


def add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int_in(1, MAX_THREADS),
                        help="torch CPU threads for this service (default: torch's; give co-located services one each)")


def apply_threads(args: argparse.Namespace) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SplitleakError(f"--device {name} asked for, but no CUDA device is available")
    if name != "cpu" and not name.startswith("cuda"):
        raise SplitleakError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto")
    return name


def add_tls(parser: argparse.ArgumentParser, server: bool) -> None:
    group = parser.add_argument_group("TLS and tokens")
    who = "server" if server else "client (for mutual TLS)"
    group.add_argument("--tls-cert", help=f"PEM certificate of this {who} (with --tls-key)")
    group.add_argument("--tls-key", help=f"PEM private key of this {who} (with --tls-cert)")
    group.add_argument("--tls-ca", help="PEM CA: on the server, require client certificates signed by it; "
                       "on a client, the CA that signed the server's certificate" if server else
                       "PEM CA that signed the server's certificate (turns TLS on)")


def tls_files(args: argparse.Namespace, server: bool = False) -> TlsFiles:
    """The TLS files given, checked now (readable PEM, cert and key together and matching)."""
    from splitleak.wire.channel import TlsFiles, check_tls

    tls = TlsFiles(cert=args.tls_cert, key=args.tls_key, ca=args.tls_ca)
    check_tls(tls, server=server)
    return tls


# --- argparse types: each returns a checked value or raises ArgumentTypeError (one line, exit 2) ---

def int_in(low: int, high: int | None = None, why: str = "") -> Callable[[str], int]:
    """An integer type in low..high (high None: no upper bound); `why` explains the bound."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            span = f"in {low}..{high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"expected an integer {span}{why}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def float_in(low: float | None = None, high: float | None = None, *, above: bool = False,
             unit: str = "") -> Callable[[str], float]:
    """A finite float >= low (> low when `above`) and <= high; nan and inf never pass."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = low is not None and (value <= low if above else value < low)
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected a finite number{_span(low, high, above)}{unit}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def _span(low: float | None, high: float | None, above: bool) -> str:
    parts = ([f"{'>' if above else '>='} {low:g}"] if low is not None else []) + \
        ([f"<= {high:g}"] if high is not None else [])
    return " " + " and ".join(parts) if parts else ""


positive_int = int_in(1)
non_negative_int = int_in(0)
size_px = int_in(1, MAX_SIZE_PX, " (pixels per side)")
batch_size = int_in(1, MAX_BATCH, " (frames per batch)")
seed = int_in(0, MAX_SEED)
seconds = float_in(0.0, unit=" (seconds)")
positive_seconds = float_in(0.0, above=True, unit=" (seconds)")
learning_rate = float_in(0.0, 100.0, above=True)  # the cloud refuses updates with lr > 100


def add_message_limit(parser: argparse.ArgumentParser, scope: str, advice: str) -> None:
    """--max-message-mb (default 256, the wire's): the largest gRPC message in MiB `scope`, then `advice`;
    splitleak.wire.channel.message_limit turns it into bytes."""
    parser.add_argument("--max-message-mb", type=positive_int, default=256,
                        help=f"largest gRPC message in MiB{scope} (default 256){advice}")
