"""Raw clients for the wire tests: messages built from the proto alone, calls without the edge."""
from __future__ import annotations

import threading

import grpc
import numpy as np
import torch

from splitleak import codecs, learning
from splitleak.models import build_split_model
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.wire.channel import auth_metadata, open_channel

INFER = "/splitleak.v1.SplitInference/Infer"
TRAIN = "/splitleak.v1.Learning/Train"
SUBSCRIBE = "/splitleak.v1.Tap/Subscribe"
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
LENET_CONV2 = (1, 12, 8, 8)


def frame(seq: int, stream: str = "s", shape=LENET_CONV2, value: float = 0.5, codec: str = "fp32",
          **meta) -> pb.FeatureFrame:
    """A lenet/conv2 frame at 32 px that the cloud accepts, unless `meta` changes it."""
    message = pb.FeatureFrame()
    m = message.meta
    m.stream_id, m.seq, m.capture_ts = stream, seq, 1.0
    m.model_id, m.split_point, m.input_size, m.weights = "lenet", "conv2", 32, "seed:0"
    for name, v in meta.items():
        setattr(m, name, v)
    message.codec.CopyFrom(codecs.encode(codec, np.full(shape, value, np.float32), message.features))
    return message


def update(seq: int = 0, stream: str = "s", scale: float = 1.0, lr: float = 0.1, **meta) -> pb.ModelUpdate:
    """A fedsgd gradient of lenet (split none, 32 px) times `scale`, encoded fp32."""
    model = build_split_model("lenet", "none", size=32)
    grads = learning.gradients(model.tail, torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(seq)),
                               torch.tensor([0]))
    message = pb.ModelUpdate()
    m = message.meta
    m.frame.stream_id, m.frame.seq, m.frame.model_id, m.frame.split_point = stream, seq, "lenet", "none"
    m.frame.weights, m.frame.input_size = "seed:0", 32
    for name, v in meta.items():
        setattr(m.frame, name, v)
    m.mode, m.batch_size, m.learning_rate = "fedsgd", 1, lr
    m.param_names[:] = list(grads)
    for name, g in grads.items():
        named = message.tensors.add(name=name)
        named.codec.CopyFrom(codecs.encode("fp32", g.numpy() * np.float32(scale), named.tensor))
    return message


def call(port: int, method: str, messages, token: str | None = None, timeout: float = 30, response=None):
    """Send `messages` (protos or raw bytes) on one streaming call; every answer, in order."""
    response = response or {INFER: pb.FrameResult, TRAIN: pb.UpdateAck, SUBSCRIBE: pb.TapItem}[method]
    channel = open_channel(f"127.0.0.1:{port}")
    try:
        rpc = channel.stream_stream(method, request_serializer=_bytes, response_deserializer=response.FromString)
        return list(rpc(iter(messages), timeout=timeout, metadata=auth_metadata(token)))
    finally:
        channel.close()


def _bytes(message) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


class IdleCalls:
    """`count` streaming calls that send nothing until released (over channels of `per_channel` calls)."""

    def __init__(self, port: int, count: int, token: str | None = None, per_channel: int = 10):
        self.release = threading.Event()
        self.codes: list[grpc.StatusCode] = []
        self._lock = threading.Lock()
        self.channels = [open_channel(f"127.0.0.1:{port}") for _ in range(-(-count // per_channel))]
        self.threads = [threading.Thread(target=self._one, args=(self.channels[i // per_channel], token), daemon=True)
                        for i in range(count)]
        for thread in self.threads:
            thread.start()

    def _requests(self):
        self.release.wait()
        return
        yield  # a generator that yields nothing

    def _one(self, channel: grpc.Channel, token: str | None) -> None:
        rpc = channel.stream_stream(INFER, request_serializer=_bytes, response_deserializer=pb.FrameResult.FromString)
        try:
            list(rpc(self._requests(), metadata=auth_metadata(token), timeout=60))
            code = grpc.StatusCode.OK
        except grpc.RpcError as err:
            code = err.code()
        with self._lock:
            self.codes.append(code)

    def close(self) -> list[grpc.StatusCode]:
        """Release the calls that are still open; the status code each call ended with."""
        self.release.set()
        for thread in self.threads:
            thread.join(30)
        for channel in self.channels:
            channel.close()
        return self.codes
