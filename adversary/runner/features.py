"""Feature attacks over a recording: index its frames, rebuild each head, invert in batches per head."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tqdm import tqdm

from adversary.evaluate import base_config, summarise, truth_index
from adversary.runner.attacks import load_prior_for
from adversary.runner.clip_features import check_clip_attack, frame_keys
from adversary.runner.heads import check_weights_path
from adversary.runner.inversion import Frame, FrameInverter, check_features, read_frame
from adversary.runner.meta import HeadKey, ItemMeta, item_meta
from adversary.runner.output import EVAL_SIZE, attack_fields, finish, head_groups, image_rows, recording_output, \
    score_frames, single_head
from splitleak.errors import SplitleakError
from splitleak.recording import RecordingReader

THRESHOLD_DB = 20.0


@dataclass
class FrameIndex:
    """The frames an attack will invert, plus what was skipped and why."""

    frames: list[ItemMeta] = field(default_factory=list)
    updates: int = 0  # items that are not frames (updates, states), read before stopping
    duplicates: int = 0
    stopped: bool = False  # reading stopped once max_frames were found (the rest, if any, unread)
    broken: str | None = None
    codecs: set[str] = field(default_factory=set)

    @property
    def heads(self) -> set[HeadKey]:
        return {f.head for f in self.frames}


def index_recording(folder: str, max_frames: int | None = None) -> FrameIndex:
    """First pass, tensors unread: each frame's checked metadata and feature shape, (stream, seq)
    de-duplicated; stops once `max_frames` frames are found. SplitleakError if there are none."""
    if max_frames is not None and max_frames < 1:
        raise SplitleakError(f"max_frames must be >= 1, got {max_frames}")
    reader = RecordingReader(folder)
    found, seen = FrameIndex(), set()
    for item in reader:
        if item.kind != "frame":
            found.updates += 1
            continue
        meta = item_meta(item)
        check_features(item, meta)
        if (meta.stream, meta.seq) in seen:
            found.duplicates += 1
            continue
        seen.add((meta.stream, meta.seq))
        found.codecs.add(meta.codec)
        found.frames.append(meta)
        if max_frames is not None and len(found.frames) >= max_frames:
            found.stopped = True
            break
    found.broken = reader.broken
    if not found.frames:
        what = f"only {found.updates} gradient update(s); use a gradient attack" if found.updates else "no items"
        broken = f" (reading stopped at {reader.broken})" if reader.broken else ""
        raise SplitleakError(f"recording {folder} has no feature frames to invert: it holds {what}{broken}")
    return found


def iter_frames(folder: str, wanted: list[ItemMeta]) -> Iterator[Frame]:
    """Second pass: the indexed frames with their features, in recording order; stops after the last."""
    by_index = {m.index: m for m in wanted}
    last = max(by_index)
    for item in RecordingReader(folder):
        if item.index in by_index:
            yield read_frame(item, by_index[item.index])
        if item.index >= last:
            return


class _Batcher:
    """Collects frames per head and inverts a head's batch once it holds `size` frames."""

    def __init__(self, inverter: FrameInverter, size: int, bar: tqdm) -> None:
        self.inverter, self.size, self.bar = inverter, size, bar
        self.pending: dict[HeadKey, list[Frame]] = {}

    def add(self, frame: Frame) -> None:
        batch = self.pending.setdefault(frame.meta.head, [])
        batch.append(frame)
        if len(batch) >= self.size:
            self.flush(frame.meta.head)

    def flush(self, key: HeadKey) -> None:
        batch = self.pending.pop(key, [])
        if batch:
            self.inverter.invert(key, batch)
            self.bar.update(len(batch))

    def finish(self) -> None:
        for key in list(self.pending):
            self.flush(key)


def run_feature_attack(recording: str, name: str, method: Any, out: str, *, truth: str | None, device: str,
                       seed: int, weights_path: str | None, max_frames: int | None, batch_size: int,
                       progress: bool, prior: str | None) -> dict[str, Any]:
    """Invert the recording's frames with feature attack `method`; write PNGs, metrics.json, config.json."""
    started = time.perf_counter()
    out_dir = recording_output(recording, out, truth)
    if batch_size < 1:
        raise SplitleakError(f"batch_size must be >= 1, got {batch_size}")
    index = index_recording(recording, max_frames)
    check_clip_attack(name, index.heads)
    check_weights_path(index.heads, weights_path)
    if truth is not None and not {(f.stream, f.seq) for f in index.frames} & truth_index(truth).keys():
        raise SplitleakError(f"no truth frame in {truth} matches the recording's frames "
                             f"(expected PNGs named like {index.frames[0].filename})")
    loaded = load_prior_for(method, prior, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    inverter = FrameInverter(method, out_dir, device, seed, weights_path, loaded)
    with tqdm(total=len(index.frames), disable=not progress, unit="frame", desc=f"attack {name}") as bar:
        for key in sorted(index.heads, key=str):
            inverter.case(key)  # build every head (and check weights) before the long part
        batcher = _Batcher(inverter, batch_size, bar)
        for frame in iter_frames(recording, index.frames):
            batcher.add(frame)
        batcher.finish()
    keys = [k for f in index.frames for k in frame_keys(f)]  # a clip's item: each of its frames
    scores, extra = score_frames(keys, out_dir, truth) if truth is not None else ({}, {})
    frames = image_rows(keys, scores, inverter.feature_loss)
    summary = summarise(frames, THRESHOLD_DB, inverter.seconds, ("", "_native"))
    config = _config(recording, name, method, index, seed, device, weights_path, max_frames, batch_size)
    config["attack_run"] = inverter.run_info
    config.update(prior=prior, prior_info=loaded.describe() if loaded is not None else None, truth=truth, **extra)
    config.update(base_config(EVAL_SIZE, THRESHOLD_DB), native_size="the truth frame's own size",
                  attack_seconds=inverter.seconds, total_seconds=time.perf_counter() - started)
    return finish(out_dir, frames, summary, config)


def _config(recording: str, name: str, method: Any, index: FrameIndex, seed: int, device: str,
            weights_path: str | None, max_frames: int | None, batch_size: int) -> dict[str, Any]:
    counts: dict[HeadKey, int] = {}
    for f in index.frames:
        counts[f.head] = counts.get(f.head, 0) + 1
    groups = head_groups(index.heads, counts, "frames")
    config = {**attack_fields(name, method, seed, device),
              "threat_model": ("white-box: features and the head's architecture and weights"
                               if "head_weights" in method.access
                               else "black-box: features and query access to F1 (no weights)"),
              "recording": str(Path(recording).resolve()), "weights_path": weights_path, "max_frames": max_frames,
              "batch_size": batch_size, "frames": len(index.frames), "heads": groups, "codecs": sorted(index.codecs),
              "skipped_updates": index.updates, "skipped_duplicates": index.duplicates,
              "stopped_at_max_frames": index.stopped, "recording_broken": index.broken}
    single_head(config, groups)
    return config
