"""Models built on demand, each key once, two at a time, outside any lock other streams need.

A request for a model being built waits for that build alone (up to a timeout; the build
goes on and is kept for the next request); requests for built models never wait.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, TimeoutError as FutureTimeout
from typing import Callable, Generic, Hashable, TypeVar

import grpc

from cloud.errors import Refused

T = TypeVar("T")
WORKERS = 2  # builds at once; a build is CPU- and memory-heavy


class Builds(Generic[T]):
    """Up to `capacity` built values by key; past it, the least recently used built one is
    evicted (`evict`) or new keys are refused (RESOURCE_EXHAUSTED: state that must not be lost)."""

    def __init__(self, what: str, timeout: float, capacity: int, evict: bool = True):
        self.what, self.timeout, self.capacity, self.evict = what, timeout, capacity, evict
        self._futures: OrderedDict[Hashable, Future] = OrderedDict()
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(WORKERS)

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        future = self._future(key, build)
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout:
            raise Refused(f"building the {self.what} took longer than {self.timeout:g}s; it goes on, try again",
                          grpc.StatusCode.UNAVAILABLE) from None

    def values(self) -> list[T]:
        with self._lock:
            futures = list(self._futures.values())
        return [f.result() for f in futures if f.done() and f.exception() is None]

    def _future(self, key: Hashable, build: Callable[[], T]) -> Future:
        with self._lock:
            future = self._futures.get(key)
            if future is not None:
                self._futures.move_to_end(key)
                return future
            if len(self._futures) >= self.capacity and not (self.evict and self._evict_one()):
                raise Refused(f"the cloud holds {self.capacity} {self.what}s already; it takes no new one",
                              grpc.StatusCode.RESOURCE_EXHAUSTED)
            future = self._futures[key] = self._start(build)
        future.add_done_callback(lambda done: self._settled(key, done))
        return future

    def _start(self, build: Callable[[], T]) -> Future:
        """Run `build` on a daemon thread once a slot is free: a stuck build never holds up exit."""
        future: Future = Future()

        def run() -> None:
            with self._slots:
                future.set_running_or_notify_cancel()
                try:
                    future.set_result(build())
                except BaseException as err:  # noqa: BLE001 - handed to every waiter
                    future.set_exception(err)

        threading.Thread(target=run, name=f"build-{self.what}", daemon=True).start()
        return future

    def _evict_one(self) -> bool:
        """Drop the least recently used finished build (caller holds the lock)."""
        for key, future in self._futures.items():
            if future.done():
                del self._futures[key]
                return True
        return False

    def _settled(self, key: Hashable, future: Future) -> None:
        """A failed build is forgotten, so the next request tries again."""
        if future.exception() is not None:
            with self._lock:
                if self._futures.get(key) is future:
                    del self._futures[key]
