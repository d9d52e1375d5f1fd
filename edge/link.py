"""An application-level network link emulator for the edge-to-cloud path.

There is no ``tc netem`` here, so the edge pushes every frame through a
:class:`LinkEmulator` before it reaches gRPC. The link is described by a
:class:`LinkSpec`, parsed from strings like ``"rate=10mbit,delay=20ms,jitter=5ms,loss=1%"``
(``""`` or ``"none"`` is an ideal link).

Timing model, per frame of ``nbytes`` bytes sent at time ``now``:

* serialisation at ``rate``: ``departure = max(now, previous departure) + nbytes*8/rate``;
* propagation: ``arrival = departure + delay + U(-jitter, +jitter)``, never before the
  departure; frames come out in arrival order, so jitter may reorder them, as netem does.

Loss (probability ``loss`` per transmission, from a seeded ``random.Random``) has two
behaviours, chosen by ``drop``:

* ``drop=0`` (default): the frame is retransmitted, the way TCP under gRPC recovers it.
  It still arrives, ``rto`` later than it would have (default 200ms), and each
  retransmission may be lost again independently, adding another ``rto``. The
  ``retransmissions`` counter counts them. ``loss=100%`` is refused here (it would
  never arrive).
* ``drop=1``: the frame never arrives. ``on_drop(item)`` is called at the time it would
  have arrived, so the sender can count it lost; the ``dropped`` counter counts them.

``window`` (default 64) bounds the frames in the link (sent, neither received nor
dropped yet): ``send`` blocks past it, the backpressure a socket buffer gives.

Caveats: retransmissions take no extra bandwidth and do not hold up later frames (no
head-of-line blocking); ``bps``/``kbps``/... mean *bits* per second here (``tc`` reads
them as bytes); ``on_drop`` runs in whichever thread notices the frame's time has passed
(a thread in ``receive``, or a ``send`` call), so a link nobody reads fires it late.
"""

from __future__ import annotations

import heapq
import math
import random
import re
import threading
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterator

from splitleak.errors import SplitleakError

__all__ = ["LinkSpec", "LinkEmulator", "LinkClosed"]

_RATE_UNITS = {
    "": 1, "bit": 1, "bps": 1,
    "kbit": 10**3, "kbps": 10**3,
    "mbit": 10**6, "mbps": 10**6,
    "gbit": 10**9, "gbps": 10**9,
}
_TIME_UNITS = {
    "us": Decimal("0.000001"), "usec": Decimal("0.000001"), "usecs": Decimal("0.000001"),
    "ms": Decimal("0.001"), "msec": Decimal("0.001"), "msecs": Decimal("0.001"),
    "s": Decimal(1), "sec": Decimal(1), "secs": Decimal(1),
}
_NUMBER = re.compile(r"^(-?)((?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*([a-z%]*)$")
_KEYS = ("rate", "delay", "jitter", "loss", "drop", "rto", "window")


class LinkClosed(RuntimeError):
    """The link was closed: nothing more can be sent, and nothing is left to receive."""


@dataclass(frozen=True)
class LinkSpec:
    """What the link does to each frame; times in seconds, rate in bit/s (None: unlimited)."""

    rate: float | None = None
    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    drop: bool = False
    rto: float = 0.2
    window: int = 64

    def __post_init__(self) -> None:
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise SplitleakError(f"link spec: rate must be a positive finite number, got {self.rate}")
        for key in ("delay", "jitter", "rto"):
            value = getattr(self, key)
            if not (value >= 0 and math.isfinite(value)):
                raise SplitleakError(f"link spec: {key} must be >= 0 seconds, got {value}")
        if not 0.0 <= self.loss <= 1.0:
            raise SplitleakError(f"link spec: loss must be within 0..100%, got {self.loss}")
        if self.loss >= 1.0 and not self.drop:
            raise SplitleakError("link spec: loss=100% with drop=0 would retransmit forever")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise SplitleakError(f"link spec: window must be an integer >= 1, got {self.window}")

    @property
    def ideal(self) -> bool:
        """True when the link adds no time and loses nothing (window still applies)."""
        return self.rate is None and self.delay == 0 and self.jitter == 0 and self.loss == 0

    @classmethod
    def parse(cls, text: str) -> "LinkSpec":
        """Parse ``"rate=10mbit,delay=20ms,jitter=5ms,loss=1%"``; ``""``/``"none"`` -> ideal."""
        text = (text or "").strip()
        if text.lower() in ("", "none"):
            return cls()
        fields: dict[str, Any] = {}
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            key, sep, value = part.partition("=")
            key, value = key.strip().lower(), value.strip().lower()
            if not sep or not value:
                raise SplitleakError(f"link spec: expected key=value, got {part!r}")
            if key not in _KEYS:
                raise SplitleakError(f"link spec: unknown key {key!r} in {part!r} (known: {', '.join(_KEYS)})")
            if key in fields:
                raise SplitleakError(f"link spec: {key!r} given twice")
            fields[key] = _PARSERS[key](part, value)
        return cls(**fields)

    def __str__(self) -> str:
        parts = []
        if self.rate is not None:
            parts.append(f"rate={_fmt_rate(self.rate)}")
        for key in ("delay", "jitter"):
            if getattr(self, key):
                parts.append(f"{key}={_fmt_time(getattr(self, key))}")
        if self.loss:
            parts.append(f"loss={_fmt_dec(Decimal(repr(self.loss)) * 100)}%")
        if self.drop:
            parts.append("drop=1")
        if self.rto != LinkSpec.rto:
            parts.append(f"rto={_fmt_time(self.rto)}")
        if self.window != LinkSpec.window:
            parts.append(f"window={self.window}")
        return ",".join(parts) or "none"


