"""Why a cloud is unreachable, in words: refused, timed out, TLS verification, name mismatch, ...

`channel_ready_future` only says "not ready"; a call that fails carries gRPC's own reason in its
details (the last connection error: the socket's errno, or BoringSSL's handshake error). One probe
call to a method no server has reads it, and `explain` turns it into a sentence that names the
fix. gRPC's wording may change between versions: what no rule matches is quoted as gRPC gave it.
"""
from __future__ import annotations

import grpc

from splitleak.wire.channel import TlsFiles, open_channel

PROBE_METHOD = "/splitleak.v1.Probe/Reachable"  # unimplemented: any answer at all proves the transport works
PROBE_TIMEOUT_S = 2.0

# (what gRPC's details contain, what it means); the first match wins, so specific before general.
_RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("Connection refused",), "connection refused: nothing listens on {target}"),
    (("Hostname Verification", "No match found for server name", "Peer name"),
     "TLS name mismatch: the server's certificate does not name {host} (connect by a name it holds)"),
    (("CERTIFICATE_VERIFY_FAILED",),
     "TLS certificate verification failed: the server's certificate is not signed by --tls-ca ({detail})"),
    (("ALERT_UNKNOWN_CA", "ALERT_BAD_CERTIFICATE", "CERTIFICATE_REQUIRED", "ALERT_CERTIFICATE"),
     "TLS: the server refused this client's certificate (mutual TLS wants --tls-cert/--tls-key signed by its CA)"),
    (("WRONG_VERSION_NUMBER",), "TLS handshake failed: the server at {target} does not speak TLS (drop --tls-ca, "
                                "or start the cloud with --tls-cert/--tls-key)"),
    (("resolving", "Domain name not found", "DNS resolution failed"), "cannot resolve the host name {host}"),
    (("Connection timed out", "Timeout occurred"), "connection timed out: no answer from {target}"),
    (("No route to host", "Network is unreachable"), "no route to {target}"),
)


def why_unreachable(target: str, tls: TlsFiles = TlsFiles(), timeout: float = PROBE_TIMEOUT_S) -> str:
    """One probe call; gRPC's reason for failing it, explained (or "it answers now")."""
    channel = open_channel(target, tls)
    try:
        channel.unary_unary(PROBE_METHOD)(b"", timeout=timeout)
    except grpc.RpcError as err:
        return explain(err.code(), err.details() or "", target, tls.enabled, timeout)
    finally:
        channel.close()
    return f"{target} answers now"


def explain(code: grpc.StatusCode, details: str, target: str, tls: bool, timeout: float = PROBE_TIMEOUT_S) -> str:
    """A failed call's status and details as one sentence naming the cause."""
    host = target.rpartition(":")[0]
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return (f"timed out: no gRPC answer from {target} within {timeout:g}s (a firewall, a wrong port, or a "
                f"server that does not speak gRPC{'' if tls else ' or wants TLS'})")
    if code != grpc.StatusCode.UNAVAILABLE:
        return f"{target} answers now ({code.name})"
    last = details.rpartition("last error: ")[2] or details
    for needles, sentence in _RULES:
        if any(needle in details for needle in needles):
            return sentence.format(target=target, host=host, detail=_after(last, "CERTIFICATE_VERIFY_FAILED: "))
    if "Socket closed" in details or "Connection reset" in details:
        return ("the server closed the connection during the TLS handshake: it may require a client certificate "
                "(--tls-cert/--tls-key) signed by its CA" if tls else
                "the server closed the connection: it may require TLS (give --tls-ca)")
    return f"gRPC says: {last}"


def _after(text: str, marker: str) -> str:
    """The part of gRPC's text after `marker` (BoringSSL's own reason), without gRPC's trailing status."""
    tail = text.partition(marker)[2] or text
    return tail.removesuffix(": OK").strip()
