"""The Learning gRPC service: decode an update, check it, aggregate it, answer with the new state.

Identifiers and the model are checked at the door as for frames (num_classes 0 resolves to
the model's default before the federation is keyed, so every edge naming the same model
trains the same global state); an update is tapped only once it is accepted.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Iterable, Iterator

import grpc
import numpy as np
import torch

from cloud.builds import Builds
from cloud.errors import Refused, code_of
from cloud.federation import ACTIVATIONS, GRAD, Federation
from cloud.inference import always_open
from cloud.limits import ModelKey
from cloud.tails import TailCache
from cloud.tap import TapBus, TapEvent
from splitleak import codecs, learning
from splitleak.errors import SplitleakError
from splitleak.tensors import arrays, to_numpy
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.wire import serde
from splitleak.wire.channel import MAX_MESSAGE_BYTES, over_limit
from splitleak.wire.ids import SeqWindow, check_frame_ids
from splitleak.wire.tapitems import LABELS, add_named
from splitleak.wire.tolerant import Malformed

log = logging.getLogger(__name__)
MODES = ("fedsgd", "fedavg", "split")
MAX_BATCH, MAX_LR = 1024, 100.0
ANSWER_OVERHEAD = 1 << 16  # an answer's bytes besides its tensors' (names, shapes, dtypes), generously
MAX_FEDERATIONS = 8  # global models trained at once; each holds a model that must not be evicted


class LearningService:
    """One Federation per checked ModelKey; every accepted update is tapped."""

    def __init__(self, models: TailCache, tap: TapBus, round_size: int = 1, round_timeout: float = 10.0,
                 gate: Callable[[], None] = always_open, max_message_bytes: int = MAX_MESSAGE_BYTES):
        self.models, self.tap, self.gate = models, tap, gate
        self.max_message_bytes = max_message_bytes  # the answer carries the whole state: it must fit the wire
        self.round_size, self.round_timeout = round_size, round_timeout
        self._federations: Builds[Federation] = Builds("federation", models.limits.build_timeout, MAX_FEDERATIONS,
                                                       evict=False)
        self.updates = 0

    @property
    def federations(self) -> dict[ModelKey, Federation]:
        return {f.key: f for f in self._federations.values()}

    def Train(self, requests: Iterable[pb.ModelUpdate | Malformed], context: grpc.ServicerContext) -> Iterator[pb.UpdateAck]:
        seqs = SeqWindow()
        for request in requests:
            yield self.answer(request, seqs)

    def answer(self, request: pb.ModelUpdate | Malformed, seqs: SeqWindow | None = None) -> pb.UpdateAck:
        if isinstance(request, Malformed):
            ack = pb.UpdateAck(stream_id=request.stream_id, seq=request.seq)
            return _error(ack, grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        frame = request.meta.frame
        ack = pb.UpdateAck(stream_id=frame.stream_id, seq=frame.seq)
        seqs = seqs or SeqWindow()
        try:
            federation, tensors, labels = self._decode(request, seqs)
            self._apply(request, federation, tensors, labels, ack,
                        on_accept=lambda: self._publish_update(request, tensors, labels))
        except SplitleakError as err:
            return _error(ack, code_of(err), str(err))
        except Exception as err:  # a bug costs one update, never the server
            log.exception("update %r/%s failed", frame.stream_id[:64], frame.seq)
            return _error(ack, grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}")
        seqs.accept(frame.stream_id, frame.seq)
        self.updates += 1
        return ack

    def _decode(self, request: pb.ModelUpdate, seqs: SeqWindow):
        meta = request.meta
        check_frame_ids(meta.frame.stream_id, meta.frame.seq, meta.frame.capture_ts)
        seqs.check(meta.frame.stream_id, meta.frame.seq)
        self.gate()
        if meta.mode not in MODES:
            raise SplitleakError(f"unknown learning mode {meta.mode[:32]!r}; expected one of {', '.join(MODES)}")
        if not 1 <= meta.batch_size <= MAX_BATCH:
            raise SplitleakError(f"batch size {meta.batch_size} outside [1, {MAX_BATCH}]")
        if not (math.isfinite(meta.learning_rate) and 0 <= meta.learning_rate <= MAX_LR):
            raise SplitleakError(f"learning rate {meta.learning_rate} outside [0, {MAX_LR}]")
        federation = self._federation(meta.frame)
        tensors: dict[str, torch.Tensor] = {}
        for named in request.tensors:
            if named.name in tensors:
                raise SplitleakError(f"tensor {named.name[:64]!r} appears twice")
            tensors[named.name] = torch.from_numpy(codecs.decode(named.codec, named.tensor))
        labels = self._labels(request, federation) if request.HasField(LABELS) else None
        federation.check(meta.mode, tensors, list(meta.param_names))
        if meta.mode == "split":
            if ACTIVATIONS not in tensors or labels is None:
                raise SplitleakError("split learning sends 'activations' and labels")
            if tensors[ACTIVATIONS].shape[0] != meta.batch_size:
                raise SplitleakError(f"activations hold {tensors[ACTIVATIONS].shape[0]} samples, "
                                     f"batch_size says {meta.batch_size}")
        return federation, tensors, labels

    def _labels(self, request: pb.ModelUpdate, federation: Federation) -> torch.Tensor:
        labels = serde.from_proto(request.labels)
        classes = federation.model.num_classes
        batch = request.meta.batch_size
        if labels.dtype != np.int64 or labels.shape != (batch,) or labels.min() < 0 or labels.max() >= classes:
            raise SplitleakError(f"labels must be int64 class ids in [0, {classes}), shape [batch_size={batch}]")
        return torch.from_numpy(labels)

    def _federation(self, frame: pb.FrameMeta) -> Federation:
        key = self.models.key(frame)
        return self._federations.get(key, lambda: self._new_federation(key))

    def _new_federation(self, key: ModelKey) -> Federation:
        """Build the model and publish its starting state (runs on a build thread)."""
        federation = Federation(self.models.split_model(key), self.round_size, self.round_timeout,
                                on_state=self._publish_state, key=key)
        federation.announce()
        return federation

    def _apply(self, request, federation: Federation, tensors, labels, ack: pb.UpdateAck,
               on_accept: Callable[[], None]) -> None:
        meta = request.meta
        if meta.mode == "split":
            dz = federation.split_step(tensors[ACTIVATIONS], labels, meta.learning_rate, on_accept)
            add_named(ack.state.tensors, {GRAD: to_numpy(dz)})
            ack.round = ack.state.round = federation.round
            return
        self._check_answer_fits(federation)  # before the update is applied: a refused one changes nothing
        ack.round = ack.state.round = federation.submit(meta.mode, tensors, meta.learning_rate, on_accept)
        add_named(ack.state.tensors, arrays(federation.state()))

    def _check_answer_fits(self, federation: Federation) -> None:
        """SplitleakError (RESOURCE_EXHAUSTED) when the answer, the whole state, would exceed the message limit."""
        nbytes = sum(t.numel() * t.element_size() for t in learning.state(federation.module).values())
        if nbytes + ANSWER_OVERHEAD > self.max_message_bytes:
            raise Refused(over_limit("the cloud's answer (the new global state)", nbytes + ANSWER_OVERHEAD,
                                     self.max_message_bytes), grpc.StatusCode.RESOURCE_EXHAUSTED)

    def _publish_update(self, request: pb.ModelUpdate, tensors, labels) -> None:
        if not self.tap.active:
            return
        published = arrays(tensors)
        if labels is not None:
            published[LABELS] = to_numpy(labels)
        self.tap.publish(TapEvent("update", request.meta.frame.stream_id, request.meta, request.codec, published))

    def _publish_state(self, federation: Federation, round_: int, state: dict[str, torch.Tensor]) -> None:
        if not self.tap.active:
            return
        m = federation.model
        meta = pb.ModelState(round=round_)
        meta.model.model_id, meta.model.split_point, meta.model.weights = m.name, m.split, m.weights
        meta.model.input_size, meta.model.num_classes = m.size, m.num_classes
        meta.model.classifier = m.classifier or ""
        self.tap.publish(TapEvent("state", "", meta, None, arrays(state)))


def _error(ack: pb.UpdateAck, code: grpc.StatusCode, message: str) -> pb.UpdateAck:
    ack.error.code = code.value[0]
    ack.error.message = message
    return ack
