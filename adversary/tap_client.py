"""Record a cloud's tap remotely: subscribe, write every item as the cloud decoded it."""
from __future__ import annotations

import logging
import threading
from typing import Callable

import grpc

from splitleak.errors import SplitleakError
from splitleak.recording import RecordedItem, RecordingWriter
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.wire.channel import MAX_MESSAGE_BYTES, TlsFiles, auth_metadata, open_channel
from splitleak.wire.diagnose import why_unreachable
from splitleak.wire.tapitems import from_tap_item, meta_dict

log = logging.getLogger(__name__)


class TapRecorder:
    """Subscribes to the tap and appends items to a recording until stopped or `limit` items."""

    def __init__(self, cloud: str, folder: str, *, tls: TlsFiles = TlsFiles(), token: str | None = None,
                 stream_ids: tuple[str, ...] = (), queue_size: int = 0, limit: int | None = None,
                 on_item: Callable[[], None] = lambda: None, max_message_bytes: int = MAX_MESSAGE_BYTES):
        self.channel = open_channel(cloud, tls, max_message_bytes)  # a vit_b_16 update is over the default
        self.cloud, self.tls, self.max_message_bytes = cloud, tls, max_message_bytes
        self.request = pb.TapRequest(stream_ids=list(stream_ids), queue_size=queue_size)
        self.metadata = auth_metadata(token)
        self.writer = RecordingWriter(folder, {"cloud": cloud, "stream_ids": list(stream_ids), "via": "tap"})
        self.limit, self.on_item = limit, on_item
        self.dropped = 0
        self.cloud_error: str | None = None  # the cloud's own recorder failed: why (its frames stop)
        self._call = None
        self._stopped = threading.Event()
        self.subscribed = threading.Event()  # set once the cloud has the subscription: no item is missed after

    def run(self, connect_timeout: float = 10.0) -> int:
        """Record until stop(), the limit, or the cloud ends the subscription; returns items written."""
        try:
            grpc.channel_ready_future(self.channel).result(timeout=connect_timeout)
        except grpc.FutureTimeoutError:
            reason = why_unreachable(self.cloud, self.tls)
            raise SplitleakError(f"cloud {self.cloud} unreachable for {connect_timeout:g}s: {reason}") from None
        subscribe = self.channel.unary_stream("/splitleak.v1.Tap/Subscribe",
                                              request_serializer=pb.TapRequest.SerializeToString,
                                              response_deserializer=pb.TapItem.FromString)
        self._call = subscribe(self.request, metadata=self.metadata)
        try:
            self._call.initial_metadata()  # the cloud sends its headers once the subscription is in place
            self.subscribed.set()
            for item in self._call:
                self._write(item)
                if self.limit is not None and self.writer.count >= self.limit:
                    break
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and not self._stopped.is_set():
                raise SplitleakError(f"tap on {self.cloud}: an item is over the tap's message limit of "
                                     f"{self.max_message_bytes / 2**20:g} MiB: raise --max-message-mb "
                                     f"(as the cloud's)") from None
            if not self._stopped.is_set() and err.code() != grpc.StatusCode.CANCELLED:
                raise SplitleakError(f"tap on {self.cloud} failed: {err.code().name}: {err.details()}") from None
        finally:
            self.close()
        return self.writer.count

    def _write(self, item: pb.TapItem) -> None:
        kind, _, meta, codec, tensors = from_tap_item(item)
        self.dropped = item.dropped
        if item.recorder_error and item.recorder_error != self.cloud_error:
            self.cloud_error = item.recorder_error
            log.warning("cloud %s: %s", self.cloud, self.cloud_error)
        if kind == "status":
            return
        flat = meta_dict(kind, meta, codec)
        index = self.writer.append(kind, flat, tensors)
        self.on_item()
        self._recorded(RecordedItem(index, kind, flat, tensors))

    def _recorded(self, item: RecordedItem) -> None:
        """Called with each item just written (tensors in memory); a subclass hands it on."""

    def stop(self) -> None:
        self._stopped.set()
        if self._call is not None:
            self._call.cancel()

    def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
        self.writer.dropped = self.dropped
        self.writer.close(cloud=self.cloud, **({"cloud_error": self.cloud_error} if self.cloud_error else {}))
        self.channel.close()
