"""Gradient attacks over a recording: replay every FedSGD / FedAvg update against its round's state.

A recording holds "update" items (a gradient with its LearningMeta) and "state" items (the
trained module's state_dict each round starts from). Each FedSGD update is replayed against
the state of its round (the model's own weights tag where the recording has no state for the
round), the attack recovers the batch (a FedAvg delta of several local steps by simulating them,
adversary/gradient/local.py), and the output folder gets one PNG per frame (split
`none`) or one safetensors file of recovered features per update (a split point), then
metrics.json and config.json in the contract's shape. An attack with a batched engine
(`reconstruct_many`: dlg-batched, idlg-batched) gets every batch-1 update of the recording in one
optimisation, per model and local training, each frame with its own round's weights; the others get one
update at a time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.numpy import save_file
from tqdm import tqdm

from adversary.gradient.base import GradientCase, GradientResult
from adversary.gradient.features import feature_scores
from adversary.runner.clips import (
    check_raw_clip_attack,
    clip_summary,
    order_clips,
    sample_seqs,
    save_clip,
    update_frames,
)
from adversary.runner.gradient_report import gradient_config, gradient_metrics
from adversary.runner.gradient_truth import Truth, features_name, order_by_truth
from adversary.runner.heads import check_weights_path
from adversary.runner.meta import ItemMeta
from adversary.runner.output import finish, recording_output
from adversary.runner.updates import (Models, Plan, local_training, plan_recording, update_floor, wire_gradients,
                                      wire_labels)
from splitleak.errors import SplitleakError
from splitleak.learning import LABELS
from splitleak.models import SplitModel, feature_shape
from splitleak.recording import RecordedItem, RecordingReader
from splitleak.video import frame_name, save_png


@dataclass
class Prepared:
    """One update made into the attack's case, with what saving its result needs."""

    update: ItemMeta
    case: GradientCase
    model: SplitModel
    labels: torch.Tensor | None
    state: RecordedItem | None
    image: bool
    weights: dict[str, torch.Tensor]  # the trained parameters of its round (a snapshot)


@dataclass
class Outcome:
    """One attacked update: its rows (one per frame) and the attack's result."""

    update: ItemMeta
    result: GradientResult
    rows: list[dict[str, Any]]
    seconds: float


