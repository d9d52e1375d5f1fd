"""attack-live's gradient path: each tapped update, against its round's state, made into a case and
attacked as `splitleak attack` does it (GradientRunner, shared with the recording path).

The tap sends a model's state before the updates of its round; the latest state per (model, round) is
kept, a few rounds back. An attack with a batched engine (dlg-batched, idlg-batched) gets every batch-1
update of a gathered batch in one `reconstruct_many` call (frames of different rounds together, each
with its own round's weights); the others get one update at a time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from adversary.runner.attacks import check_prior
from adversary.runner.clips import check_raw_clip_attack
from adversary.runner.gradient_report import gradient_fields
from adversary.runner.gradient_truth import Truth
from adversary.runner.gradients import GradientRunner
from adversary.runner.live_config import LiveConfig
from adversary.runner.meta import HeadKey, ItemMeta, item_meta
from adversary.runner.output import live_truth
from adversary.runner.updates import check_attackable
from splitleak.errors import SplitleakError
from splitleak.recording import RecordedItem

log = logging.getLogger(__name__)
KEEP_ROUNDS = 4  # states kept per model behind its newest round: a late update still finds its round's


class LiveGradients:
    """Attacks the tap's gradient updates (fedsgd gradients; fedavg deltas)."""

    kinds = frozenset({"update", "state"})

    def __init__(self, attack: Any, config: LiveConfig, out: Path) -> None:
        check_prior(config.attack, config.prior)
        self.attack, self.config = attack, config
        self.runner = GradientRunner(attack, out, config.device, config.seed, config.weights_path, Truth(None), None)
        self.states: dict[tuple[HeadKey, int], RecordedItem] = {}
        self.image: bool | None = None  # raw frames (split none) or features: fixed by the first update
        self.seen: set[tuple[str, int]] = set()
        self.skipped = {"bad": 0, "duplicate": 0, "not_attackable": 0, "other_split": 0}
        self._truth_fresh = False

    @property
    def defaults(self) -> tuple[int, float]:
        """Frames per gathered batch and seconds to wait for it: many for the batched engine, one otherwise."""
        return (64, 1.0) if self.runner.batched else (1, 0.0)

    @property
    def frames_written(self) -> int:
        return sum(len(o.rows) for o in self.runner.outcomes)

    def start(self, bar: Any) -> None:
        self.runner.bar = bar

    def process(self, batch: list[RecordedItem]) -> None:
        """Attack the batch's updates: batch-1 ones together at the end (the batched engine), the rest as read."""
        self._truth_fresh = False
        for item in batch:
            self._take(item)
        self.runner.flush()

    def _take(self, item: RecordedItem) -> None:
        try:
            meta = item_meta(item)
        except SplitleakError as err:
            return self._skip("bad", item, err)
        if item.kind == "state":
            return self._keep_state(meta, item)
        try:
            check_attackable(meta)
            check_raw_clip_attack(self.runner.attack.name, self.runner.attack, {meta.head})
        except SplitleakError as err:
            return self._skip("not_attackable", item, err)
        keys = [(meta.stream, meta.seq + i) for i in range(meta.batch)]
        if any(k in self.seen for k in keys):
            return self._skip("duplicate", item, "a frame already attacked")
        image = meta.head.split == "none"
        if self.image is not None and image != self.image:
            return self._skip("other_split", item, "raw-frame and feature updates are not mixed in one run")
        self.runner.models.model(meta.head)  # a head that cannot be rebuilt (weights) ends the run
        self._refresh_truth(meta, image)
        try:
            self.runner.attack_update(meta, item, self.states.get((meta.head, meta.round)))
        except SplitleakError as err:
            return self._skip("bad", item, err)
        self.image = image
        self.seen.update(keys)

    def _skip(self, why: str, item: RecordedItem, err: object) -> None:
        log.warning("skipping tapped item %d: %s", item.index, err)
        self.skipped[why] += 1

    def _keep_state(self, meta: ItemMeta, item: RecordedItem) -> None:
        self.states[(meta.head, meta.round)] = item
        for key in [k for k in self.states if k[0] == meta.head and k[1] < meta.round - KEEP_ROUNDS]:
            del self.states[key]

    def _refresh_truth(self, meta: ItemMeta, image: bool) -> None:
        """Re-read the truth folder once per batch where saving needs it (a batch's order, feature
        scores): the edge writes it as it streams."""
        truth = self.config.truth
        if self._truth_fresh or truth is None or (image and meta.batch == 1) or not Path(truth).is_dir():
            return
        self.runner.truth, self._truth_fresh = Truth(truth), True

    def finish(self) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
        """metrics.json's frames, summary, and this path's config fields."""
        c, outcomes = self.config, self.runner.outcomes
        truth, extra = live_truth(c.truth)
        frames, summary = self.runner.metrics(truth if self.image else None)
        without = sorted({r["round"] for o in outcomes for r in o.rows if r["state"] == "initial"})
        config = gradient_fields(c.attack, self.attack, c.seed, c.device, [o.update for o in outcomes], without)
        config.update(extra, weights_path=c.weights_path, skipped=self.skipped, attack_seconds=self.runner.seconds,
                      seed_per_update="seed + the update's item index in OUT/tap")
        return frames, summary, config
