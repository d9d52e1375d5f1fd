"""The tap bus: every decoded item goes to every subscriber through a bounded queue.

Publishing never blocks: a full queue loses its oldest item and counts the loss, so a slow
subscriber can never slow the stream it watches. A queue is bounded in items and in bytes.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TapEvent:
    """What the cloud decoded: kind, the wire metadata (proto messages), float32 tensors."""

    kind: str  # "frame" | "update" | "state" | "status" (the cloud's recorder failed: meta is why)
    stream_id: str
    meta: Any  # splitleak.v1 FrameMeta, LearningMeta, or ModelState (round and model, no tensors)
    codec: Any  # splitleak.v1 Codec: how the tensors travelled (None for states)
    tensors: dict[str, np.ndarray]

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


MAX_QUEUE_BYTES = 1 << 30  # what one subscriber's queue may hold, whatever its item count


class Subscriber:
    """A bounded drop-oldest queue with a filter on stream ids."""

    def __init__(self, maxsize: int, stream_ids: frozenset[str] = frozenset(), max_bytes: int = MAX_QUEUE_BYTES):
        if maxsize < 1:
            raise ValueError("a tap queue holds at least one item")
        self._items: deque[TapEvent] = deque()
        self._cond = threading.Condition()
        self.maxsize, self.max_bytes = maxsize, max_bytes
        self.stream_ids = stream_ids
        self.queued_bytes = 0
        self.dropped = 0
        self.delivered = 0
        self.closed = False

    def offer(self, event: TapEvent) -> None:
        if self.stream_ids and event.stream_id and event.stream_id not in self.stream_ids:
            return  # events of no stream (global model states) go to every subscriber
        with self._cond:
            self._items.append(event)
            self.queued_bytes += event.nbytes
            while len(self._items) > self.maxsize or (self.queued_bytes > self.max_bytes and len(self._items) > 1):
                self.queued_bytes -= self._items.popleft().nbytes
                self.dropped += 1
            self._cond.notify()

    def get(self, timeout: float | None = None) -> TapEvent | None:
        """The oldest queued event, or None after `timeout` seconds or once closed."""
        with self._cond:
            if not self._items and not self.closed:
                self._cond.wait(timeout)
            if not self._items:
                return None
            self.delivered += 1
            event = self._items.popleft()
            self.queued_bytes -= event.nbytes
            return event

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class TapBus:
    """Fan-out to subscribers; the subscriber list is copied on change, read lock-free."""

    def __init__(self) -> None:
        self._subscribers: tuple[Subscriber, ...] = ()
        self._lock = threading.Lock()

    def subscribe(self, maxsize: int = 256, stream_ids: frozenset[str] = frozenset(),
                  max_bytes: int = MAX_QUEUE_BYTES) -> Subscriber:
        sub = Subscriber(maxsize, stream_ids, max_bytes)
        with self._lock:
            self._subscribers += (sub,)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.close()
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers if s is not sub)

    @property
    def active(self) -> bool:
        return bool(self._subscribers)

    def publish(self, event: TapEvent) -> None:
        for sub in self._subscribers:
            sub.offer(event)
