"""attack-live's feature path: tapped frames, grouped by the head that made them, inverted a batch at a
time (FrameInverter, shared with the recording path), PNGs written at once."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from adversary.evaluate import base_config, summarise
from adversary.runner.attacks import load_prior_for
from adversary.runner.clip_features import frame_keys
from adversary.runner.features import THRESHOLD_DB
from adversary.runner.inversion import Frame, FrameInverter, read_frame
from adversary.runner.live_config import LiveConfig
from adversary.runner.meta import HeadKey, item_meta
from adversary.runner.output import EVAL_SIZE, attack_fields, head_groups, image_rows, live_truth, score_frames
from splitleak.errors import SplitleakError
from splitleak.recording import RecordedItem

log = logging.getLogger(__name__)


class LiveFeatures:
    """Inverts the tap's feature frames with a feature attack."""

    kinds = frozenset({"frame"})
    defaults = (8, 0.5)  # frames per batch, seconds to wait for it to fill

    def __init__(self, attack: Any, config: LiveConfig, out: Path) -> None:
        self.attack, self.config = attack, config
        self.prior = load_prior_for(attack, config.prior, config.device)
        self.inverter = FrameInverter(attack, out, config.device, config.seed, config.weights_path, self.prior,
                                      tag_cases=True)
        self.seen: set[tuple[str, int]] = set()
        self.skipped: dict[str, int] = {"duplicate": 0, "bad": 0}
        self.bar: Any = None

    @property
    def frames_written(self) -> int:
        return len(self.inverter.done)

    def start(self, bar: Any) -> None:
        self.bar = bar

    def process(self, batch: list[RecordedItem]) -> None:
        """Invert the batch's frames, one attack call per head."""
        groups: dict[HeadKey, list[Frame]] = {}
        for item in batch:
            frame = self._accept(item)
            if frame is not None:
                groups.setdefault(frame.meta.head, []).append(frame)
        for key, frames in groups.items():
            frames.sort(key=lambda f: f.key)  # consecutive frames together (video attacks)
            self.inverter.invert(key, frames)
            self.bar.update(len(frames))

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

    def finish(self) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
        """metrics.json's frames, summary, and this path's config fields."""
        c, done = self.config, self.inverter.done
        keys = sorted(k for f in done for k in frame_keys(f.meta))
        truth, extra = live_truth(c.truth)
        scores: dict[tuple[str, int], dict[str, Any]] = {}
        if truth is not None and keys:
            scores, counts = score_frames(keys, self.inverter.out, truth)
            extra.update(counts)
        frames = image_rows(keys, scores, self.inverter.feature_loss)
        summary = summarise(frames, THRESHOLD_DB, self.inverter.seconds, ("", "_native"))
        counts_per_head: dict[HeadKey, int] = {}
        for f in done:
            counts_per_head[f.meta.head] = counts_per_head.get(f.meta.head, 0) + 1
        config = {**attack_fields(c.attack, self.attack, c.seed, c.device), "family": "feature",
                  "attack_run": self.inverter.run_info, "weights_path": c.weights_path, "prior": c.prior,
                  "prior_info": self.prior.describe() if self.prior is not None else None,
                  "heads": head_groups(self.inverter.cases, counts_per_head, "frames"), "frames": len(done),
                  "skipped": self.skipped, "attack_seconds": self.inverter.seconds, **extra,
                  **base_config(EVAL_SIZE, THRESHOLD_DB), "native_size": "the truth frame's own size"}
        return frames, summary, config
