"""The recording strategy: Flower's rounds as splitleak state and update items.

The server knows what it sends (the global arrays, the train config) and what comes back (each
client's arrays and metrics); that is what it records. A client's update is its arrays minus the
global arrays of the round for the model's trained parameters, recorded with the learning rate,
local steps and batch size the server configured. A client may name its stream and first frame in
an optional "splitleak" ConfigRecord (`stream-id`, `first-seq`); otherwise the stream is its node
id and frames are numbered per node. A reply that does not fit the model is not recorded, counted,
and left to the wrapped strategy to judge: recording never breaks a Flower server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from splitleak import learning
from splitleak.errors import SplitleakError
from splitleak.models import SplitModel
from splitleak.recording import RecordingWriter
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.wire.ids import check_frame_ids
from splitleak.wire.tapitems import write_event

log = logging.getLogger(__name__)
STREAM_RECORD = "splitleak"  # the optional ConfigRecord a client names its frames in


@dataclass(frozen=True)
class TrainSettings:
    """What the server tells every client to do in a round (sent in the train config)."""

    lr: float = 0.1
    local_steps: int = 1
    batch_size: int = 1

    def config(self) -> dict[str, float | int]:
        return {"lr": self.lr, "local-steps": self.local_steps, "batch-size": self.batch_size}


class RecordingStrategy(Strategy):
    """Delegates every decision to `inner`; records the global model and every training reply."""

    def __init__(self, inner: Strategy, folder: str | Path, model: SplitModel, settings: TrainSettings,
                 arrayrecord_key: str = "arrays") -> None:
        self.inner, self.model, self.settings, self.key = inner, model, settings, arrayrecord_key
        self.names = learning.parameter_names(learning.trained_module(model))
        self.writer = RecordingWriter(folder, {"source": "flower", "model": model.name, "split": model.split,
                                               **settings.config()})
        self.global_arrays: dict[str, np.ndarray] = {}
        self.next_seq: dict[str, int] = {}
        self.recorded = self.refused = 0

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.global_arrays = _numpy(arrays)
        self._record_state(server_round - 1)
        config = ConfigRecord({**dict(config), **self.settings.config()})
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        for reply in replies:
            if reply.has_error():
                continue
            try:
                self._record_update(server_round - 1, reply)
            except SplitleakError as err:
                self.refused += 1
                log.warning("reply from node %s not recorded: %s", reply.metadata.src_node_id, err)
        return self.inner.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.inner.summary()

    def close(self) -> None:
        """Write the recording's summary (items, replies not recorded)."""
        self.writer.close(not_recorded=self.refused)

    def _model_meta(self, meta: pb.FrameMeta) -> None:
        m = self.model
        meta.model_id, meta.split_point, meta.weights = m.name, m.split, m.weights
        meta.input_size, meta.num_classes = m.size, m.num_classes

    def _record_state(self, round_: int) -> None:
        state = pb.ModelState(round=round_)
        self._model_meta(state.model)
        write_event(self.writer, "state", state, None, self.global_arrays)

    def _record_update(self, round_: int, reply: Message) -> None:
        if self.key not in reply.content.array_records:
            raise SplitleakError(f"the reply carries no ArrayRecord {self.key!r}")
        local = _numpy(reply.content.array_records[self.key])
        delta = {}
        for name in self.names:
            before, after = self.global_arrays.get(name), local.get(name)
            if after is None or before is None or after.shape != before.shape:
                raise SplitleakError(f"parameter {name!r} is missing or has the wrong shape")
            delta[name] = (after.astype(np.float32) - before.astype(np.float32))
            if not np.isfinite(delta[name]).all():
                raise SplitleakError(f"parameter {name!r} is not finite")
        meta = pb.LearningMeta(mode="fedavg", round=round_, batch_size=self.settings.batch_size,
                               learning_rate=self.settings.lr, local_steps=self.settings.local_steps)
        meta.param_names[:] = self.names
        frame = meta.frame
        frame.stream_id, frame.seq = self._frame_ids(reply)
        frame.capture_ts = time.time()
        check_frame_ids(frame.stream_id, frame.seq, frame.capture_ts)
        self._model_meta(frame)
        write_event(self.writer, "update", meta, None, delta)
        self.recorded += 1

    def _frame_ids(self, reply: Message) -> tuple[str, int]:
        """The client's own (stream, first frame) if it named them, else its node and a counter."""
        named = reply.content.config_records.get(STREAM_RECORD)
        stream = f"flower-node-{reply.metadata.src_node_id}"
        seq = None
        if named is not None:
            stream = str(named.get("stream-id", stream))
            seq = named.get("first-seq")
            if isinstance(seq, bool) or not isinstance(seq, int):
                raise SplitleakError(f"first-seq must be an integer, got {type(seq).__name__}")
        if seq is None:
            seq = self.next_seq.get(stream, 0)
        self.next_seq[stream] = seq + self.settings.batch_size
        return stream, seq


def _numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in arrays.items()}
