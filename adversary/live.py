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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from adversary.evaluate import base_config, score_pairs, summarise, truth_index, write_grid, write_metrics
from adversary.feature.base import FeatureInversionAttack
from adversary.feature.blackbox import make_case
from adversary.heads import build_head
from adversary.run import EVAL_SIZE, THRESHOLD_DB, make_attack
from adversary.tap_client import TapRecorder
from adversary.tapped import FrameRef, HeadKey, frame_features, head_key
from splitleak.errors import SplitleakError
from splitleak.recording import RecordedItem, write_json
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.video import frame_name, parse_frame_name, save_png
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
        self.config, self.out = config, Path(config.out)
        if self.out.exists() and not self.out.is_dir():
            raise SplitleakError(f"output path {self.out} exists and is not a folder")
        if config.truth is not None and Path(config.truth).exists() and not Path(config.truth).is_dir():
            raise SplitleakError(f"truth path {config.truth} is not a folder")  # it may appear later, as the edge runs
        self.attack: FeatureInversionAttack = make_attack(config.attack, config.iterations, config.options)
        self.prior = self._load_prior(config)
        self.items: queue.Queue[RecordedItem] = queue.Queue()
        self.cases: dict[HeadKey, Any] = {}
        self.done: list[FrameRef] = []
        self.feature_loss: dict[tuple[str, int], float] = {}
        self.seen: set[tuple[str, int]] = set()
        self.skipped: dict[str, int] = {"duplicate": 0, "bad": 0}
        self.seconds, self.interrupted = 0.0, False
        self.tap: _FeedingTap | None = None
        self._stop = threading.Event()
        self._tap_error: BaseException | None = None

    def _load_prior(self, config: LiveConfig) -> Any:
        if "prior" not in self.attack.access:
            if config.prior is not None:
                raise SplitleakError(f"attack {config.attack!r} takes no prior; drop --prior")
            return None
        if config.prior is None:
            raise SplitleakError(f"attack {config.attack!r} needs a diffusion prior; pass --prior DIR")
        from adversary.priors.diffusion import load_prior

        return load_prior(config.prior, config.device)

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
        return len(self.done)

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

    def _case(self, key: HeadKey) -> Any:
        if key not in self.cases:
            model = build_head(key, self.config.device, self.config.weights_path)
            case = make_case(self.attack, model.head, model.input_shape, self.config.device, self.config.seed,
                             prior=self.prior, tag=f"{key.model}-{key.split}-{key.size}-{key.weights}")
            self.attack.check_access(case)
            self.cases[key] = case
        return self.cases[key]

    def _accept(self, item: RecordedItem) -> tuple[FrameRef, np.ndarray] | None:
        """The frame's reference and features, or None (counted) for a duplicate or malformed frame."""
        try:
            key = head_key(item)
            z = frame_features(item, key)
            parsed = parse_frame_name(frame_name(item.meta.get("stream_id") or "", int(item.meta.get("seq", -1))))
        except (SplitleakError, ValueError, TypeError) as err:
            log.warning("skipping tapped item %d: %s", item.index, err)
            self.skipped["bad"] += 1
            return None
        if parsed is None or parsed in self.seen:
            self.skipped["duplicate" if parsed else "bad"] += 1
            return None
        self.seen.add(parsed)
        return FrameRef(item.index, key, *parsed), z

    def _process(self, batch: list[RecordedItem]) -> None:
        groups: dict[HeadKey, list[tuple[FrameRef, np.ndarray]]] = {}
        for item in batch:
            accepted = self._accept(item)
            if accepted is not None:
                groups.setdefault(accepted[0].head, []).append(accepted)
        for key, frames in groups.items():
            frames.sort(key=lambda f: (f[0].stream, f[0].seq))  # consecutive frames together (video attacks)
            case = replace(self._case(key), frames=tuple((ref.stream, ref.seq) for ref, _ in frames))
            start = time.perf_counter()
            images = self.attack.reconstruct(torch.from_numpy(np.concatenate([z for _, z in frames])), case)
            if case.device.type == "cuda":
                torch.cuda.synchronize(case.device)
            self.seconds += time.perf_counter() - start
            losses = getattr(self.attack, "last_loss", None)
            for i, ((ref, _), x) in enumerate(zip(frames, images.float().cpu().numpy())):
                save_png(self.out / ref.filename, x)
                self.done.append(ref)
                if losses is not None:
                    self.feature_loss[(ref.stream, ref.seq)] = float(losses[i])

    # -- results --

    def _finish(self, total: float, error: SplitleakError | None) -> dict[str, Any]:
        keys = [(r.stream, r.seq) for r in self.done]
        scores: dict[tuple[str, int], dict[str, Any]] = {}
        extra: dict[str, Any] = {"truth": self.config.truth}
        if self.config.truth is not None and not Path(self.config.truth).is_dir():
            log.warning("truth folder %s never appeared; frames are not scored", self.config.truth)
            extra["truth_missing"] = True
        elif self.config.truth is not None and keys:
            truths = truth_index(self.config.truth)
            pairs = sorted((k, self.out / frame_name(*k), truths[k]) for k in keys if k in truths)
            scores = {(r["stream"], r["seq"]): r for r in score_pairs(pairs, {"": EVAL_SIZE, "_native": None})}
            if pairs:
                write_grid(pairs, self.out / "grid.png", EVAL_SIZE)
            extra.update(scored_frames=len(pairs), frames_without_truth=len(keys) - len(pairs))
        empty = {"psnr": None, "ssim": None, "psnr_native": None, "ssim_native": None}
        frames = [{**empty, **scores.get(k, {"stream": k[0], "seq": k[1]}), "feature_loss": self.feature_loss.get(k)}
                  for k in sorted(keys)]
        summary = summarise(frames, THRESHOLD_DB, self.seconds, ("", "_native"))
        config = self._config(total, error)
        config.update(extra, **base_config(EVAL_SIZE, THRESHOLD_DB), native_size="the truth frame's own size")
        write_json(self.out / "config.json", config)
        return write_metrics(self.out, frames, summary, config)

    def _config(self, total: float, error: SplitleakError | None) -> dict[str, Any]:
        c, tap = self.config, self.tap
        heads = [{"model": k.model, "split": k.split, "size": k.size, "weights": k.weights,
                  "num_classes": k.num_classes, "frames": sum(r.head == k for r in self.done)} for k in self.cases]
        return {"mode": "live", "cloud": c.cloud, "attack": c.attack, "attack_config": self.attack.config(),
                "access": sorted(self.attack.access), "iterations": getattr(self.attack, "iterations", None),
                "seed": c.seed, "device": c.device, "batch": c.batch, "batch_timeout": c.batch_timeout,
                "max_frames": c.max_frames, "stream_ids": list(c.stream_ids), "weights_path": c.weights_path,
                "prior": c.prior, "prior_info": self.prior.describe() if self.prior is not None else None,
                "heads": heads, "frames": len(self.done), "tapped_frames": tap.frames if tap else 0,
                "dropped_by_cloud": tap.dropped if tap else 0, "skipped": self.skipped,
                "unprocessed": self.items.qsize(), "interrupted": self.interrupted,
                "error": str(error) if error else None,
                "tap_error": str(self._tap_error) if self._tap_error else None, "recording": str(self.out / TAP_FOLDER),
                "attack_seconds": self.seconds, "total_seconds": total, "torch": torch.__version__}


def run_live(config: LiveConfig) -> dict[str, Any]:
    """Run a live attack to its end (see LiveAttack); returns the metrics dict."""
    return LiveAttack(config).run()
