"""A malformed message costs its own frame an INVALID_ARGUMENT; the server keeps serving."""
import grpc
import numpy as np
import pytest

from splitleak import codecs
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.wire.channel import open_channel

INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def good_frame(seq, model="lenet", split="conv2", size=32, shape=(1, 12, 8, 8)):
    frame = pb.FeatureFrame()
    frame.meta.stream_id, frame.meta.seq = "s", seq
    frame.meta.model_id, frame.meta.split_point, frame.meta.input_size = model, split, size
    frame.meta.weights = "seed:0"
    frame.codec.CopyFrom(codecs.encode("fp32", np.full(shape, 0.5, np.float32), frame.features))
    return frame


def tampered(seq, **changes):
    frame = good_frame(seq)
    for path, value in changes.items():
        target, field = frame, path.split(".")
        for name in field[:-1]:
            target = getattr(target, name)
        if isinstance(value, list):
            getattr(target, field[-1])[:] = value
        else:
            setattr(target, field[-1], value)
    return frame.SerializeToString()


BAD = {
    "garbage bytes": b"\xff\xfe\x00garbage\x12\x99",
    "unknown dtype": tampered(1, **{"features.dtype": "complex64"}),
    "shape vs bytes": tampered(2, **{"features.shape": [1, 12, 8, 9]}),
    "negative dim": tampered(3, **{"features.shape": [1, -12, 8, 8]}),
    "absurd dim": tampered(4, **{"features.shape": [1, 1 << 40, 8, 8]}),
    "unknown model": tampered(5, **{"meta.model_id": "alexnet9000"}),
    "unknown split": tampered(6, **{"meta.split_point": "layer9"}),
    "wrong shape for model": good_frame(7, shape=(1, 12, 4, 4)).SerializeToString(),
    "nan": None,  # filled below
    "unknown codec": tampered(9, **{"codec.name": "zip"}),
    "absurd size": tampered(10, **{"meta.input_size": 100000}),
    "weights path": tampered(11, **{"meta.weights": "/etc/passwd"}),
    "no stream id": tampered(12, **{"meta.stream_id": ""}),
}
nan = good_frame(8)
nan.features.data = np.full((1, 12, 8, 8), np.nan, np.float32).tobytes()
BAD["nan"] = nan.SerializeToString()


def raw_infer(port, payloads):
    channel = open_channel(f"127.0.0.1:{port}")
    call = channel.stream_stream("/splitleak.v1.SplitInference/Infer", request_serializer=lambda b: b,
                                 response_deserializer=pb.FrameResult.FromString)
    answers = list(call(iter(payloads), timeout=60))
    channel.close()
    return answers


def test_each_bad_frame_gets_invalid_argument_and_good_frames_still_pass(start_cloud):
    cloud = start_cloud()
    payloads = []
    for i, bad in enumerate(BAD.values()):
        payloads += [good_frame(100 + i).SerializeToString(), bad]
    answers = raw_infer(cloud.port, payloads)
    assert len(answers) == len(payloads)
    for (name, _), good, bad in zip(BAD.items(), answers[0::2], answers[1::2]):
        assert good.HasField("prediction") and len(good.prediction.classes) == 5, name
        assert bad.HasField("error") and bad.error.code == INVALID, name
        assert bad.error.message and "\n" not in bad.error.message, name


def test_server_survives_and_serves_another_stream(start_cloud):
    cloud = start_cloud()
    raw_infer(cloud.port, list(BAD.values()))
    answers = raw_infer(cloud.port, [good_frame(1).SerializeToString()])
    assert answers[0].HasField("prediction")


def test_garbage_tap_request_is_invalid_argument(start_cloud):
    cloud = start_cloud()
    channel = open_channel(f"127.0.0.1:{cloud.port}")
    call = channel.unary_stream("/splitleak.v1.Tap/Subscribe", request_serializer=lambda b: b,
                                response_deserializer=pb.TapItem.FromString)
    with pytest.raises(grpc.RpcError) as info:
        list(call(b"\xff\xff\xff", timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    channel.close()