def _number(part: str, value: str) -> tuple[Decimal, str]:
    """Split ``value`` into a non-negative Decimal and its unit, or say what is wrong."""
    match = _NUMBER.match(value)
    if not match:
        raise SplitleakError(f"link spec: bad number in {part!r}")
    sign, digits, unit = match.groups()
    try:
        number = Decimal(digits)
    except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
        raise SplitleakError(f"link spec: bad number in {part!r}") from None
    if sign and number != 0:
        raise SplitleakError(f"link spec: negative value in {part!r}")
    return number, unit


def _parse_rate(part: str, value: str) -> float:
    number, unit = _number(part, value)
    if unit not in _RATE_UNITS:
        raise SplitleakError(f"link spec: bad rate unit {unit!r} in {part!r} (use bit, kbit, mbit, gbit)")
    if number == 0:
        raise SplitleakError(f"link spec: rate must be > 0 in {part!r} (leave it out for no limit)")
    return float(number * _RATE_UNITS[unit])


def _parse_time(part: str, value: str) -> float:
    number, unit = _number(part, value)
    if unit not in _TIME_UNITS:
        raise SplitleakError(f"link spec: bad time unit {unit!r} in {part!r} (use us, ms, s)")
    return float(number * _TIME_UNITS[unit])


def _parse_loss(part: str, value: str) -> float:
    number, unit = _number(part, value)
    if unit == "%":
        number = number / 100
    elif unit:
        raise SplitleakError(f"link spec: bad loss unit {unit!r} in {part!r} (use 1% or 0.01)")
    if number > 1:
        raise SplitleakError(f"link spec: loss above 100% in {part!r}")
    return float(number)


def _parse_drop(part: str, value: str) -> bool:
    if value not in ("0", "1"):
        raise SplitleakError(f"link spec: drop must be 0 or 1 in {part!r}")
    return value == "1"


def _parse_window(part: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise SplitleakError(f"link spec: window must be an integer >= 1 in {part!r}")
    return int(value)


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "rate": _parse_rate, "delay": _parse_time, "jitter": _parse_time, "loss": _parse_loss,
    "drop": _parse_drop, "rto": _parse_time, "window": _parse_window,
}


def _fmt_dec(number: Decimal) -> str:
    return format(number.normalize(), "f")


def _fmt_rate(rate: float) -> str:
    exact = Decimal(repr(rate))
    for unit, scale in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if exact >= scale:
            return _fmt_dec(exact / scale) + unit
    return _fmt_dec(exact) + "bit"


def _fmt_time(seconds: float) -> str:
    exact = Decimal(repr(seconds))
    if exact >= 1:
        return _fmt_dec(exact) + "s"
    if exact >= Decimal("0.001") or exact == 0:
        return _fmt_dec(exact * 1000) + "ms"
    return _fmt_dec(exact * 1000000) + "us"


