"""Serde and codecs: round trips, stated error bounds, validation, fresh stubs."""
import filecmp
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from splitleak import codecs
from splitleak.errors import SplitleakError
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.wire import serde

ROOT = Path(__file__).resolve().parents[1]


def features(shape=(1, 64, 16, 16), seed=0):
    return np.random.default_rng(seed).normal(0.5, 2.0, shape).astype(np.float32)


def roundtrip(name, x):
    msg = pb.FeatureFrame()
    codec = codecs.encode(name, x, msg.features)
    msg.codec.CopyFrom(codec)
    wire = pb.FeatureFrame.FromString(msg.SerializeToString())
    return codecs.decode(wire.codec, wire.features), wire


def test_fp32_is_exact_and_zero_copy():
    x = features()
    y, wire = roundtrip("fp32", x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.array_equal(x, y)
    assert not y.flags.owndata  # a view of the message bytes


def test_fp16_within_half_precision():
    x = features()
    y, _ = roundtrip("fp16", x)
    rel = np.abs(y - x) / np.maximum(np.abs(x), 2.0**-14)
    assert rel.max() <= codecs.max_error(pb.Codec(name="fp16")) + 1e-7


@pytest.mark.parametrize("shift", [0.0, 5.0, -7.0])
def test_int8_within_half_a_step(shift):
    x = features() + shift
    y, wire = roundtrip("int8", x)
    assert wire.features.dtype == "int8" and len(wire.features.data) == x.size
    assert np.abs(y - x).max() <= codecs.max_error(wire.codec) * (1 + 1e-4)


def test_int8_constant_and_zero_tensors():
    for x in (np.zeros((2, 3), np.float32), np.full((2, 3), 1e6, np.float32)):
        y, wire = roundtrip("int8", x)
        assert np.abs(y - x).max() <= codecs.max_error(wire.codec) * (1 + 1e-4)


def test_bytes_shrink_with_codec():
    x = features()
    sizes = {name: roundtrip(name, x)[1].ByteSize() for name in codecs.NAMES}
    assert sizes["fp16"] < 0.51 * sizes["fp32"]
    assert sizes["int8"] < 0.26 * sizes["fp32"]


@pytest.mark.parametrize(
    "tensor, reason",
    [
        (pb.Tensor(dtype="float64", shape=[1], data=b"\0" * 8), "unknown dtype"),
        (pb.Tensor(dtype="float32", shape=[2, 2], data=b"\0" * 12), "needs 16 bytes"),
        (pb.Tensor(dtype="float32", shape=[-1, 4], data=b""), "non-positive"),
        (pb.Tensor(dtype="float32", shape=[1 << 40], data=b""), "absurdly large"),
        (pb.Tensor(dtype="float32", shape=[], data=b""), "no shape"),
        (pb.Tensor(dtype="float32", shape=[1] * 9, data=b"\0" * 4), "dimensions"),
        (pb.Tensor(dtype="float32", shape=[2], data=np.array([1, np.nan], np.float32).tobytes()), "NaN"),
        (pb.Tensor(dtype="float32", shape=[1], data=np.array([np.inf], np.float32).tobytes()), "NaN or Inf"),
    ],
)
def test_malformed_tensors_are_rejected(tensor, reason):
    with pytest.raises(serde.WireError, match=reason):
        serde.from_proto(tensor)


def test_codec_mismatch_and_bad_int8_params():
    msg = pb.Tensor()
    serde.to_proto(np.zeros(4, np.float32), msg)
    with pytest.raises(serde.WireError, match="carries int8"):
        codecs.decode(pb.Codec(name="int8", scale=1.0), msg)
    q = pb.Tensor()
    serde.to_proto(np.zeros(4, np.int8), q)
    with pytest.raises(serde.WireError, match="scale"):
        codecs.decode(pb.Codec(name="int8", scale=0.0), q)
    with pytest.raises(serde.WireError, match="unknown codec"):
        codecs.decode(pb.Codec(name="zip"), msg)
    with pytest.raises(SplitleakError, match="unknown codec"):
        codecs.encode("fp8", np.zeros(2, np.float32), pb.Tensor())


def test_generated_stubs_are_fresh(tmp_path):
    """The committed stubs equal what grpc_tools makes from proto/ now."""
    pytest.importorskip("grpc_tools")
    proto = "splitleak/v1/splitleak.proto"
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"--python_out={tmp_path}",
           f"--grpc_python_out={tmp_path}", f"--pyi_out={tmp_path}", str(ROOT / "proto" / proto)]
    subprocess.run(cmd, check=True)
    for name in ("splitleak_pb2.py", "splitleak_pb2_grpc.py", "splitleak_pb2.pyi"):
        fresh, committed = tmp_path / "splitleak/v1" / name, ROOT / "splitleak/v1" / name
        assert filecmp.cmp(fresh, committed, shallow=False), f"{committed} is stale: run the protoc line in README"