class GradientRunner:
    """Prepares updates into cases, attacks them (now, or held for the batched engine until flush())
    and saves each result as it comes back; shared by the recording path and the live tap."""

    def __init__(self, attack: Any, out: Path, device: str, seed: int, weights_path: str | None, truth: Truth,
                 bar: tqdm | None) -> None:
        self.attack, self.out, self.device, self.seed = attack, out, device, seed
        self.models, self.truth, self.bar = Models(device, weights_path), truth, bar
        self.outcomes: list[Outcome] = []
        self.seconds = 0.0
        self.batched = callable(getattr(attack, "reconstruct_many", None))
        self.pending: list[Prepared] = []

    def attack_update(self, update: ItemMeta, item: RecordedItem, state: RecordedItem | None) -> None:
        """Attack one update now, or hold it for the batched engine (see flush)."""
        prepared = self._prepare(update, item, state)
        if self.batched and update.batch == 1:
            self.pending.append(prepared)
            return
        start = time.perf_counter()
        result = self.attack.reconstruct(prepared.case)
        self._finished([prepared], [result], self._elapsed(start, prepared.case.device))

    def flush(self) -> None:
        """Attack every held update: one optimisation per model and local training (FedAvg steps, lr),
        frames of different rounds together."""
        groups: dict[Any, list[Prepared]] = {}
        for p in self.pending:
            groups.setdefault((p.update.head, p.case.local), []).append(p)
        self.pending = []
        for group in groups.values():
            rounds = {p.state.index if p.state is not None else None for p in group}
            weights = [p.weights for p in group] if len(rounds) > 1 else None
            if weights is None:  # one round: the module holds exactly its weights
                self.models.module(group[0].update, group[0].state)
            start = time.perf_counter()
            results = self.attack.reconstruct_many([p.case for p in group], weights)
            self._finished(group, results, self._elapsed(start, group[0].case.device))

    def _prepare(self, update: ItemMeta, item: RecordedItem, state: RecordedItem | None) -> Prepared:
        module = self.models.module(update, state)
        model = self.models.model(update.head)
        k, image = update.head, update.head.split == "none"
        shape = tuple(model.input_shape) if image else feature_shape(k.model, k.split, size=k.size,
                                                                    num_classes=k.num_classes)
        labels = wire_labels(update, item, model.num_classes)
        gradients = wire_gradients(update, module, item)
        case = GradientCase(module, gradients, update.batch, shape, model.num_classes,
                            labels, "image" if image else "features", torch.device(self.device),
                            self.seed + update.index, local=local_training(update),
                            rounding_floor=update_floor(update, module, gradients))
        self.attack.check_access(case)
        weights = ({n: p.detach().clone() for n, p in module.named_parameters() if n in case.gradients}
                   if self.batched else {})
        return Prepared(update, case, model, labels, state, image, weights)

    def metrics(self, truth: Path | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """metrics.json's frames (scored against `truth` PNGs when given) and summary, so far."""
        results = [(o.result, o.update.batch) for o in self.outcomes]
        rows = [r for o in self.outcomes for r in o.rows]
        threshold = self.attack.loss_threshold
        frames, summary = gradient_metrics(rows, results, self.seconds, self.out, truth, threshold)
        summary.update(clip_summary(frames))  # raw clips: each clip's mean over its frames
        return frames, summary

    @staticmethod
    def _elapsed(start: float, device: torch.device) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    def _finished(self, prepared: list[Prepared], results: list[GradientResult], seconds: float) -> None:
        """Save each update's result; the seconds of a batched call are shared out per frame."""
        self.seconds += seconds
        frames = sum(p.update.batch for p in prepared)
        for p, result in zip(prepared, results):
            share = seconds * p.update.batch / frames
            threshold = self.attack.success_thresholds(p.case)  # the rule this update was held to
            self.outcomes.append(self._save(p.update, p.model, result, p.labels, p.state, share, p.image,
                                            float(p.case.gradient_norm2()),
                                            None if threshold is None else float(threshold[0])))
            if self.bar is not None:
                self.bar.update(p.update.batch)

    def _save(self, update: ItemMeta, model: SplitModel, result: GradientResult, labels: torch.Tensor | None,
              state: RecordedItem | None, seconds: float, image: bool, norm2: float,
              threshold: float | None) -> Outcome:
        clip = image and model.input_kind == "clip"  # a raw clip: the dummy was the whole clip
        if clip:
            truths = [self.truth.sample(update, model, seq) for seq in sample_seqs(update)]
            order = order_clips(result.inputs.detach().float().cpu().numpy(), truths)
        else:
            truths = ([self.truth.image(update.stream, update.seq + i) for i in range(update.batch)] if image
                      else self.truth.features(update, model))
            order = order_by_truth(result, truths, image)
        inputs = result.inputs.detach().float().cpu()[order]
        found = result.labels.detach().cpu()[order]
        rows = []
        seqs = sample_seqs(update)  # a clip model's sample is a clip: seq is its first frame
        for i in range(update.batch):
            row: dict[str, Any] = {"stream": update.stream, "seq": seqs[i], "update": update.index,
                                   "round": update.round, "state": "recorded" if state is not None else "initial",
                                   **loss_fields(float(result.loss[order[i]]), norm2, self.attack.relative_loss),
                                   "loss_threshold": threshold,
                                   "attack_success": bool(result.success[order[i]]), "label": int(found[i]),
                                   "label_true": None if labels is None else int(labels[i])}
            if clip:
                rows += save_clip(self.out, row, inputs[i], truths[i], model, update.stream)
                continue
            if image:
                save_png(self.out / frame_name(update.stream, update.seq + i), inputs[i].numpy())
            elif truths[i] is not None:
                true = torch.from_numpy(truths[i])  # type: ignore[arg-type]
                mse, cos = feature_scores(inputs[i][None], true[None])
                row.update(feature_mse=float(mse[0]), feature_cosine=float(cos[0]),
                           feature_rel_error=relative_error(inputs[i], true))
            rows.append(row)
        if not image:
            save_file({"features": inputs.numpy(), LABELS: found.numpy()},
                      str(self.out / features_name(update.stream, update.seq)))
        return Outcome(update, result, rows, seconds)


def relative_error(recovered: torch.Tensor, truth: torch.Tensor) -> float:
    """||recovered - truth|| / ||truth||: 0 for an exact recovery, ~1.4 for an unrelated one of the same norm."""
    r, t = recovered.detach().double().flatten(), truth.detach().double().flatten()
    return float((r - t).norm() / t.norm().clamp_min(1e-30))


def loss_fields(loss: float, norm2: float, relative: bool) -> dict[str, float]:
    """The attack's own loss, and both readings of it: absolute L2 and over the gradient's squared norm."""
    l2 = loss * norm2 if relative else loss
    return {"gradient_loss": loss, "gradient_loss_l2": l2, "gradient_loss_relative": l2 / max(norm2, 1e-30),
            "gradient_norm": norm2 ** 0.5}


def _stream_updates(recording: str, plan: Plan, runner: GradientRunner) -> None:
    """Second pass: attack each planned update once its round's state (if recorded) has been read;
    stops after the last planned update."""
    wanted = {u.index: u for u in plan.updates}
    needed = {plan.state_of(u) for u in plan.updates} - {None}
    last = max(wanted)
    states: dict[int, RecordedItem] = {}
    waiting: dict[int, list[tuple[ItemMeta, RecordedItem]]] = {}
    for item in RecordingReader(recording):
        if item.index in needed:
            states[item.index] = item
            for update, held in waiting.pop(item.index, []):
                runner.attack_update(update, held, item)
        update = wanted.get(item.index)
        if update is not None:
            s = plan.state_of(update)
            if s is None or s in states:
                runner.attack_update(update, item, None if s is None else states[s])
            else:
                waiting.setdefault(s, []).append((update, item))
        if item.index >= last and not waiting:
            return


def run_gradient_attack(recording: str, name: str, method: Any, out: str, *, truth: str | None, device: str,
                        seed: int, weights_path: str | None, max_frames: int | None,
                        progress: bool) -> dict[str, Any]:
    """Invert every FedSGD / FedAvg update of `recording` with gradient attack `method`; write outputs to `out`.

    Split `none`: one PNG per frame, scored with `truth` at 128 px (psnr, ssim) and at the truth's
    size (psnr_native, ssim_native). A split point: one `*.features.safetensors` per update, scored
    by feature MSE / cosine against truth feature files or the head run on the truth PNGs. A frame
    succeeds when its gradient loss is below the attack's threshold and, where scored, PSNR >= 30 dB.
    Returns the metrics dict (also in out/metrics.json; config in out/config.json).
    """
    started = time.perf_counter()
    out_dir = recording_output(recording, out, truth)
    plan = plan_recording(recording, max_frames)
    keys = {u.head for u in plan.updates}
    check_weights_path(keys, weights_path)
    check_raw_clip_attack(name, method, keys)
    splits = {k.split == "none" for k in keys}
    if len(splits) > 1:
        raise SplitleakError("the recording mixes raw-frame (split none) and feature updates; attack them separately")
    image = splits.pop()
    truths = Truth(truth)
    wanted = {(u.stream, seq) for u in plan.updates for seq in update_frames(u)}
    if truth is not None and image and not wanted & truths.frames.keys():
        raise SplitleakError(f"no truth frame in {truth} matches the recording's frames "
                             f"(expected PNGs named like {plan.updates[0].filename})")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tqdm(total=sum(u.batch for u in plan.updates), disable=not progress, unit="frame",
              desc=f"attack {name}") as bar:
        runner = GradientRunner(method, out_dir, device, seed, weights_path, truths, bar)
        for key in sorted(keys, key=str):
            runner.models.model(key)  # build every model (and check weights) before the long part
        _stream_updates(recording, plan, runner)
        runner.flush()
    frames, summary = runner.metrics(truths.folder if image else None)
    config = gradient_config(recording, name, method, plan, seed, device, weights_path, max_frames, truth)
    config.update(attack_seconds=runner.seconds, total_seconds=time.perf_counter() - started)
    return finish(out_dir, frames, summary, config)
