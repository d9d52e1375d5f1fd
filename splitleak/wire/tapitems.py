"""Tap items <-> recording entries: one conversion shared by the local and remote recorders."""
from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf.json_format import MessageToDict

from splitleak.recording import RecordingWriter
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.wire import serde

LABELS = "labels"


def meta_dict(meta: Any, codec: pb.Codec) -> dict[str, Any]:
    """Flat JSON-able metadata: the wire's metadata fields plus how the tensors travelled."""
    out = MessageToDict(meta, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    out["codec"] = MessageToDict(codec, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    return out


def write_event(writer: RecordingWriter, kind: str, meta: Any, codec: pb.Codec, tensors: dict[str, np.ndarray]) -> int:
    return writer.append(kind, meta_dict(meta, codec), tensors)


def to_tap_item(kind: str, meta: Any, codec: pb.Codec, tensors: dict[str, np.ndarray], dropped: int) -> pb.TapItem:
    """Wrap decoded float32 tensors for a remote subscriber."""
    item = pb.TapItem(dropped=dropped)
    if kind == "frame":
        item.frame.meta.CopyFrom(meta)
        item.frame.codec.CopyFrom(codec)
        serde.to_proto(tensors["features"], item.frame.features)
        return item
    item.update.meta.CopyFrom(meta)
    item.update.codec.CopyFrom(codec)
    for name, array in tensors.items():
        if name == LABELS:
            serde.to_proto(array, item.update.labels)
        else:
            serde.to_proto(array, item.update.tensors.add(name=name).tensor)
    return item


def from_tap_item(item: pb.TapItem) -> tuple[str, str, Any, pb.Codec, dict[str, np.ndarray]]:
    """(kind, stream_id, meta, codec, tensors) from a tap item, validating every tensor."""
    if item.WhichOneof("payload") == "frame":
        frame = item.frame
        features = serde.from_proto(frame.features, allow_nonfinite=True)
        return "frame", frame.meta.stream_id, frame.meta, frame.codec, {"features": features}
    update = item.update
    tensors = {t.name: serde.from_proto(t.tensor, allow_nonfinite=True) for t in update.tensors}
    if update.HasField(LABELS):
        tensors[LABELS] = serde.from_proto(update.labels)
    return "update", update.meta.frame.stream_id, update.meta, update.codec, tensors
