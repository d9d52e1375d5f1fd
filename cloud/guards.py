"""Bound what an idle caller can hold: a streaming call must send its first message in time."""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Iterable, Iterator

import grpc

log = logging.getLogger(__name__)


def first_message_within(behavior: Callable[[Iterable[Any], grpc.ServicerContext], Any],
                         seconds: float) -> Callable[[Iterable[Any], grpc.ServicerContext], Any]:
    """Wrap a request-streaming handler: a call that sends nothing for `seconds` is cancelled,
    which frees its slot and its worker thread (the caller sees CANCELLED)."""

    def guarded(requests: Iterable[Any], context: grpc.ServicerContext) -> Any:
        return behavior(_watched(requests, context, seconds), context)

    return guarded


def _watched(requests: Iterable[Any], context: grpc.ServicerContext, seconds: float) -> Iterator[Any]:
    lock, first = threading.Lock(), [False]

    def expire() -> None:
        with lock:
            if first[0]:
                return
        log.info("cancelling a call that sent nothing for %gs", seconds)
        context.cancel()

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        for request in requests:
            with lock:
                first[0] = True
            timer.cancel()
            yield request
    finally:
        timer.cancel()