class LinkEmulator:
    """A one-way link: ``send`` on one side, ``receive``/iterate on the other; thread-safe."""

    def __init__(
        self,
        spec: LinkSpec | str = "",
        seed: int = 0,
        on_drop: Callable[[Any], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` gives the link's time in seconds; tests pass a fake one and poll with ``timeout=0``."""
        self.spec = spec if isinstance(spec, LinkSpec) else LinkSpec.parse(spec)
        self._clock = clock
        self._rng = random.Random(seed)
        self._on_drop = on_drop or (lambda item: None)
        self._lock = threading.Lock()
        self._readable = threading.Condition(self._lock)
        self._writable = threading.Condition(self._lock)
        self._arrivals: list[tuple[float, int, Any]] = []  # heap of frames that will arrive
        self._drops: list[tuple[float, int, Any]] = []  # heap of frames lost for good
        self._seq = 0
        self._last_departure = 0.0
        self._closed = False
        self.sent = 0
        self.delivered = 0
        self.dropped = 0
        self.retransmissions = 0

    @property
    def in_flight(self) -> int:
        """Frames sent and neither received nor dropped yet."""
        with self._lock:
            return len(self._arrivals) + len(self._drops)

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, item: Any, nbytes: int) -> None:
        """Put ``item`` (``nbytes`` on the wire) into the link; blocks while the window is full."""
        if nbytes < 0:
            raise SplitleakError(f"link: nbytes must be >= 0, got {nbytes}")
        fired: list[Any] = []
        try:
            with self._lock:
                while True:
                    if self._closed:
                        raise LinkClosed("link is closed")
                    now = self._clock()
                    fired += self._reap_drops(now)
                    if len(self._arrivals) + len(self._drops) < self.spec.window:
                        break
                    wake = self._drops[0][0] - now if self._drops else None
                    self._writable.wait(wake)
                self._schedule(item, nbytes, now)
        finally:
            self._fire(fired)

    def receive(self, timeout: float | None = None) -> Any:
        """Next frame in arrival order, waiting for its arrival; None on timeout.

        Raises LinkClosed once the link is closed and empty.
        """
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            with self._lock:
                state, item, fired = self._step(deadline)
            self._fire(fired)
            if state == "item":
                return item
            if state == "closed":
                raise LinkClosed("link is closed and drained")
            if state == "timeout":
                return None

    def __iter__(self) -> Iterator[Any]:
        """Received frames until the link is closed and drained (a gRPC request iterator)."""
        while True:
            try:
                yield self.receive()
            except LinkClosed:
                return

    def close(self) -> None:
        """No more sends; frames already in the link still arrive (or drop) on time."""
        with self._lock:
            self._closed = True
            self._readable.notify_all()
            self._writable.notify_all()

    def __enter__(self) -> "LinkEmulator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals, called with the lock held ------------------------------------------

    def _schedule(self, item: Any, nbytes: int, now: float) -> None:
        spec = self.spec
        departure = now
        if spec.rate is not None:
            departure = max(now, self._last_departure) + nbytes * 8 / spec.rate
            self._last_departure = departure
        arrival = departure + spec.delay
        if spec.jitter:
            arrival = max(departure, arrival + self._rng.uniform(-spec.jitter, spec.jitter))
        self._seq += 1
        self.sent += 1
        if spec.loss and spec.drop:
            if self._rng.random() < spec.loss:
                heapq.heappush(self._drops, (arrival, self._seq, item))
                self._readable.notify_all()
                return
        elif spec.loss:
            # failures before the first success: geometric, one draw
            u = 1.0 - self._rng.random()  # in (0, 1]
            lost = int(math.log(u) / math.log(spec.loss))
            if lost:
                self.retransmissions += lost
                arrival += lost * spec.rto
        heapq.heappush(self._arrivals, (arrival, self._seq, item))
        self._readable.notify_all()

    def _reap_drops(self, now: float) -> list[Any]:
        fired = []
        while self._drops and self._drops[0][0] <= now:
            fired.append(heapq.heappop(self._drops)[2])
        if fired:
            self.dropped += len(fired)
            self._writable.notify_all()
        return fired

    def _step(self, deadline: float | None) -> tuple[str, Any, list[Any]]:
        while True:
            now = self._clock()
            fired = self._reap_drops(now)
            if self._arrivals and self._arrivals[0][0] <= now:
                item = heapq.heappop(self._arrivals)[2]
                self.delivered += 1
                self._writable.notify()
                return "item", item, fired
            if fired:
                return "fired", None, fired
            if self._closed and not self._arrivals and not self._drops:
                return "closed", None, fired
            if deadline is not None and now >= deadline:
                return "timeout", None, fired
            wakes = [t for t in (deadline,) if t is not None]
            wakes += [heap[0][0] for heap in (self._arrivals, self._drops) if heap]
            self._readable.wait(min(wakes) - now if wakes else None)

    def requeue(self, item: Any) -> None:
        """Put a received item back at the head: its reader could not use it (a call broke)."""
        with self._lock:
            self._seq += 1
            heapq.heappush(self._arrivals, (float("-inf"), -self._seq, item))
            self.delivered -= 1
            self._readable.notify_all()

    def _fire(self, fired: list[Any]) -> None:
        for item in fired:
            self._on_drop(item)
