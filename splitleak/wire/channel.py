"""gRPC channel and server options in one place, with optional TLS and bearer tokens."""
from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import grpc

from splitleak.errors import SplitleakError

MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # a 224x224 fp32 conv1 map is 3.2 MB; leave room for batches
# The limit is what a peer can make this process hold for one message: raising it (--max-message-mb, e.g. for
# vit_b_16's 330 MiB fp32 state in fedsgd) is the operator's explicit choice, never a peer's. gRPC takes an int32.
MAX_MESSAGE_MB_CEILING = (2**31 - 1) >> 20  # 2047 MiB


def message_options(max_bytes: int = MAX_MESSAGE_BYTES) -> tuple[tuple[str, int], ...]:
    """gRPC's send and receive limits, both `max_bytes`."""
    return (("grpc.max_send_message_length", max_bytes), ("grpc.max_receive_message_length", max_bytes))


NO_REUSEPORT = (("grpc.so_reuseport", 0),)  # a second server on a busy port must fail, not share it
OPTIONS: Sequence[tuple[str, int]] = message_options() + NO_REUSEPORT
RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
CLIENT_OPTIONS: Sequence[tuple[str, int]] = message_options() + RECONNECT_OPTIONS


def message_limit(mb: int) -> int:
    """--max-message-mb in bytes; SplitleakError outside 1..MAX_MESSAGE_MB_CEILING."""
    if isinstance(mb, bool) or int(mb) != mb or not 1 <= mb <= MAX_MESSAGE_MB_CEILING:
        raise SplitleakError(f"--max-message-mb must be an integer in [1, {MAX_MESSAGE_MB_CEILING}] MiB, got {mb}")
    return int(mb) << 20


def check_message_bytes(max_bytes: int) -> int:
    """A message limit in bytes, as gRPC takes it (a positive int32); SplitleakError otherwise."""
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or not 1 <= max_bytes < 2**31:
        raise SplitleakError(f"the message limit must be 1 byte .. {MAX_MESSAGE_MB_CEILING} MiB, got {max_bytes!r}")
    return max_bytes


def over_limit(what: str, nbytes: int, max_bytes: int) -> str:
    """The one-line reason a message of `nbytes` cannot cross a wire limited to `max_bytes`."""
    return (f"{what} is {nbytes / 2**20:.3g} MiB, over the message limit of {max_bytes / 2**20:.3g} MiB: "
            f"raise --max-message-mb on both splitleak edge and splitleak cloud")


@dataclass(frozen=True)
class TlsFiles:
    """PEM files; a server needs cert+key, a client needs the CA (and cert+key for mTLS)."""

    cert: str | None = None
    key: str | None = None
    ca: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.cert or self.key or self.ca)


MAX_PEM_BYTES = 1 << 20  # a certificate chain is kilobytes; more is not a PEM file
_PEM = {"certificate": re.compile(rb"-----BEGIN (TRUSTED )?CERTIFICATE-----"),
        "private key": re.compile(rb"-----BEGIN ([A-Z]+ )?PRIVATE KEY-----")}


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise SplitleakError(f"cannot read TLS file {path}: {err.strerror}") from None


def check_tls(tls: TlsFiles, *, server: bool) -> None:
    """Refuse, in one line and before anything connects, TLS files gRPC would abort on or fail on later.

    gRPC's core aborts the process on a certificate without its key, and a client reads its files
    on the connecting thread; so every file is checked here: a readable regular file, PEM of the
    right kind, and the certificate and key a matching pair (OpenSSL via the ssl module says so).
    """
    if bool(tls.cert) != bool(tls.key):
        given, missing = ("--tls-cert", "--tls-key") if tls.cert else ("--tls-key", "--tls-cert")
        raise SplitleakError(f"{given} needs {missing} too: a certificate and its private key go together")
    if server and tls.enabled and not tls.cert:
        raise SplitleakError("TLS on the server needs both --tls-cert and --tls-key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca:
        _check_pem(tls.ca, "--tls-ca", "certificate")
        try:
            context.load_verify_locations(cafile=tls.ca)
        except (ssl.SSLError, ValueError) as err:
            raise SplitleakError(f"--tls-ca {tls.ca}: not a usable PEM CA certificate ({_ssl_reason(err)})") from None
    if tls.cert and tls.key:
        _check_pem(tls.cert, "--tls-cert", "certificate")
        _check_pem(tls.key, "--tls-key", "private key")
        try:
            context.load_cert_chain(tls.cert, tls.key, password=lambda: b"")  # never prompt on the terminal
        except (ssl.SSLError, ValueError) as err:
            raise SplitleakError(f"--tls-cert {tls.cert} and --tls-key {tls.key}: not a matching certificate and "
                                 f"unencrypted private key ({_ssl_reason(err)})") from None


def _check_pem(path: str, flag: str, kind: str) -> None:
    """A regular, readable file of at most MAX_PEM_BYTES holding a PEM block of this kind."""
    file = Path(path)
    try:
        if not file.is_file():
            reason = "no such file" if not file.exists() else "not a regular file"
            raise SplitleakError(f"cannot read TLS file {flag} {path}: {reason}")
        with file.open("rb") as handle:
            data = handle.read(MAX_PEM_BYTES + 1)
    except OSError as err:
        raise SplitleakError(f"cannot read TLS file {flag} {path}: {err.strerror}") from None
    if len(data) > MAX_PEM_BYTES:
        raise SplitleakError(f"{flag} {path}: larger than {MAX_PEM_BYTES >> 20} MiB, not a PEM {kind}")
    if not _PEM[kind].search(data):
        raise SplitleakError(f"{flag} {path}: not a PEM {kind} (no '-----BEGIN ...' line of that kind)")


def _ssl_reason(err: Exception) -> str:
    return getattr(err, "reason", None) or str(err).splitlines()[0] or type(err).__name__


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    """Server certificate; with a CA, clients must present a certificate signed by it."""
    check_tls(tls, server=True)
    pair = [(_read(tls.key), _read(tls.cert))]
    ca = _read(tls.ca)
    return grpc.ssl_server_credentials(pair, root_certificates=ca, require_client_auth=ca is not None)


def open_channel(target: str, tls: TlsFiles = TlsFiles(), max_message_bytes: int = MAX_MESSAGE_BYTES) -> grpc.Channel:
    """An insecure channel, or a TLS one when any TLS file is given; messages up to `max_message_bytes`."""
    check_target(target)
    options = message_options(max_message_bytes) + RECONNECT_OPTIONS
    if not tls.enabled:
        return grpc.insecure_channel(target, options=options)
    check_tls(tls, server=False)
    creds = grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca), private_key=_read(tls.key), certificate_chain=_read(tls.cert)
    )
    return grpc.secure_channel(target, creds, options=options)


def check_target(target: str) -> str:
    """HOST:PORT with a numeric port, or a clear error."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SplitleakError(f"expected HOST:PORT, got {target!r}")
    return target


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """Bearer token metadata (sent per call, so it works on insecure loopback too)."""
    return (("authorization", f"Bearer {token}"),) if token else ()
