"""The Learning gRPC service: decode an update, check it, aggregate it, answer with the new state."""
from __future__ import annotations

import logging
import math
import threading
from typing import Iterable, Iterator

import grpc
import numpy as np
import torch

from cloud.federation import ACTIVATIONS, GRAD, Federation
from cloud.tails import TailCache
from cloud.tap import TapBus, TapEvent
from splitleak import codecs
from splitleak.errors import SplitleakError
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.wire import serde
from splitleak.wire.tapitems import LABELS, add_named
from splitleak.wire.tolerant import Malformed

log = logging.getLogger(__name__)
MODES = ("fedsgd", "fedavg", "split")
MAX_BATCH, MAX_LR = 1024, 100.0


class LearningService:
    """One Federation per (model, split, size, weights, classes); every update is tapped."""

    def __init__(self, models: TailCache, tap: TapBus, round_size: int = 1, round_timeout: float = 10.0):
        self.models, self.tap = models, tap
        self.round_size, self.round_timeout = round_size, round_timeout
        self.federations: dict[tuple, Federation] = {}
        self._lock = threading.Lock()
        self.updates = 0

    def Train(self, requests: Iterable[pb.ModelUpdate | Malformed], context: grpc.ServicerContext) -> Iterator[pb.UpdateAck]:
        for request in requests:
            yield self.answer(request)

    def answer(self, request: pb.ModelUpdate | Malformed) -> pb.UpdateAck:
        if isinstance(request, Malformed):
            return _error(pb.UpdateAck(), grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        frame = request.meta.frame
        ack = pb.UpdateAck(stream_id=frame.stream_id, seq=frame.seq)
        try:
            federation, tensors, labels = self._decode(request)
            self._publish_update(request, tensors, labels)
            self._apply(request, federation, tensors, labels, ack)
        except SplitleakError as err:
            return _error(ack, grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except Exception as err:  # a bug costs one update, never the server
            log.exception("update %s/%s failed", frame.stream_id, frame.seq)
            return _error(ack, grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}")
        self.updates += 1
        return ack

    def _decode(self, request: pb.ModelUpdate):
        meta = request.meta
        if not meta.frame.stream_id:
            raise SplitleakError("update has no stream id")
        if meta.mode not in MODES:
            raise SplitleakError(f"unknown learning mode {meta.mode!r}; expected one of {', '.join(MODES)}")
        if not 1 <= meta.batch_size <= MAX_BATCH:
            raise SplitleakError(f"batch size {meta.batch_size} outside [1, {MAX_BATCH}]")
        if not (math.isfinite(meta.learning_rate) and 0 <= meta.learning_rate <= MAX_LR):
            raise SplitleakError(f"learning rate {meta.learning_rate} outside [0, {MAX_LR}]")
        federation = self._federation(meta.frame)
        tensors: dict[str, torch.Tensor] = {}
        for named in request.tensors:
            if named.name in tensors:
                raise SplitleakError(f"tensor {named.name!r} appears twice")
            tensors[named.name] = torch.from_numpy(codecs.decode(named.codec, named.tensor))
        labels = self._labels(request, federation) if request.HasField(LABELS) else None
        federation.check(meta.mode, tensors, list(meta.param_names))
        if meta.mode == "split" and (ACTIVATIONS not in tensors or labels is None):
            raise SplitleakError("split learning sends 'activations' and labels")
        return federation, tensors, labels

    def _labels(self, request: pb.ModelUpdate, federation: Federation) -> torch.Tensor:
        labels = serde.from_proto(request.labels)
        classes = federation.model.num_classes
        if labels.dtype != np.int64 or labels.ndim != 1 or labels.min() < 0 or labels.max() >= classes:
            raise SplitleakError(f"labels must be int64 class ids in [0, {classes}), shape [B]")
        return torch.from_numpy(labels)

    def _federation(self, frame: pb.FrameMeta) -> Federation:
        key = (frame.model_id, frame.split_point, frame.input_size, frame.weights or "seed:0", frame.num_classes)
        with self._lock:
            if key not in self.federations:
                model = self.models.split_model(*key)
                federation = Federation(model, self.round_size, self.round_timeout, on_state=self._publish_state)
                self.federations[key] = federation
                federation.announce()
            return self.federations[key]

    def _apply(self, request, federation: Federation, tensors, labels, ack: pb.UpdateAck) -> None:
        meta = request.meta
        if meta.mode == "split":
            dz = federation.split_step(tensors[ACTIVATIONS], labels, meta.learning_rate)
            add_named(ack.state.tensors, {GRAD: dz.numpy()})
            ack.round = ack.state.round = federation.round
            return
        ack.round = ack.state.round = federation.submit(meta.mode, tensors, meta.learning_rate)
        add_named(ack.state.tensors, {k: v.numpy() for k, v in federation.state().items()})

    def _publish_update(self, request: pb.ModelUpdate, tensors, labels) -> None:
        if not self.tap.active:
            return
        arrays = {name: t.numpy() for name, t in tensors.items()}
        if labels is not None:
            arrays[LABELS] = labels.numpy()
        self.tap.publish(TapEvent("update", request.meta.frame.stream_id, request.meta, request.codec, arrays))

    def _publish_state(self, federation: Federation, round_: int, state: dict[str, torch.Tensor]) -> None:
        if not self.tap.active:
            return
        m = federation.model
        meta = pb.ModelState(round=round_)
        meta.model.model_id, meta.model.split_point, meta.model.weights = m.name, m.split, m.weights
        meta.model.input_size, meta.model.num_classes = m.size, m.num_classes
        self.tap.publish(TapEvent("state", "", meta, None, {k: v.numpy() for k, v in state.items()}))


def _error(ack: pb.UpdateAck, code: grpc.StatusCode, message: str) -> pb.UpdateAck:
    ack.error.code = code.value[0]
    ack.error.message = message
    return ack
