"""metrics.json and config.json of a gradient run: per-frame rows scored, the summary, the settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from adversary.evaluate import base_config, summarise
from adversary.gradient.base import FLOOR_MARGIN, GradientResult
from adversary.runner.meta import HeadKey, ItemMeta
from adversary.runner.output import EMPTY_SCORES, EVAL_SIZE, attack_fields, head_groups, score_frames, single_head
from adversary.runner.updates import Plan

SUCCESS_DB = 30.0


Rows = list[dict[str, Any]]


def gradient_metrics(rows: Rows, results: list[tuple[GradientResult, int]], seconds: float, out: Path,
                     truth: Path | None, threshold: float | None) -> tuple[Rows, dict[str, Any]]:
    """Frames (rows scored against `truth` PNGs when given, success per frame) and the summary;
    `results`: each update's result with its batch size."""
    keys = [(r["stream"], r["seq"]) for r in rows]
    scores = score_frames(keys, out, truth)[0] if truth is not None else {}
    frames = []
    for r in rows:
        row = {**EMPTY_SCORES, "loss_threshold": threshold, **r, **scores.get((r["stream"], r["seq"]), {})}
        checks = [] if row["loss_threshold"] is None else [row["gradient_loss"] < row["loss_threshold"]]
        if row["psnr"] is not None:
            checks.append(row["psnr"] >= SUCCESS_DB)
        row["success"] = all(checks) if checks else None
        row["label_correct"] = None if row["label_true"] is None else row["label"] == row["label_true"]
        frames.append(row)
    summary = summarise(frames, SUCCESS_DB, seconds, ("", "_native"))
    summary["success_rate_psnr"] = summary["success_rate"]
    summary["success_rate"] = _rate([f["success"] for f in frames])
    limits = [f["loss_threshold"] for f in frames]  # per frame: a FedAvg delta's rule sits over its rounding floor
    summary["success_rate_loss"] = (None if threshold is None
                                    else _rate([f["gradient_loss"] < t for f, t in zip(frames, limits)]))
    summary["raised_loss_thresholds"] = sum(t is not None and threshold is not None and t > threshold for t in limits)
    for rule in ("l2", "relative"):  # both readings of the loss rule, whatever the attack optimised
        values = [f.get(f"gradient_loss_{rule}") for f in frames]
        summary[f"success_rate_loss_{rule}"] = (None if threshold is None or None in values
                                                else _rate([v < t for v, t in zip(values, limits)]))
    known = [(r.extra["label_accuracy"], b) for r, b in results if r.extra.get("label_accuracy") is not None]
    summary["label_accuracy"] = sum(a * b for a, b in known) / sum(b for _, b in known) if known else None
    summary["frames"], summary["updates"] = len(frames), len(results)
    summary["seconds_per_frame"] = seconds / len(frames) if frames else None
    summary["mean_gradient_loss"] = float(np.mean([f["gradient_loss"] for f in frames])) if frames else None
    for k in ("feature_mse", "feature_cosine", "feature_rel_error"):
        vals = [f[k] for f in frames if f.get(k) is not None]
        summary[f"mean_{k}"] = float(np.mean(vals)) if vals else None
    return frames, summary


def _rate(flags: list[bool | None]) -> float | None:
    known = [bool(f) for f in flags if f is not None]
    return sum(known) / len(known) if known else None


def gradient_fields(name: str, method: Any, seed: int, device: str, updates: list[ItemMeta],
                    rounds_without_state: list[int]) -> dict[str, Any]:
    """config.json's fields of every gradient run (recording or live): the attack, the success rule,
    the threat model, and the updates attacked (per model, per round)."""
    threshold = method.loss_threshold
    reading = " over the tapped gradient's squared norm" if method.relative_loss else ""
    loss_rule = (f"gradient loss{reading} < {threshold:g} (a FedAvg delta's: < max({threshold:g}, "
                 f"{FLOOR_MARGIN:g} x its float32 rounding floor), each frame's in its loss_threshold)"
                 if threshold is not None else None)
    criterion = " and ".join(x for x in (loss_rule, f"PSNR at {EVAL_SIZE}px >= {SUCCESS_DB:g} dB where the truth "
                                                    f"is given") if x)
    counts: dict[HeadKey, int] = {}
    for u in updates:
        counts[u.head] = counts.get(u.head, 0) + 1
    models = head_groups(counts, counts, "updates")
    config: dict[str, Any] = {
        **attack_fields(name, method, seed, device), "family": "gradient",
        "threat_model": "honest-but-curious server: the FedSGD gradient or FedAvg delta (with its learning rate "
                        "and local steps), the model's architecture and the round's weights, the batch size",
        "local_training": local_training_fields(updates),
        "success_criterion": criterion, "success_loss_below": threshold, "success_psnr_db": SUCCESS_DB,
        "success_rate_loss": "fraction of frames whose update's gradient loss is below the attack's threshold",
        "success_rate_loss_l2": "the same rule on the absolute L2 gradient distance (the paper's)",
        "success_rate_loss_relative": "the same rule on the L2 distance over the tapped gradient's squared norm",
        "loss_relative_to_gradient_norm": method.relative_loss,
        "success_rate_psnr": f"fraction of scored frames at PSNR >= {SUCCESS_DB:g} dB ({EVAL_SIZE}px)",
        "batch_order": "reconstructions of a batch are matched to the truth frames by PSNR (features: cosine), "
                       "Hungarian; a batch's order is not in its gradient",
        "label_accuracy": "labels recovered vs the labels on the wire, as multisets per update",
        "seed_per_update": "seed + item index", "frames": sum(u.batch for u in updates), "updates": len(updates),
        "models": models, "rounds": sorted({u.round for u in updates}), "rounds_without_state": rounds_without_state,
        "without_state": "the model's weights tag (round 0 weights)"}
    single_head(config, models)
    config.update(base_config(EVAL_SIZE, SUCCESS_DB), native_size="the truth frame's own size")
    return config


def local_training_fields(updates: list[ItemMeta]) -> list[dict[str, Any]]:
    """How many updates of each kind were attacked: fedsgd, and fedavg per (local steps, lr); what was matched."""
    counts: dict[tuple[str, int, float | None], int] = {}
    for u in updates:
        key = ("fedsgd", 1, None) if u.mode != "fedavg" else ("fedavg", u.local_steps, u.lr)
        counts[key] = counts.get(key, 0) + 1
    matched = {"fedsgd": "the gradient", "fedavg": "the delta over -lr against the same of the local training "
                                                   "simulated on the dummy batch (one step: the gradient)"}
    return [{"mode": mode, "local_steps": steps, "lr": lr, "updates": n, "matched": matched[mode]}
            for (mode, steps, lr), n in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0))]


def gradient_config(recording: str, name: str, method: Any, plan: Plan, seed: int, device: str,
                    weights_path: str | None, max_frames: int | None, truth: str | None) -> dict[str, Any]:
    """config.json of a recording's gradient run."""
    without = sorted({u.round for u in plan.updates if plan.state_of(u) is None})
    config = gradient_fields(name, method, seed, device, plan.updates, without)
    config.update({"recording": str(Path(recording).resolve()), "truth": truth, "weights_path": weights_path,
                   "max_frames": max_frames, "skipped_frames": plan.skipped_frames,
                   "stopped_at_max_frames": plan.stopped, "recording_broken": plan.broken})
    return config
