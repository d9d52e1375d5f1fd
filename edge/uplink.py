"""The edge's gRPC uplink: sends what leaves the link emulator, reads the answers, reconnects.

Frames handed to a call that then breaks are counted lost (the edge cannot know whether
the cloud saw them); frames still inside the link emulator wait for the next connection,
and so do the frames of a call the cloud refused before reading any (RESOURCE_EXHAUSTED:
all its call slots are taken).
"""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import grpc

from edge.link import LinkClosed, LinkEmulator
from edge.stats import StreamStats
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.wire.channel import MAX_MESSAGE_BYTES, TlsFiles, auth_metadata, open_channel
from splitleak.wire.diagnose import why_unreachable

FATAL = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.INVALID_ARGUMENT,
}
CONNECT_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Method:
    """A bidirectional streaming RPC and how to read a sequence number off its messages."""

    path: str
    request: type
    response: type
    seq_of: Callable[[Any], int]


INFER = Method("/splitleak.v1.SplitInference/Infer", pb.FeatureFrame, pb.FrameResult, lambda m: m.meta.seq)
TRAIN = Method("/splitleak.v1.Learning/Train", pb.ModelUpdate, pb.UpdateAck, lambda m: m.meta.frame.seq)
BACKOFF_START_S, BACKOFF_MAX_S = 0.1, 2.0


class Uplink:
    """Runs on its own thread until the link is closed and drained, or the cloud is gone for good."""

    def __init__(self, target: str, link: LinkEmulator, stats: StreamStats, *, method: Method = INFER,
                 tls: TlsFiles = TlsFiles(), token: str | None = None, retry_for: float = 30.0,
                 on_answer: Callable[[Any], None] = lambda answer: None, max_message_bytes: int = MAX_MESSAGE_BYTES):
        self.target, self.link, self.stats, self.method = target, link, stats, method
        self.max_message_bytes = max_message_bytes
        self.tls, self.token, self.retry_for = tls, token, retry_for
        self.on_answer = on_answer
        self.error: str | None = None  # why the uplink gave up, if it did
        self._answers = 0  # answers received over every call
        self._lock = threading.Lock()
        self._call: _CallState | None = None
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)

    def start(self) -> "Uplink":
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        down_since: float | None = None  # reset only by a call the cloud answered: connecting is not enough
        attempts, backoff, answered = 0, BACKOFF_START_S, 0
        while True:
            channel = open_channel(self.target, self.tls, self.max_message_bytes)
            try:
                grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT_S)
                if attempts:
                    self.stats.reconnects += 1
                answered = self._answers
                self._stream(channel)
                return
            except grpc.FutureTimeoutError:
                pass
            except grpc.RpcError as err:
                if too_large(err):  # resending cannot help: the limit is the operator's to raise
                    self._drop_handed()
                    return self._give_up(f"a message to or from cloud {self.target} is over a message limit "
                                         f"({err.details()}): raise --max-message-mb on both splitleak edge and "
                                         f"splitleak cloud")
                if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    self._requeue_handed()
                else:
                    self._drop_handed()
                if err.code() in FATAL:
                    return self._give_up(f"cloud {self.target} refused the stream: {err.details()}")
                if self._answers > answered:  # the cloud served this call: a fresh retry window
                    down_since, backoff = None, BACKOFF_START_S
            finally:
                channel.close()
            attempts += 1
            down_since = down_since or time.time()
            if time.time() - down_since > self.retry_for:
                return self._give_up(f"cloud {self.target} unreachable after {attempts} attempts over "
                                     f"{self.retry_for:g}s: {why_unreachable(self.target, self.tls)}")
            time.sleep(backoff)
            backoff = min(2 * backoff, BACKOFF_MAX_S)

    def _stream(self, channel: grpc.Channel) -> None:
        self._call = call = _CallState()
        requests = self._requests(call)
        first = next(requests, None)  # open the call once there is a frame: the cloud cancels silent calls
        if first is None:
            return
        rpc = channel.stream_stream(self.method.path, request_serializer=self.method.request.SerializeToString,
                                    response_deserializer=self.method.response.FromString)
        for answer in rpc(itertools.chain([first], requests), metadata=auth_metadata(self.token)):
            error = answer.error.message if answer.HasField("error") else None
            self._answers += 1
            if self.stats.on_answer(answer.seq, error):
                self.on_answer(answer)

    def _requests(self, call: "_CallState") -> Iterator[Any]:
        """Feeds one call; a call that broke stops pulling, and gives back what it pulled too late."""
        while True:
            try:
                frame = self.link.receive(timeout=0.1)
            except LinkClosed:
                return
            with self._lock:
                if not call.alive:
                    if frame is not None:
                        self.link.requeue(frame)
                    return
                if frame is None:
                    continue
                call.handed[self.method.seq_of(frame)] = frame
            yield frame

    def _drop_handed(self) -> None:
        """The call broke: what it was handed may or may not have reached the cloud, so it is lost."""
        call = self._call
        if call is None:
            return
        with self._lock:
            call.alive = False
        self.stats.on_lost(call.handed)

    def _requeue_handed(self) -> None:
        """The cloud refused the call before reading it: its frames go out on the next call, in order."""
        call = self._call
        if call is None:
            return
        with self._lock:
            call.alive = False
            for frame in reversed(list(call.handed.values())):  # each goes back to the head
                self.link.requeue(frame)

    def _give_up(self, reason: str) -> None:
        self.error = reason
        self.link.close()


def too_large(err: grpc.RpcError) -> bool:
    """gRPC refused a message over a send or receive limit (either end's)."""
    details = (err.details() or "").lower()
    return err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details


class _CallState:
    """One gRPC call's view: whether it still runs, and which frames it was handed."""

    def __init__(self) -> None:
        self.alive = True
        self.handed: dict[int, Any] = {}  # seq -> message
