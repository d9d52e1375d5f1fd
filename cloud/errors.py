"""A peer's request the cloud refuses, with the gRPC status code the refusal carries."""
from __future__ import annotations

import grpc

from splitleak.errors import SplitleakError


class Refused(SplitleakError):
    """Refused with `code`: INVALID_ARGUMENT for bad input, others where the input is fine but
    the cloud cannot serve it now (UNAVAILABLE) or at all (RESOURCE_EXHAUSTED)."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT):
        super().__init__(message)
        self.code = code


def code_of(err: SplitleakError) -> grpc.StatusCode:
    """The status a refusal answers with; plain SplitleakErrors are bad input."""
    return err.code if isinstance(err, Refused) else grpc.StatusCode.INVALID_ARGUMENT
