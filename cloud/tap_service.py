"""The Tap gRPC service: a remote subscriber receives what the cloud decoded.

Subscribe is served as a request-streaming handler (the client still sends its one
TapRequest, as a unary call does): the server reads the request itself, under the same
first-message deadline as every other call, instead of parking a worker until it arrives.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

import grpc

from cloud.tap import TapBus
from splitleak.errors import SplitleakError
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.wire.ids import check_stream_id
from splitleak.wire.tapitems import to_tap_item
from splitleak.wire.tolerant import Malformed

DEFAULT_QUEUE, MAX_QUEUE = 256, 65536
MAX_STREAM_FILTER = 64
POLL_S = 0.2  # how often an idle subscription checks that its client is still there


class TapService:
    """`status()` is the cloud's recorder failure (None while it records), carried by every item."""

    def __init__(self, bus: TapBus, status: Callable[[], str | None] = lambda: None):
        self.bus = bus
        self.status = status

    def Subscribe(self, requests: Iterable[pb.TapRequest | Malformed], context: grpc.ServicerContext) -> Iterator[pb.TapItem]:
        request = next(iter(requests), None)
        if request is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no TapRequest sent")
        reason = _invalid(request)
        if reason:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, reason)
        sub = self.bus.subscribe(request.queue_size or DEFAULT_QUEUE, frozenset(request.stream_ids))
        context.add_callback(lambda: self.bus.unsubscribe(sub))
        context.send_initial_metadata(())  # headers now: the client knows it misses nothing from here on
        try:
            while context.is_active():
                event = sub.get(timeout=POLL_S)
                if event is not None:
                    yield self._item(event, sub.dropped)
        finally:
            self.bus.unsubscribe(sub)

    def _item(self, event, dropped: int) -> pb.TapItem:
        if event.kind == "status":
            return pb.TapItem(dropped=dropped, recorder_error=event.meta)
        item = to_tap_item(event.kind, event.meta, event.codec, event.tensors, dropped)
        item.recorder_error = self.status() or ""
        return item


def _invalid(request: pb.TapRequest | Malformed) -> str | None:
    if isinstance(request, Malformed):
        return request.reason
    if request.queue_size > MAX_QUEUE:
        return f"queue_size {request.queue_size} exceeds {MAX_QUEUE}"
    if len(request.stream_ids) > MAX_STREAM_FILTER:
        return f"at most {MAX_STREAM_FILTER} stream ids per subscription"
    try:
        for stream_id in request.stream_ids:
            check_stream_id(stream_id)
    except SplitleakError as err:
        return str(err)
    return None
