"""Bearer-token checks: edges present the stream token; the tap, a privileged read, its own."""
from __future__ import annotations

import hmac

import grpc

TAP_PREFIX = "/splitleak.v1.Tap/"


def _deny(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    def abort(request, context):
        context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(abort)


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
        key == "authorization" and hmac.compare_digest(str(value).encode(), expected)
        for key, value in metadata or ()
    )
