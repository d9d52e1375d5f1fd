"""Assemble the cloud: inference, learning and tap services, tokens, TLS, limits, optional recorder."""
from __future__ import annotations

import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc

from cloud.auth import TokenInterceptor
from cloud.guards import first_message_within
from cloud.inference import InferenceService, always_open
from cloud.learning import LearningService
from cloud.limits import ModelLimits
from cloud.recorder import Recorder
from cloud.tails import TailCache
from cloud.tap import TapBus
from cloud.tap_service import TapService
from splitleak.errors import SplitleakError
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.wire.channel import (
    MAX_MESSAGE_BYTES,
    NO_REUSEPORT,
    TlsFiles,
    check_message_bytes,
    check_target,
    message_options,
    server_credentials,
)
from splitleak.wire.tolerant import tolerant

MAX_WORKERS = 64  # one per open stream or tap subscription
# Dead peers are found by keepalive pings; a connection with no call is closed after a minute.
SERVER_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.max_connection_idle_ms", 60_000),
)


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
    # what a peer may ask the cloud to build (see cloud.limits)
    allow_models: tuple[str, ...] = ()  # empty: every model of the zoo
    max_classes: int = 1000
    max_input_size: int = 512
    max_classifier_params: int = ModelLimits.max_classifier_params
    allow_downloads: bool = False
    build_timeout: float = 60.0
    first_message_timeout: float = 10.0  # a streaming call that sends nothing this long is cancelled
    max_message_bytes: int = MAX_MESSAGE_BYTES  # gRPC's limit both ways; the learning answer is checked against it

    @property
    def limits(self) -> ModelLimits:
        return ModelLimits(tuple(self.allow_models), self.max_classes, self.max_input_size, self.allow_downloads,
                           self.build_timeout, self.max_classifier_params)


class CloudServer:
    """A running cloud; `port` is the bound port (useful with :0)."""

    def __init__(self, config: CloudConfig):
        if config.token and config.tap_token == config.token:
            raise SplitleakError("--tap-token must differ from --token: the tap reads every stream")
        _check_config(config)
        check_target(config.listen)
        self.config = config
        self.bus = TapBus()
        self.recorder = Recorder(self.bus, config.record, _public(config)) if config.record else None
        gate = self.recorder.admit if self.recorder else always_open
        models = TailCache(config.device, config.weights, config.limits)
        self.inference = InferenceService(models, self.bus, config.device, gate=gate)
        self.learning = LearningService(models, self.bus, config.round_size, config.round_timeout, gate=gate,
                                        max_message_bytes=config.max_message_bytes)
        tap = TapService(self.bus, status=lambda: self.recorder.failure if self.recorder else None)
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="cloud"),
            handlers=[_handlers(self.inference, self.learning, tap, config.first_message_timeout)],
            interceptors=[TokenInterceptor(config.token, config.tap_token)],
            options=message_options(config.max_message_bytes) + NO_REUSEPORT + SERVER_OPTIONS,
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
        """Stop serving and close the recording; SplitleakError if the recording failed on the way."""
        self.server.stop(grace).wait()
        if self.recorder:
            self.recorder.close()
            if self.recorder.failure:
                raise SplitleakError(f"{self.recorder.failure}; {self.recorder.not_written} accepted items not "
                                     f"written, {self.recorder.refused} refused (see summary.json)")

    def wait(self) -> None:
        self.server.wait_for_termination()

    def __enter__(self) -> "CloudServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(0)


def _check_config(config: CloudConfig) -> None:
    from splitleak.models import model_names

    unknown = sorted(set(config.allow_models) - set(model_names()))
    if unknown:
        raise SplitleakError(f"--allow-models: unknown model {unknown[0]!r}; known: {', '.join(model_names())}")
    check_message_bytes(config.max_message_bytes)
    for name, value in (("--max-classes", config.max_classes), ("--max-input-size", config.max_input_size),
                        ("--max-classifier-params", config.max_classifier_params)):
        if value < 1:
            raise SplitleakError(f"{name} must be at least 1, got {value}")
    for name, value in (("--build-timeout", config.build_timeout),
                        ("first-message timeout", config.first_message_timeout)):
        if not 0 < value < float("inf"):
            raise SplitleakError(f"{name} must be a positive number of seconds, got {value}")


def _handlers(inference: InferenceService, learning: LearningService, tap: TapService,
              first_message_s: float) -> grpc.GenericRpcHandler:
    infer = grpc.stream_stream_rpc_method_handler(
        first_message_within(inference.Infer, first_message_s),
        request_deserializer=tolerant(pb.FeatureFrame, meta_path=(1,)),
        response_serializer=pb.FrameResult.SerializeToString,
    )
    train = grpc.stream_stream_rpc_method_handler(
        first_message_within(learning.Train, first_message_s),
        request_deserializer=tolerant(pb.ModelUpdate, meta_path=(1, 1)),
        response_serializer=pb.UpdateAck.SerializeToString,
    )
    subscribe = grpc.stream_stream_rpc_method_handler(  # a unary request, read as a stream: see TapService
        first_message_within(tap.Subscribe, first_message_s),
        request_deserializer=tolerant(pb.TapRequest),
        response_serializer=pb.TapItem.SerializeToString,
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
            "round_timeout": config.round_timeout, "allow_models": list(config.allow_models),
            "max_classes": config.max_classes, "max_input_size": config.max_input_size,
            "max_classifier_params": config.max_classifier_params}
