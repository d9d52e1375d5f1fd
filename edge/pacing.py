"""Real-time pacing: a file or folder delivers frames as fast as they decode, a camera at its frame rate.

With `--realtime` the edge takes frame k no earlier than k / fps after the clock starts, and stamps
it then, so congestion policies, latency and fps mean what they mean for a live camera. The clock
starts once the cloud has answered the first frame: a live session streams once its pipeline is up
(the cloud builds its model on the first frame, which takes seconds; frames "captured" meanwhile
would all count as congestion).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator

from splitleak.video.base import Frame

DEFAULT_FPS = 30.0  # a source that does not say its rate (images, synthetic, a camera without the property)


def source_fps(source: object) -> float:
    """The source's nominal frame rate, or DEFAULT_FPS when it has none."""
    fps = getattr(source, "fps", 0.0)
    return float(fps) if isinstance(fps, (int, float)) and 0 < fps <= 1000 else DEFAULT_FPS


def paced(frames: Iterable[Frame], fps: float, ready: Callable[[], None]) -> Iterator[Frame]:
    """Yield the first frame, wait for `ready()`, then the rest at `fps` at most, each re-stamped when
    it is taken (its capture time)."""
    it = iter(frames)
    first = next(it, None)
    if first is None:
        return
    yield first
    ready()
    start = time.monotonic()
    for k, frame in enumerate(it, 1):
        delay = start + k / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield dataclasses.replace(frame, capture_ts=time.time())
