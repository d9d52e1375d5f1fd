"""What the edge does when the link cannot carry the stream: `--on-congestion block|skip|adapt`.

The signal is the edge's own ledger, so it holds for any link backend: frames sent and not yet
answered (`pending`). The link's window already blocks the producer past `window` frames.

- block: today's behaviour; every frame is sent, queueing delay grows as it must.
- skip: a frame that arrives while `max_pending` frames await an answer is not sent (captured,
  counted `skipped`): latency stays bounded, frames go missing.
- adapt: the codec steps down the ladder fp32 -> fp16 -> int8 (from `--codec` down) to the finest one
  whose demand (bytes per frame at that codec x frames produced per second) the measured delivery
  rate (bytes answered per second over the last answers) carries; before any estimate exists it
  steps down one level whenever `max_pending` is reached.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable

from splitleak.codecs import NAMES as CODECS
from splitleak.errors import SplitleakError

POLICIES = ("block", "skip", "adapt")
LADDER = ("fp32", "fp16", "int8")
PAYLOAD = {"fp32": 1.0, "fp16": 0.5, "int8": 0.25}  # payload bytes relative to fp32
WINDOW = 8  # answers / frames the rates are measured over


class Congestion:
    """Block: admit every frame, keep the codec."""

    name = "block"

    def __init__(self, codec: str, pending: Callable[[], int], max_pending: int = 4,
                 clock: Callable[[], float] = time.monotonic):
        if codec not in CODECS:
            raise SplitleakError(f"unknown codec {codec!r}")
        if max_pending < 1:
            raise SplitleakError(f"--max-pending must be >= 1, got {max_pending}")
        self.current, self.pending, self.max_pending, self.clock = codec, pending, max_pending, clock
        self.skipped = 0
        self.codec_frames: dict[str, int] = {}

    def admit(self) -> bool:
        """Whether to send the next frame (called once per captured frame, before the head runs)."""
        return True

    def codec(self) -> str:
        """The codec for the frame about to be sent."""
        return self.current

    def on_sent(self, seq: int, nbytes: int, codec: str) -> None:
        self.codec_frames[codec] = self.codec_frames.get(codec, 0) + 1

    def on_answer(self, seq: int) -> None:
        pass

    def report(self) -> dict[str, Any]:
        return {"policy": self.name, "skipped": self.skipped, "codec_frames": dict(self.codec_frames)}


class Skip(Congestion):
    name = "skip"

    def admit(self) -> bool:
        if self.pending() >= self.max_pending:
            self.skipped += 1
            return False
        return True


class Adapt(Congestion):
    name = "adapt"

    def __init__(self, codec: str, pending: Callable[[], int], max_pending: int = 4,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(codec, pending, max_pending, clock)
        if codec not in LADDER:
            raise SplitleakError(f"--on-congestion adapt steps {' -> '.join(LADDER)}; it cannot start at {codec}")
        self.ladder = LADDER[LADDER.index(codec):]
        self._lock = threading.Lock()  # answers arrive on the uplink's thread
        self._produced: deque[float] = deque(maxlen=WINDOW)
        self._answered: deque[tuple[float, int]] = deque(maxlen=WINDOW)
        self._bytes: dict[int, int] = {}
        self._fp32_bytes: float | None = None
        self.switches: list[tuple[int, str]] = []  # (frame count, codec) at each change

    def admit(self) -> bool:
        self._produced.append(self.clock())
        return True

    def codec(self) -> str:
        choice = self._choose()
        if choice != self.current:
            self.switches.append((sum(self.codec_frames.values()), choice))
            self.current = choice
        return self.current

    def _choose(self) -> str:
        capacity, demand = self.delivery_rate(), self.demand()
        if capacity is None or demand is None:
            if self.pending() >= self.max_pending:  # no estimate yet, but the queue says too much
                return self.ladder[min(self.ladder.index(self.current) + 1, len(self.ladder) - 1)]
            return self.current
        fits = [c for c in self.ladder if demand * PAYLOAD[c] <= capacity]
        return fits[0] if fits else self.ladder[-1]

    def on_sent(self, seq: int, nbytes: int, codec: str) -> None:
        super().on_sent(seq, nbytes, codec)
        with self._lock:
            self._bytes[seq] = nbytes
            self._fp32_bytes = nbytes / PAYLOAD[codec]

    def on_answer(self, seq: int) -> None:
        with self._lock:
            nbytes = self._bytes.pop(seq, None)
            if nbytes is not None:
                self._answered.append((self.clock(), nbytes))

    def delivery_rate(self) -> float | None:
        """Bytes answered per second over the last answers (None until two exist)."""
        with self._lock:
            if len(self._answered) < 2:
                return None
            span = self._answered[-1][0] - self._answered[0][0]
            return sum(b for _, b in list(self._answered)[1:]) / span if span > 0 else None

    def demand(self) -> float | None:
        """fp32 bytes per second the producer asks for (None until two frames were produced)."""
        if len(self._produced) < 2 or self._fp32_bytes is None:
            return None
        span = self._produced[-1] - self._produced[0]
        return self._fp32_bytes * (len(self._produced) - 1) / span if span > 0 else None

    def report(self) -> dict[str, Any]:
        return {**super().report(), "switches": [list(s) for s in self.switches]}


REGISTRY: dict[str, type[Congestion]] = {"block": Congestion, "skip": Skip, "adapt": Adapt}


def make_policy(name: str, codec: str, pending: Callable[[], int], max_pending: int = 4,
                clock: Callable[[], float] = time.monotonic) -> Congestion:
    if name not in REGISTRY:
        raise SplitleakError(f"unknown --on-congestion policy {name!r}; choose one of: {', '.join(POLICIES)}")
    return REGISTRY[name](codec, pending, max_pending, clock)
