"""Arguments shared by several sub-commands, and the one place that resolves --device."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from splitleak.errors import SplitleakError

if TYPE_CHECKING:  # grpc loads when a command runs, not for --help
    from splitleak.wire.channel import TlsFiles


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto (cuda when available; default)")


def add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=positive_int,
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
    group.add_argument("--tls-cert", help=f"PEM certificate of this {who}")
    group.add_argument("--tls-key", help=f"PEM private key of this {who}")
    group.add_argument("--tls-ca", help="PEM CA: on the server, require client certificates signed by it; "
                       "on a client, the CA that signed the server's certificate" if server else
                       "PEM CA that signed the server's certificate (turns TLS on)")


def tls_files(args: argparse.Namespace) -> TlsFiles:
    from splitleak.wire.channel import TlsFiles

    return TlsFiles(cert=args.tls_cert, key=args.tls_key, ca=args.tls_ca)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value
