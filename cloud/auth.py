"""Bearer-token checks: edges present the stream token; the tap, a privileged read, its own.

The check runs on the call's metadata before any handler is entered; a refused call is
answered at once, without waiting for (or reading) a message, so it never holds a slot.
"""
from __future__ import annotations

import hmac

import grpc

TAP_PREFIX = "/splitleak.v1.Tap/"
TOKEN_KEY = "authorization"  # value: "Bearer <token>"


def _deny(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A request-streaming handler aborts without reading: a unary one would first wait for the
    request, and a client that never sends it would keep the call (and a worker) open."""

    def abort(requests, context):
        context.abort(code, message)

    return grpc.stream_stream_rpc_method_handler(abort)


class TokenInterceptor(grpc.ServerInterceptor):
    def __init__(self, token: str | None, tap_token: str | None):
        self.token = token
        self.tap_token = tap_token

    def intercept_service(self, continuation, details):
        is_tap = details.method.startswith(TAP_PREFIX)
        needed = self.tap_token if is_tap else self.token
        if is_tap and self.token and not self.tap_token:
            return _deny(grpc.StatusCode.PERMISSION_DENIED, "the tap is disabled: start the cloud with --tap-token")
        if needed and not _presented(details.invocation_metadata, needed):
            return _deny(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        return continuation(details)


def _presented(metadata, token: str) -> bool:
    expected = f"Bearer {token}".encode()
    return any(
        key == TOKEN_KEY and hmac.compare_digest(_bytes(value), expected)
        for key, value in metadata or ()
    )


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "replace")
