"""What every run writes: the output folder, truth scoring, config.json and metrics.json."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import torch

from adversary.configs import value_of
from adversary.evaluate import score_pairs, truth_index, write_grid, write_metrics
from adversary.runner.meta import HeadKey
from splitleak.errors import SplitleakError
from splitleak.recording import write_json
from splitleak.video import frame_name

log = logging.getLogger(__name__)
EVAL_SIZE = 128  # px at which psnr / ssim are reported (the *_native scores use the truth's own size)
SIZES: dict[str, int | None] = {"": EVAL_SIZE, "_native": None}
EMPTY_SCORES = {"psnr": None, "ssim": None, "psnr_native": None, "ssim_native": None}
Key = tuple[str, int]


def output_folder(out: str, *inputs: tuple[str | None, str]) -> Path:
    """The output folder, checked: not one of the (path, what) inputs, not an existing file."""
    out_dir = Path(out)
    for other, what in inputs:
        if other is not None and Path(other).resolve() == out_dir.resolve():
            raise SplitleakError(f"output folder {out} is the {what} folder; choose another")
    if out_dir.exists() and not out_dir.is_dir():
        raise SplitleakError(f"output path {out} exists and is not a folder")
    return out_dir


def recording_output(recording: str, out: str, truth: str | None) -> Path:
    """Check the recording folder exists and the output folder is usable; return the latter."""
    if not Path(recording).is_dir():
        raise SplitleakError(f"recording folder not found: {recording}")
    return output_folder(out, (recording, "recording"), (truth, "truth"))


def live_truth(truth: str | None) -> tuple[Path | None, dict[str, Any]]:
    """A live run's truth folder, if it appeared by the end (the edge writes it as it streams), and
    config.json's word on it."""
    if truth is not None and not Path(truth).is_dir():
        log.warning("truth folder %s never appeared; frames are not scored", truth)
        return None, {"truth": truth, "truth_missing": True}
    return (Path(truth) if truth is not None else None), {"truth": truth}


def score_frames(keys: Iterable[Key], out: Path, truth: str | Path) -> tuple[dict[Key, dict[str, Any]], dict[str, int]]:
    """Score the reconstructed PNGs in `out` that have a truth frame (and draw grid.png): scores by
    (stream, seq), and how many frames were scored and had no truth."""
    keys = list(keys)
    truths = truth_index(truth)
    pairs = [(k, out / frame_name(*k), truths[k]) for k in keys if k in truths]
    scores = {(r["stream"], r["seq"]): r for r in score_pairs(pairs, SIZES)}
    if pairs:
        write_grid(pairs, out / "grid.png", EVAL_SIZE)
    return scores, {"scored_frames": len(pairs), "frames_without_truth": len(keys) - len(pairs)}


def image_rows(keys: Iterable[Key], scores: dict[Key, dict[str, Any]],
               feature_loss: dict[Key, float]) -> list[dict[str, Any]]:
    """metrics.json's frames for feature attacks: scores (null without truth) and the feature loss."""
    return [{**EMPTY_SCORES, **scores.get(k, {"stream": k[0], "seq": k[1]}), "feature_loss": feature_loss.get(k)}
            for k in keys]


def attack_fields(name: str, method: Any, seed: int, device: str) -> dict[str, Any]:
    """The config fields every run records about its attack."""
    return {"attack": name, "attack_config": method.describe(), "access": sorted(method.access),
            "iterations": iterations_of(method.config), "seed": seed, "device": device,
            "torch": torch.__version__}


def iterations_of(config: Any) -> int | None:
    """The config's `iterations` field, wherever it is nested (a black-box inverter's training steps)."""
    try:
        return value_of(config, "iterations")
    except SplitleakError:
        return None


def head_groups(keys: Iterable[HeadKey], counts: dict[HeadKey, int], what: str) -> list[dict[str, Any]]:
    """One config entry per model (head), with how many `what` (frames, updates) it made."""
    return [{"model": k.model, "split": k.split, "size": k.size, "weights": k.weights, "num_classes": k.num_classes,
             "classifier": k.classifier or None, what: counts.get(k, 0)} for k in sorted(keys, key=str)]


def single_head(config: dict[str, Any], groups: list[dict[str, Any]]) -> None:
    """With one model in the run, its model / split / size / weights also at the config's top level."""
    if len(groups) == 1:
        config.update({k: groups[0][k] for k in ("model", "split", "size", "weights")})


def finish(out: Path, frames: list[dict[str, Any]], summary: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Write config.json and metrics.json ({frames, summary, config}); return the metrics."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", config)
    return write_metrics(out, frames, summary, config)
