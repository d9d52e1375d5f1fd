"""Tap items <-> recording entries: one conversion shared by the local and remote recorders.

Three kinds travel on the tap: "frame" (features, meta FrameMeta), "update" (gradients or
deltas, meta LearningMeta) and "state" (a global model state, meta ModelState without its
tensors). Tensors are always the decoded float32 (labels int64) the cloud worked with.
A fourth, "status", carries no payload: the cloud's own recorder failed (meta: why).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf.json_format import MessageToDict

from splitleak.recording import RecordingWriter
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.wire import serde

LABELS = "labels"


def _dict(message: Any) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def meta_dict(kind: str, meta: Any, codec: pb.Codec | None) -> dict[str, Any]:
    """Flat JSON-able metadata: the wire's metadata fields plus how the tensors travelled."""
    if kind == "state":
        return {"round": meta.round, **_dict(meta.model)}
    out = _dict(meta)
    out["codec"] = _dict(codec) if codec is not None else {"name": "fp32"}
    return out


def write_event(writer: RecordingWriter, kind: str, meta: Any, codec: pb.Codec | None,
                tensors: dict[str, np.ndarray]) -> int:
    return writer.append(kind, meta_dict(kind, meta, codec), tensors)


def add_named(target: Any, tensors: dict[str, np.ndarray]) -> None:
    """Append decoded tensors to a repeated NamedTensor field (as fp32 / their own dtype)."""
    for name, array in tensors.items():
        serde.to_proto(array, target.add(name=name).tensor)


def to_tap_item(kind: str, meta: Any, codec: pb.Codec | None, tensors: dict[str, np.ndarray],
                dropped: int) -> pb.TapItem:
    """Wrap decoded tensors for a remote subscriber."""
    item = pb.TapItem(dropped=dropped)
    if kind == "frame":
        item.frame.meta.CopyFrom(meta)
        item.frame.codec.CopyFrom(codec)
        serde.to_proto(tensors["features"], item.frame.features)
    elif kind == "update":
        item.update.meta.CopyFrom(meta)
        item.update.codec.CopyFrom(codec)
        add_named(item.update.tensors, {k: v for k, v in tensors.items() if k != LABELS})
        if LABELS in tensors:
            serde.to_proto(tensors[LABELS], item.update.labels)
    else:
        item.state.round = meta.round
        item.state.model.CopyFrom(meta.model)
        add_named(item.state.tensors, tensors)
    return item


def from_tap_item(item: pb.TapItem) -> tuple[str, str, Any, pb.Codec | None, dict[str, np.ndarray]]:
    """(kind, stream_id, meta, codec, tensors) from a tap item, validating every tensor."""
    payload = item.WhichOneof("payload")
    if payload == "frame":
        frame = item.frame
        features = serde.from_proto(frame.features, allow_nonfinite=True)
        return "frame", frame.meta.stream_id, frame.meta, frame.codec, {"features": features}
    if payload == "update":
        update = item.update
        tensors = {t.name: serde.from_proto(t.tensor, allow_nonfinite=True) for t in update.tensors}
        if update.HasField(LABELS):
            tensors[LABELS] = serde.from_proto(update.labels)
        return "update", update.meta.frame.stream_id, update.meta, update.codec, tensors
    if payload == "state":
        tensors = {t.name: serde.from_proto(t.tensor, allow_nonfinite=True) for t in item.state.tensors}
        return "state", "", item.state, None, tensors
    if item.recorder_error:
        return "status", "", item.recorder_error, None, {}
    raise serde.WireError("tap item carries no payload")
