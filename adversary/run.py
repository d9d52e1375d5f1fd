"""`splitleak attack`: invert every tapped frame of a recording, write PNGs, metrics.json, config.json."""

from __future__ import annotations

import inspect
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from adversary.evaluate import base_config, score_pairs, summarise, truth_index, write_grid, write_metrics
import adversary.gradient  # noqa: F401  (registers the gradient attacks)
from adversary.feature.base import FeatureInversionAttack, WhiteBoxCase
from adversary.heads import build_head, check_weights_path
from adversary.registry import get_attack
from adversary.tapped import FrameIndex, FrameRef, HeadKey, index_recording, iter_features
from splitleak.errors import SplitleakError
from splitleak.recording import write_json
from splitleak.video import save_png

EVAL_SIZE, THRESHOLD_DB = 128, 20.0


def make_attack(name: str, iterations: int | None, options: dict[str, float] | None = None) -> FeatureInversionAttack:
    """Instantiate a registered feature attack, with `iterations` and keyword `options` if given."""
    cls = get_attack(name)
    options = dict(options or {})
    known = set(inspect.signature(cls.__init__).parameters) - {"self", "iterations"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise SplitleakError(f"attack {name!r} has no option {unknown[0]!r}; it takes {', '.join(sorted(known)) or 'none'}")
    if getattr(cls, "family", None) != "feature":
        raise SplitleakError(f"attack {name!r} inverts gradients; this recording path runs feature attacks only")
    if iterations is not None and (isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1):
        raise SplitleakError(f"iterations must be a positive integer, got {iterations!r}")
    if iterations is not None:
        options["iterations"] = iterations
    return cls(**options)


def output_folder(recording: str, out: str, truth: str | None) -> Path:
    """Check the recording exists and the output folder is usable (not an input); return it."""
    if not Path(recording).is_dir():
        raise SplitleakError(f"recording folder not found: {recording}")
    out_dir = Path(out)
    _check_out(out_dir, recording, truth)
    return out_dir


def _check_out(out: Path, recording: str, truth: str | None) -> None:
    for other, what in ((recording, "recording"), (truth, "truth")):
        if other is not None and Path(other).resolve() == out.resolve():
            raise SplitleakError(f"output folder {out} is the {what} folder; choose another")
    if out.exists() and not out.is_dir():
        raise SplitleakError(f"output path {out} exists and is not a folder")


class _Runner:
    """Batches frames per head, builds each head once, and saves what the attack returns."""

    def __init__(self, attack: FeatureInversionAttack, out: Path, device: str, seed: int,
                 weights_path: str | None, batch_size: int, bar: tqdm, prior: Any = None) -> None:
        self.attack, self.out, self.device, self.seed, self.prior = attack, out, device, seed, prior
        self.weights_path, self.batch_size, self.bar = weights_path, batch_size, bar
        self.cases: dict[HeadKey, WhiteBoxCase] = {}
        self.pending: dict[HeadKey, list[tuple[FrameRef, np.ndarray]]] = {}
        self.seconds = 0.0
        self.feature_loss: dict[tuple[str, int], float] = {}

    def case(self, key: HeadKey) -> WhiteBoxCase:
        if key not in self.cases:
            model = build_head(key, self.device, self.weights_path)
            self.cases[key] = WhiteBoxCase(model.head, tuple(model.input_shape), torch.device(self.device), self.seed,
                                           prior=self.prior)
            self.attack.check_access(self.cases[key])
        return self.cases[key]

    def add(self, ref: FrameRef, z: np.ndarray) -> None:
        batch = self.pending.setdefault(ref.head, [])
        batch.append((ref, z))
        if len(batch) >= self.batch_size:
            self.flush(ref.head)

    def flush(self, key: HeadKey) -> None:
        batch = self.pending.pop(key, [])
        if not batch:
            return
        case = replace(self.case(key), frames=tuple((ref.stream, ref.seq) for ref, _ in batch))
        features = torch.from_numpy(np.concatenate([z for _, z in batch]))
        start = time.perf_counter()
        images = self.attack.reconstruct(features, case)
        if case.device.type == "cuda":
            torch.cuda.synchronize(case.device)
        self.seconds += time.perf_counter() - start
        losses = getattr(self.attack, "last_loss", None)
        for i, ((ref, _), x) in enumerate(zip(batch, images.float().cpu().numpy())):
            save_png(self.out / ref.filename, x)
            if losses is not None:
                self.feature_loss[(ref.stream, ref.seq)] = float(losses[i])
        self.bar.update(len(batch))

    def finish(self) -> None:
        for key in list(self.pending):
            self.flush(key)


def _metrics(index: FrameIndex, out: Path, truth: str | None, threshold: float, seconds: float,
             feature_loss: dict[tuple[str, int], float]) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    keys = [(f.stream, f.seq) for f in index.frames]
    scores: dict[tuple[str, int], dict[str, Any]] = {}
    extra: dict[str, Any] = {"truth": truth}
    if truth is not None:
        truths = truth_index(truth)
        pairs = [(k, out / f.filename, truths[k]) for f, k in zip(index.frames, keys) if k in truths]
        scores = {(r["stream"], r["seq"]): r for r in score_pairs(pairs, {"": EVAL_SIZE, "_native": None})}
        write_grid(pairs, out / "grid.png", EVAL_SIZE)
        extra.update(scored_frames=len(pairs), frames_without_truth=len(keys) - len(pairs))
    empty = {"psnr": None, "ssim": None, "psnr_native": None, "ssim_native": None}
    frames = [{**empty, **scores.get(k, {"stream": k[0], "seq": k[1]}), "feature_loss": feature_loss.get(k)}
              for k in keys]
    return frames, summarise(frames, threshold, seconds, ("", "_native")), extra


def run_attack(recording: str, attack: str, out: str, *, truth: str | None = None, device: str = "cpu",
               iterations: int | None = None, seed: int = 0, weights_path: str | None = None,
               max_frames: int | None = None, batch_size: int = 8, progress: bool = True,
               options: dict[str, float] | None = None, prior: str | None = None) -> dict[str, Any]:
    """Invert the recording's feature frames with `attack`; write PNGs, metrics.json, config.json to `out`.

    `prior`: a prior folder (diffusers format) or hub name, for attacks that need one (db, dmb, ...).

    With `truth`, frames are scored at 128 px (psnr, ssim) and at the truth's size (psnr_native,
    ssim_native); without it the scores are null. summary.seconds is the attack's own wall time.
    Returns the metrics dict.
    """
    if prior is not None and "prior" not in getattr(get_attack(attack), "access", ()):
        raise SplitleakError(f"attack {attack!r} takes no prior; drop --prior")
    if getattr(get_attack(attack), "family", None) == "gradient":  # gradient updates: their own runner
        from adversary.gradient.run import run_gradient_attack

        return run_gradient_attack(recording, attack, out, truth=truth, device=device, iterations=iterations,
                                   seed=seed, weights_path=weights_path, max_frames=max_frames, options=options,
                                   progress=progress)
    started = time.perf_counter()
    out_dir = output_folder(recording, out, truth)
    if batch_size < 1:
        raise SplitleakError(f"batch_size must be >= 1, got {batch_size}")
    method = make_attack(attack, iterations, options)
    index = index_recording(recording, max_frames)
    heads = {f.head for f in index.frames}
    check_weights_path(heads, weights_path)
    if truth is not None and not {(f.stream, f.seq) for f in index.frames} & truth_index(truth).keys():
        raise SplitleakError(f"no truth frame in {truth} matches the recording's frames "
                             f"(expected PNGs named like {index.frames[0].filename})")
    loaded = None
    if "prior" in method.access:
        if prior is None:
            raise SplitleakError(f"attack {attack!r} needs a diffusion prior; pass --prior DIR")
        from adversary.priors.diffusion import load_prior

        loaded = load_prior(prior, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(index.frames), disable=not progress, unit="frame", desc=f"attack {attack}") as bar:
        runner = _Runner(method, out_dir, device, seed, weights_path, batch_size, bar, loaded)
        for key in sorted(heads, key=str):
            runner.case(key)  # build every head (and check weights) before the long part
        for ref, z in iter_features(recording, {f.index: f for f in index.frames}):
            runner.add(ref, z)
        runner.finish()
    frames, summary, extra = _metrics(index, out_dir, truth, THRESHOLD_DB, runner.seconds, runner.feature_loss)
    config = _config(recording, attack, method, index, heads, device, seed, weights_path, max_frames, batch_size)
    config.update(prior=prior, prior_info=loaded.describe() if loaded is not None else None)
    config.update(extra, **base_config(EVAL_SIZE, THRESHOLD_DB), native_size="the truth frame's own size",
                  attack_seconds=runner.seconds, total_seconds=time.perf_counter() - started)
    write_json(out_dir / "config.json", config)
    return write_metrics(out_dir, frames, summary, config)


def _config(recording: str, attack: str, method: FeatureInversionAttack, index: FrameIndex, heads: set[HeadKey],
            device: str, seed: int, weights_path: str | None, max_frames: int | None,
            batch_size: int) -> dict[str, Any]:
    groups = [{"model": k.model, "split": k.split, "size": k.size, "weights": k.weights, "num_classes": k.num_classes,
               "frames": sum(f.head == k for f in index.frames)} for k in sorted(heads, key=str)]
    config: dict[str, Any] = {
        "attack": attack, "attack_config": method.config(), "access": sorted(method.access),
        "threat_model": ("white-box: features and the head's architecture and weights" if "head_weights" in method.access
                         else "black-box: features and query access to F1 (no weights)"),
        "iterations": getattr(method, "iterations", None), "seed": seed, "device": device,
        "recording": str(Path(recording).resolve()), "weights_path": weights_path, "max_frames": max_frames,
        "batch_size": batch_size, "frames": len(index.frames), "heads": groups,
        "codecs": sorted(index.codecs), "skipped_updates": index.updates, "skipped_duplicates": index.duplicates,
        "recording_broken": index.broken, "torch": torch.__version__}
    if len(groups) == 1:
        config.update({k: groups[0][k] for k in ("model", "split", "size", "weights")})
    return config
