"""Attack a live stream: subscribe to the cloud's tap and reconstruct frames as they arrive.

The subscription is TapRecorder's (connect, token, TLS, drop counting), so what the attacker
saw is also kept as a recording in OUT/tap, for `splitleak attack --recording OUT/tap` later.
Tapped items are gathered into batches (up to `batch` frames, or whatever arrived within
`batch_timeout` of the first) and handed to the attack's path: feature attacks invert frames
(live_features), gradient attacks invert FedSGD updates against their round's state
(live_gradients; the batched engine takes a whole batch in one optimisation). Outputs are written
as `splitleak attack` writes them, at once; metrics.json (the contract shape) at the end: when the
cloud ends the tap, after `max_frames`, on stop(), or on Ctrl-C, with whatever was reconstructed by then.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Protocol

from tqdm import tqdm

from adversary.runner.attacks import make_attack
from adversary.runner.live_config import LiveConfig
from adversary.runner.live_features import LiveFeatures
from adversary.runner.live_gradients import LiveGradients
from adversary.runner.meta import item_meta
from adversary.runner.output import finish, output_folder
from adversary.tap_client import TapRecorder
from splitleak.errors import SplitleakError
from splitleak.recording import RecordedItem
from splitleak.v1 import splitleak_pb2 as pb

log = logging.getLogger(__name__)
TAP_FOLDER, POLL_S = "tap", 0.1
__all__ = ["LiveAttack", "LiveConfig", "run_live"]


class Sink(Protocol):
    """An attack path of the live loop (LiveFeatures, LiveGradients)."""

    kinds: frozenset[str]  # the tap item kinds it takes
    defaults: tuple[int, float]
    frames_written: int

    def start(self, bar: Any) -> None: ...
    def process(self, batch: list[RecordedItem]) -> None: ...
    def finish(self) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]: ...


def frames_in(item: RecordedItem) -> int:
    """How many frames an item counts for (batches, max_frames): an update its batch, a state none."""
    if item.kind == "state":
        return 0
    if item.kind != "update":
        return 1
    try:
        return item_meta(item).batch
    except SplitleakError:
        return 1  # the path skips it, with the reason


Queued = tuple[RecordedItem, int]  # an item and the frames it counts for


class _FeedingTap(TapRecorder):
    """TapRecorder that also hands every item of `kinds` it records to `sink`, and stops after `max_frames`."""

    def __init__(self, config: LiveConfig, sink: Callable[[Queued], None], kinds: frozenset[str]) -> None:
        super().__init__(config.cloud, str(Path(config.out) / TAP_FOLDER), tls=config.tls, token=config.token,
                         stream_ids=config.stream_ids, queue_size=config.queue_size,
                         max_message_bytes=config.max_message_bytes)
        self.sink, self.kinds, self.max_frames, self.frames = sink, kinds, config.max_frames, 0
        self.ignored = 0  # recorded, but not for this attack (frames for a gradient attack, updates for a feature one)

    def _write(self, item: pb.TapItem) -> None:
        if self.max_frames is not None and self.frames >= self.max_frames:
            return
        super()._write(item)

    def _recorded(self, item: RecordedItem) -> None:
        if item.kind not in self.kinds:
            self.ignored += 1
            return
        n = frames_in(item)
        self.frames += n
        self.sink((item, n))
        if self.max_frames is not None and self.frames >= self.max_frames:
            self.stop()


class LiveAttack:
    """Runs one live attack; `run()` blocks until the tap ends, `max_frames`, stop() or Ctrl-C."""

    def __init__(self, config: LiveConfig) -> None:
        if (config.batch is not None and config.batch < 1) or (config.batch_timeout is not None
                                                               and config.batch_timeout < 0):
            raise SplitleakError(f"batch must be >= 1 and batch_timeout >= 0, got {config.batch}, {config.batch_timeout}")
        if config.max_frames is not None and config.max_frames < 1:
            raise SplitleakError(f"max_frames must be >= 1, got {config.max_frames}")
        self.config, self.out = config, output_folder(config.out)
        if config.truth is not None and Path(config.truth).exists() and not Path(config.truth).is_dir():
            raise SplitleakError(f"truth path {config.truth} is not a folder")  # it may appear later, as the edge runs
        self.attack = make_attack(config.attack, config.iterations, config.options, config.preset, config.config_file)
        self.sink: Sink = (LiveGradients if self.attack.family == "gradient" else LiveFeatures)(
            self.attack, config, self.out)
        self.batch = config.batch if config.batch is not None else self.sink.defaults[0]
        self.wait = config.batch_timeout if config.batch_timeout is not None else self.sink.defaults[1]
        self.items: queue.Queue[Queued] = queue.Queue()
        self.interrupted = False
        self.tap: _FeedingTap | None = None
        self._stop = threading.Event()
        self._tap_error: BaseException | None = None

    def stop(self) -> None:
        """Stop from another thread: the items in hand are finished, the rest dropped."""
        self._stop.set()
        if self.tap is not None:
            self.tap.stop()

    # -- the loop --

    def run(self) -> dict[str, Any]:
        """Tap, reconstruct, write; returns the metrics dict (also in OUT/metrics.json)."""
        started = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        self.tap = _FeedingTap(self.config, self.items.put, self.sink.kinds)
        thread = threading.Thread(target=self._tap_thread, name="live-tap", daemon=True)
        thread.start()
        bar = tqdm(total=self.config.max_frames, unit="frame", desc=f"live {self.config.attack}",
                   disable=not self.config.progress)
        self.sink.start(bar)
        error: SplitleakError | None = None
        try:
            while (batch := self._next_batch(thread)) is not None:
                self.sink.process(batch)
                bar.set_postfix(dropped=self.tap.dropped, queued=self.items.qsize(), refresh=False)
        except KeyboardInterrupt:
            self.interrupted = True
        except SplitleakError as err:
            error = err
        finally:
            for wait in (2, 8):  # a stop() that came while the tap was still connecting is repeated
                self.tap.stop()
                thread.join(wait)
            bar.close()
        if self._tap_error is not None and error is None and not self.frames_written:
            error = self._tap_error if isinstance(self._tap_error, SplitleakError) else \
                SplitleakError(f"tap failed: {self._tap_error}")
        metrics = self._finish(time.perf_counter() - started, error)
        if error is not None:
            raise error
        return metrics

    @property
    def frames_written(self) -> int:
        return self.sink.frames_written

    def _tap_thread(self) -> None:
        if self._stop.is_set():
            return
        try:
            self.tap.run(self.config.connect_timeout)  # type: ignore[union-attr]
        except BaseException as err:  # reported by the main thread
            self._tap_error = err

    def _next_batch(self, thread: threading.Thread) -> list[RecordedItem] | None:
        """Items worth up to `batch` frames: block for the first, then wait at most `wait` seconds for
        more. None once the tap has ended (or stop()) and nothing is left."""
        first = None
        while first is None:
            if self._stop.is_set():
                return None
            try:
                first = self.items.get(timeout=POLL_S)
            except queue.Empty:
                if not thread.is_alive() and self.items.empty():
                    return None
        (item, frames), deadline = first, time.monotonic() + self.wait
        batch = [item]
        while frames < self.batch:
            try:
                item, n = self.items.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            batch.append(item)
            frames += n
        return batch

    # -- results --

    def _finish(self, total: float, error: SplitleakError | None) -> dict[str, Any]:
        frames, summary, config = self.sink.finish()
        c, tap = self.config, self.tap
        config.update({"mode": "live", "cloud": c.cloud, "batch": self.batch, "batch_timeout": self.wait,
                       "max_frames": c.max_frames, "stream_ids": list(c.stream_ids),
                       "tapped_frames": tap.frames if tap else 0, "dropped_by_cloud": tap.dropped if tap else 0,
                       "ignored_items": tap.ignored if tap else 0, "unprocessed": self.items.qsize(),
                       "interrupted": self.interrupted, "error": str(error) if error else None,
                       "tap_error": str(self._tap_error) if self._tap_error else None,
                       "recording": str(self.out / TAP_FOLDER), "total_seconds": total})
        return finish(self.out, frames, summary, config)


def run_live(config: LiveConfig) -> dict[str, Any]:
    """Run a live attack to its end (see LiveAttack); returns the metrics dict."""
    return LiveAttack(config).run()
