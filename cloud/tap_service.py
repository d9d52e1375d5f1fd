"""The Tap gRPC service: a remote subscriber receives what the cloud decoded."""
from __future__ import annotations

from typing import Iterator

import grpc

from cloud.tap import TapBus
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.wire.tapitems import to_tap_item
from splitleak.wire.tolerant import Malformed

DEFAULT_QUEUE, MAX_QUEUE = 256, 65536
POLL_S = 0.2  # how often an idle subscription checks that its client is still there


class TapService:
    def __init__(self, bus: TapBus):
        self.bus = bus

    def Subscribe(self, request: pb.TapRequest | Malformed, context: grpc.ServicerContext) -> Iterator[pb.TapItem]:
        if isinstance(request, Malformed):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        if request.queue_size > MAX_QUEUE:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"queue_size {request.queue_size} exceeds {MAX_QUEUE}")
        sub = self.bus.subscribe(request.queue_size or DEFAULT_QUEUE, frozenset(request.stream_ids))
        context.add_callback(lambda: self.bus.unsubscribe(sub))
        try:
            while context.is_active():
                event = sub.get(timeout=POLL_S)
                if event is not None:
                    yield to_tap_item(event.kind, event.meta, event.codec, event.tensors, sub.dropped)
        finally:
            self.bus.unsubscribe(sub)
