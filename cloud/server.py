"""Assemble the cloud: inference + tap services, tokens, TLS, optional recorder."""
from __future__ import annotations

import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc

from cloud.auth import TokenInterceptor
from cloud.inference import InferenceService
from cloud.learning import LearningService
from cloud.recorder import Recorder
from cloud.tails import TailCache
from cloud.tap import TapBus
from cloud.tap_service import TapService
from splitleak.errors import SplitleakError
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.wire.channel import OPTIONS, TlsFiles, check_target, server_credentials
from splitleak.wire.tolerant import tolerant

MAX_WORKERS = 64  # one per open stream or tap subscription


@dataclass
class CloudConfig:
    listen: str = "127.0.0.1:0"
    record: str | None = None
    device: str = "cpu"
    weights: tuple[str, ...] = ()
    token: str | None = None
    tap_token: str | None = None
    tls: TlsFiles = field(default_factory=TlsFiles)
    round_size: int = 1  # edges whose updates make one learning round
    round_timeout: float = 10.0  # close a round with fewer edges after this many seconds


class CloudServer:
    """A running cloud; `port` is the bound port (useful with :0)."""

    def __init__(self, config: CloudConfig):
        if config.token and config.tap_token == config.token:
            raise SplitleakError("--tap-token must differ from --token: the tap reads every stream")
        check_target(config.listen)
        self.config = config
        self.bus = TapBus()
        models = TailCache(config.device, config.weights)
        self.inference = InferenceService(models, self.bus, config.device)
        self.learning = LearningService(models, self.bus, config.round_size, config.round_timeout)
        self.recorder = Recorder(self.bus, config.record, _public(config)) if config.record else None
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="cloud"),
            handlers=[_handlers(self.inference, self.learning, TapService(self.bus))],
            interceptors=[TokenInterceptor(config.token, config.tap_token)],
            options=OPTIONS,
            maximum_concurrent_rpcs=MAX_WORKERS,
        )
        self.port = self._bind()
        self.server.start()
        self.started = time.time()

    def _bind(self) -> int:
        try:
            if self.config.tls.enabled:
                return self.server.add_secure_port(self.config.listen, server_credentials(self.config.tls))
            return self.server.add_insecure_port(self.config.listen)
        except RuntimeError as err:
            raise SplitleakError(f"cannot listen on {self.config.listen}: {err}") from None

    def stop(self, grace: float | None = 1.0) -> None:
        self.server.stop(grace).wait()
        if self.recorder:
            self.recorder.close()

    def wait(self) -> None:
        self.server.wait_for_termination()

    def __enter__(self) -> "CloudServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(0)


def _handlers(inference: InferenceService, learning: LearningService, tap: TapService) -> grpc.GenericRpcHandler:
    infer = grpc.stream_stream_rpc_method_handler(
        inference.Infer, request_deserializer=tolerant(pb.FeatureFrame), response_serializer=pb.FrameResult.SerializeToString
    )
    train = grpc.stream_stream_rpc_method_handler(
        learning.Train, request_deserializer=tolerant(pb.ModelUpdate), response_serializer=pb.UpdateAck.SerializeToString
    )
    subscribe = grpc.unary_stream_rpc_method_handler(
        tap.Subscribe, request_deserializer=tolerant(pb.TapRequest), response_serializer=pb.TapItem.SerializeToString
    )
    return _Generic({"/splitleak.v1.SplitInference/Infer": infer, "/splitleak.v1.Learning/Train": train,
                     "/splitleak.v1.Tap/Subscribe": subscribe})


class _Generic(grpc.GenericRpcHandler):
    def __init__(self, methods: dict[str, grpc.RpcMethodHandler]):
        self.methods = methods

    def service(self, details):
        return self.methods.get(details.method)


def _public(config: CloudConfig) -> dict:
    """The config that goes into a recording's header: no secrets."""
    return {"listen": config.listen, "device": config.device, "weights": list(config.weights),
            "token": bool(config.token), "tls": config.tls.enabled, "round_size": config.round_size,
            "round_timeout": config.round_timeout}
