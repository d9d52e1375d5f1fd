"""gRPC channel and server options in one place, with optional TLS and bearer tokens."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import grpc

from splitleak.errors import SplitleakError

MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # a 224x224 fp32 conv1 map is 3.2 MB; leave room for batches
OPTIONS: Sequence[tuple[str, int]] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),  # a second server on a busy port must fail, not share it
)
CLIENT_OPTIONS: Sequence[tuple[str, int]] = OPTIONS[:2] + (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files; a server needs cert+key, a client needs the CA (and cert+key for mTLS)."""

    cert: str | None = None
    key: str | None = None
    ca: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.cert or self.key or self.ca)


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise SplitleakError(f"cannot read TLS file {path}: {err.strerror}") from None


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    """Server certificate; with a CA, clients must present a certificate signed by it."""
    if not (tls.cert and tls.key):
        raise SplitleakError("TLS on the server needs both --tls-cert and --tls-key")
    pair = [(_read(tls.key), _read(tls.cert))]
    ca = _read(tls.ca)
    return grpc.ssl_server_credentials(pair, root_certificates=ca, require_client_auth=ca is not None)


def open_channel(target: str, tls: TlsFiles = TlsFiles()) -> grpc.Channel:
    """An insecure channel, or a TLS one when any TLS file is given."""
    check_target(target)
    if not tls.enabled:
        return grpc.insecure_channel(target, options=CLIENT_OPTIONS)
    creds = grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca), private_key=_read(tls.key), certificate_chain=_read(tls.cert)
    )
    return grpc.secure_channel(target, creds, options=CLIENT_OPTIONS)


def check_target(target: str) -> str:
    """HOST:PORT with a numeric port, or a clear error."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SplitleakError(f"expected HOST:PORT, got {target!r}")
    return target


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """Bearer token metadata (sent per call, so it works on insecure loopback too)."""
    return (("authorization", f"Bearer {token}"),) if token else ()
