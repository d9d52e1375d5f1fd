"""All proto <-> array conversion: raw row-major bytes + dtype string + int64 shape.

Decoding validates everything a peer controls (dtype, shape, byte count, finiteness) and
raises WireError with a one-line reason; the servers turn that into INVALID_ARGUMENT.
"""
from __future__ import annotations

import numpy as np

from splitleak.errors import SplitleakError
from splitleak.v1 import splitleak_pb2 as pb

DTYPES = {
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
}
MAX_DIMS = 8
MAX_ELEMENTS = 1 << 28  # 256 Mi elements: far above any frame, far below an allocation bomb


class WireError(SplitleakError):
    """A message from the wire is malformed."""


def to_proto(array: np.ndarray, out: pb.Tensor | None = None) -> pb.Tensor:
    """Pack an array as raw little-endian row-major bytes (one copy: the bytes object)."""
    name = dtype_name(array.dtype)
    array = np.ascontiguousarray(array, dtype=DTYPES[name])
    msg = pb.Tensor() if out is None else out
    msg.dtype = name
    msg.shape[:] = array.shape
    msg.data = array.tobytes()
    return msg


def from_proto(msg: pb.Tensor, *, allow_nonfinite: bool = False) -> np.ndarray:
    """A read-only view of the message's bytes, after checking dtype, shape and size."""
    dtype = DTYPES.get(msg.dtype)
    if dtype is None:
        raise WireError(f"unknown dtype {msg.dtype!r}; expected one of {sorted(DTYPES)}")
    shape = tuple(msg.shape)
    check_shape(shape)
    count = int(np.prod(shape, dtype=np.int64))
    if count * dtype.itemsize != len(msg.data):
        raise WireError(
            f"shape {list(shape)} of {msg.dtype} needs {count * dtype.itemsize} bytes, got {len(msg.data)}"
        )
    array = np.frombuffer(msg.data, dtype=dtype).reshape(shape)
    if not allow_nonfinite and dtype.kind == "f" and not np.isfinite(array).all():
        raise WireError("tensor holds NaN or Inf")
    return array


def check_shape(shape: tuple[int, ...]) -> None:
    if not shape:
        raise WireError("tensor has no shape")
    if len(shape) > MAX_DIMS:
        raise WireError(f"tensor has {len(shape)} dimensions; at most {MAX_DIMS} allowed")
    if any(d <= 0 for d in shape):
        raise WireError(f"tensor shape {list(shape)} has a non-positive dimension")
    if any(d > MAX_ELEMENTS for d in shape) or np.prod(shape, dtype=np.float64) > MAX_ELEMENTS:
        raise WireError(f"tensor shape {list(shape)} is absurdly large")


def dtype_name(dtype: np.dtype) -> str:
    for name, known in DTYPES.items():
        if np.dtype(dtype).newbyteorder("<") == known or np.dtype(dtype) == known:
            return name
    raise WireError(f"dtype {dtype} cannot go on the wire")
