"""Tensor codecs for the wire: fp32 (exact), fp16 (half precision), int8 (per-tensor affine).

encode() turns a float32 array into (codec message, payload array); decode() inverts it
into float32. Both are vectorised numpy: no per-element Python. decode() checks what comes
out, not only what went in: every decoded value is finite and at most MAX_MAGNITUDE in size.
"""
from __future__ import annotations

from typing import Callable

import warnings

import numpy as np

from splitleak.errors import SplitleakError
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.wire import serde

Encoded = tuple[pb.Codec, np.ndarray]
# Far above any activation, gradient or weight delta, far below float32's 3.4e38: a value
# that passes squares (and sums of thousands of products) without overflowing downstream.
MAX_MAGNITUDE = 1e15
MAX_INT8_SCALE = MAX_MAGNITUDE / 256  # the widest int8 step whose 256 levels stay within MAX_MAGNITUDE
# Decoded tensors are views of immutable message bytes; nothing downstream writes to them.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


def _encode_fp32(x: np.ndarray) -> Encoded:
    return pb.Codec(name="fp32"), np.ascontiguousarray(x, dtype=np.float32)


def _encode_fp16(x: np.ndarray) -> Encoded:
    return pb.Codec(name="fp16"), x.astype(np.float16)


def _encode_int8(x: np.ndarray) -> Encoded:
    """Per-tensor affine quantisation with an integer zero point, as torch.quantize_per_tensor.

    The range always holds 0 (so the zero point fits in int8) and keeps one step of headroom
    at each end, so rounding never clips: every element decodes within scale / 2.
    """
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / 253.0 or 1.0
    zero_point = int(round(-127 - lo / scale))
    q = x * np.float32(1.0 / scale)
    q += zero_point
    np.rint(q, out=q)
    np.clip(q, -128, 127, out=q)
    return pb.Codec(name="int8", scale=scale, zero_point=zero_point), q.astype(np.int8)


def _decode_fp32(codec: pb.Codec, data: np.ndarray) -> np.ndarray:
    return _require(data, np.float32, codec)


def _decode_fp16(codec: pb.Codec, data: np.ndarray) -> np.ndarray:
    # torch widens half to float with vector instructions, ~15x numpy's astype here; imported here,
    # not at the top, so the CLI's parser (which lists the codec names) loads no torch
    import torch

    return torch.from_numpy(_require(data, np.float16, codec)).float().numpy()


def _decode_int8(codec: pb.Codec, data: np.ndarray) -> np.ndarray:
    if not 0 < codec.scale <= MAX_INT8_SCALE:  # False for NaN
        raise serde.WireError(f"int8 codec needs a scale in (0, {MAX_INT8_SCALE:g}], got {codec.scale}")
    if not -128 <= codec.zero_point <= 127:
        raise serde.WireError(f"int8 zero point {codec.zero_point} outside [-128, 127]")
    q = _require(data, np.int8, codec).astype(np.float32)
    q -= codec.zero_point
    q *= np.float32(codec.scale)
    return q


def _require(data: np.ndarray, dtype: type, codec: pb.Codec) -> np.ndarray:
    if data.dtype != dtype:
        raise serde.WireError(f"codec {codec.name} carries {np.dtype(dtype).name}, got {data.dtype.name}")
    return data


ENCODERS: dict[str, Callable[[np.ndarray], Encoded]] = {
    "fp32": _encode_fp32,
    "fp16": _encode_fp16,
    "int8": _encode_int8,
}
DECODERS: dict[str, Callable[[pb.Codec, np.ndarray], np.ndarray]] = {
    "fp32": _decode_fp32,
    "fp16": _decode_fp16,
    "int8": _decode_int8,
}
NAMES = tuple(ENCODERS)


def check_name(name: str) -> str:
    if name not in ENCODERS:
        raise SplitleakError(f"unknown codec {name!r}; choose one of {', '.join(NAMES)}")
    return name


def encode(name: str, x: np.ndarray, out: pb.Tensor) -> pb.Codec:
    """Encode float32 `x` with codec `name` into the tensor message `out`; return the codec."""
    codec, payload = ENCODERS[check_name(name)](x)
    serde.to_proto(payload, out)
    return codec


def decode(codec: pb.Codec, tensor: pb.Tensor) -> np.ndarray:
    """Validate and decode a tensor message into float32 (a view for fp32, no copy)."""
    decoder = DECODERS.get(codec.name)
    if decoder is None:
        raise serde.WireError(f"unknown codec {codec.name!r}; expected one of {', '.join(NAMES)}")
    return check_decoded(decoder(codec, serde.from_proto(tensor)))


def check_decoded(x: np.ndarray) -> np.ndarray:
    """Refuse a decoded tensor with a non-finite value or one beyond MAX_MAGNITUDE."""
    # max/min propagate NaN, and every comparison with NaN is False: one pass each, no temporaries
    if not (x.max() <= MAX_MAGNITUDE and x.min() >= -MAX_MAGNITUDE):
        if not np.isfinite(x).all():
            raise serde.WireError("tensor decodes to NaN or Inf")
        raise serde.WireError(f"tensor holds values beyond +-{MAX_MAGNITUDE:g} after decoding")
    return x


def max_error(codec: pb.Codec) -> float:
    """The stated worst-case absolute error of a decoded element (relative for fp16)."""
    return {"fp32": 0.0, "fp16": 2.0**-11, "int8": codec.scale / 2}[codec.name]
