"""Attack a live stream: subscribe to the cloud's tap and reconstruct frames as they arrive.

The subscription is TapRecorder's (connect, token, TLS, drop counting), so what the attacker
saw is also kept as a recording in OUT/tap, for `splitleak attack --recording OUT/tap` later.
Frames are batched (up to `batch`, or whatever arrived within `batch_timeout` of the first),
grouped by the head that made them, inverted on `device`, and written as PNGs at once;
metrics.json (the contract shape) is written at the end: when the cloud ends the tap, after
`max_frames`, on stop(), or on Ctrl-C, with whatever was reconstructed by then.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from adversary.evaluate import base_config, summarise
from adversary.runner.attacks import load_prior_for, make_attack
from adversary.runner.features import THRESHOLD_DB
from adversary.runner.inversion import Frame, FrameInverter, read_frame
from adversary.runner.meta import HeadKey, item_meta
from adversary.runner.output import EVAL_SIZE, attack_fields, finish, head_groups, image_rows, output_folder, \
    score_frames
from adversary.tap_client import TapRecorder
from splitleak.errors import SplitleakError
from splitleak.recording import RecordedItem
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.wire.channel import TlsFiles
from splitleak.wire.tapitems import from_tap_item, meta_dict

log = logging.getLogger(__name__)
TAP_FOLDER, POLL_S = "tap", 0.1


@dataclass
class LiveConfig:
    """What to tap, which attack to run, where to write; defaults are the CLI's."""

    cloud: str
    attack: str
    out: str
    truth: str | None = None
    batch: int = 8
    batch_timeout: float = 0.5  # seconds to wait for a batch to fill once its first frame is in
    device: str = "cpu"
    token: str | None = None
    tls: TlsFiles = field(default_factory=TlsFiles)
    stream_ids: tuple[str, ...] = ()
    max_frames: int | None = None
    queue_size: int = 1024
    iterations: int | None = None
    seed: int = 0
    weights_path: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None
    config_file: str | None = None
    prior: str | None = None  # a prior folder or hub name, for attacks whose access includes "prior"
    connect_timeout: float = 10.0
    progress: bool = True


class _FeedingTap(TapRecorder):
    """TapRecorder that also hands every frame it records to `sink`, and stops after `max_frames`."""

    def __init__(self, config: LiveConfig, sink: Callable[[RecordedItem], None]) -> None:
        super().__init__(config.cloud, str(Path(config.out) / TAP_FOLDER), tls=config.tls, token=config.token,
                         stream_ids=config.stream_ids, queue_size=config.queue_size)
        self.sink, self.max_frames, self.frames = sink, config.max_frames, 0

    def _write(self, item: pb.TapItem) -> None:
        if self.max_frames is not None and self.frames >= self.max_frames:
            return
        super()._write(item)
        kind, _, meta, codec, tensors = from_tap_item(item)
        if kind != "frame":
            return
        self.frames += 1
        self.sink(RecordedItem(self.writer.count - 1, kind, meta_dict(kind, meta, codec), tensors))
        if self.max_frames is not None and self.frames >= self.max_frames:
            self.stop()


class LiveAttack:
    """Runs one live attack; `run()` blocks until the tap ends, `max_frames`, stop() or Ctrl-C."""

    def __init__(self, config: LiveConfig) -> None:
        if config.batch < 1 or config.batch_timeout < 0:
            raise SplitleakError(f"batch must be >= 1 and batch_timeout >= 0, got {config.batch}, {config.batch_timeout}")
        if config.max_frames is not None and config.max_frames < 1:
            raise SplitleakError(f"max_frames must be >= 1, got {config.max_frames}")
        self.config, self.out = config, output_folder(config.out)
        if config.truth is not None and Path(config.truth).exists() and not Path(config.truth).is_dir():
            raise SplitleakError(f"truth path {config.truth} is not a folder")  # it may appear later, as the edge runs
        self.attack = make_attack(config.attack, config.iterations, config.options, config.preset, config.config_file)
        if self.attack.family != "feature":
            raise SplitleakError(f"attack {config.attack!r} inverts gradients; attack-live runs feature attacks only")
        self.prior = load_prior_for(self.attack, config.prior, config.device)
        self.inverter = FrameInverter(self.attack, self.out, config.device, config.seed, config.weights_path,
                                      self.prior, tag_cases=True)
        self.items: queue.Queue[RecordedItem] = queue.Queue()
        self.seen: set[tuple[str, int]] = set()
        self.skipped: dict[str, int] = {"duplicate": 0, "bad": 0}
        self.interrupted = False
        self.tap: _FeedingTap | None = None
        self._stop = threading.Event()
        self._tap_error: BaseException | None = None

    def stop(self) -> None:
        """Stop from another thread: the frames in hand are finished, the rest dropped."""
        self._stop.set()
        if self.tap is not None:
            self.tap.stop()

    # -- the loop --

    def run(self) -> dict[str, Any]:
        """Tap, reconstruct, write; returns the metrics dict (also in OUT/metrics.json)."""
        started = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        self.tap = _FeedingTap(self.config, self.items.put)
        thread = threading.Thread(target=self._tap_thread, name="live-tap", daemon=True)
        thread.start()
        bar = tqdm(total=self.config.max_frames, unit="frame", desc=f"live {self.config.attack}",
                   disable=not self.config.progress)
        error: SplitleakError | None = None
        try:
            while (batch := self._next_batch(thread)) is not None:
                self._process(batch)
                bar.update(len(batch))
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
        return len(self.inverter.done)

    def _tap_thread(self) -> None:
        if self._stop.is_set():
            return
        try:
            self.tap.run(self.config.connect_timeout)  # type: ignore[union-attr]
        except BaseException as err:  # reported by the main thread
            self._tap_error = err

    def _next_batch(self, thread: threading.Thread) -> list[RecordedItem] | None:
        """Up to `batch` items: block for the first, then wait at most batch_timeout for more.
        None once the tap has ended (or stop()) and nothing is left."""
        first = None
        while first is None:
            if self._stop.is_set():
                return None
            try:
                first = self.items.get(timeout=POLL_S)
            except queue.Empty:
                if not thread.is_alive() and self.items.empty():
                    return None
        batch, deadline = [first], time.monotonic() + self.config.batch_timeout
        while len(batch) < self.config.batch:
            try:
                batch.append(self.items.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _accept(self, item: RecordedItem) -> Frame | None:
        """The frame, or None (counted) for a duplicate or malformed one: a live stream goes on."""
        try:
            frame = read_frame(item, item_meta(item))
        except SplitleakError as err:
            log.warning("skipping tapped item %d: %s", item.index, err)
            self.skipped["bad"] += 1
            return None
        if frame.key in self.seen:
            self.skipped["duplicate"] += 1
            return None
        self.seen.add(frame.key)
        return frame

    def _process(self, batch: list[RecordedItem]) -> None:
        groups: dict[HeadKey, list[Frame]] = {}
        for item in batch:
            frame = self._accept(item)
            if frame is not None:
                groups.setdefault(frame.meta.head, []).append(frame)
        for key, frames in groups.items():
            frames.sort(key=lambda f: f.key)  # consecutive frames together (video attacks)
            self.inverter.invert(key, frames)

    # -- results --

    def _finish(self, total: float, error: SplitleakError | None) -> dict[str, Any]:
        keys = sorted(f.key for f in self.inverter.done)
        scores: dict[tuple[str, int], dict[str, Any]] = {}
        extra: dict[str, Any] = {"truth": self.config.truth}
        if self.config.truth is not None and not Path(self.config.truth).is_dir():
            log.warning("truth folder %s never appeared; frames are not scored", self.config.truth)
            extra["truth_missing"] = True
        elif self.config.truth is not None and keys:
            scores, counts = score_frames(keys, self.out, self.config.truth)
            extra.update(counts)
        frames = image_rows(keys, scores, self.inverter.feature_loss)
        summary = summarise(frames, THRESHOLD_DB, self.inverter.seconds, ("", "_native"))
        config = self._config(total, error)
        config.update(extra, **base_config(EVAL_SIZE, THRESHOLD_DB), native_size="the truth frame's own size")
        return finish(self.out, frames, summary, config)

    def _config(self, total: float, error: SplitleakError | None) -> dict[str, Any]:
        c, tap, done = self.config, self.tap, self.inverter.done
        counts: dict[HeadKey, int] = {}
        for f in done:
            counts[f.meta.head] = counts.get(f.meta.head, 0) + 1
        return {"mode": "live", "cloud": c.cloud, **attack_fields(c.attack, self.attack, c.seed, c.device),
                "attack_run": self.inverter.run_info,
                "batch": c.batch, "batch_timeout": c.batch_timeout,
                "max_frames": c.max_frames, "stream_ids": list(c.stream_ids), "weights_path": c.weights_path,
                "prior": c.prior, "prior_info": self.prior.describe() if self.prior is not None else None,
                "heads": head_groups(self.inverter.cases, counts, "frames"), "frames": len(done),
                "tapped_frames": tap.frames if tap else 0, "dropped_by_cloud": tap.dropped if tap else 0,
                "skipped": self.skipped, "unprocessed": self.items.qsize(), "interrupted": self.interrupted,
                "error": str(error) if error else None,
                "tap_error": str(self._tap_error) if self._tap_error else None, "recording": str(self.out / TAP_FOLDER),
                "attack_seconds": self.inverter.seconds, "total_seconds": total}


def run_live(config: LiveConfig) -> dict[str, Any]:
    """Run a live attack to its end (see LiveAttack); returns the metrics dict."""
    return LiveAttack(config).run()
