"""Footage for the feature-inversion benchmark: who may see which frames, and the cached assets.

The split (one clip, cut in time, as `splitleak train-victim` cuts every clip):
  attacker's footage  the first TRAIN_FRACTION of sample:bikes (frames 0..174 of 250): trains
                      the diffusion prior and is the black-box adversary's query set
  victim training     the first TRAIN_FRACTION of bikes, bigbuckbunny and carphone (train-victim)
  public footage      the first frames of each PUBLIC clip (bigbuckbunny, carphone; as many as the
                      attacker's footage in all, `public_frames`): the black-box adversary's query set
                      in the benchmark's "public" setting, where its prior knows the scene and its
                      queries do not (the victim trained on these frames too: it does not matter to
                      the inverters, which only see what F1 answers)
  evaluation          consecutive frames from the last (1 - TRAIN_FRACTION) of bikes (175..249):
                      seen by neither the prior, the inverters nor the victim
The prior and the victim are cached under a folder keyed by the settings that make them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adversary.runner.run import run_attack
from splitleak.models import SplitModel, build_split_model
from splitleak.recording import RecordingWriter, write_json
from splitleak.video import frame_name, open_source, save_png, to_model_input

CLIP = "sample:bikes"
PUBLIC = ("sample:bigbuckbunny", "sample:carphone")  # other clips: the "public" black-box query set
TRAIN_FRACTION = 0.7  # the same cut as adversary.victim's default
STREAM = "heldout"


def clip_frames(spec: str = CLIP) -> int:
    with open_source(spec) as src:
        return sum(1 for _ in src)


def attacker_frames(total: int) -> int:
    """How many leading frames the attacker has (and the victim trained on): round(total * 0.7)."""
    return int(round(total * TRAIN_FRACTION))


def public_frames(attacker: int) -> int:
    """Frames taken from each PUBLIC clip: as many query images in all as the attacker's footage."""
    return -(-attacker // len(PUBLIC))


def held_out_start(total: int) -> int:
    """Where the evaluation frames start by default: a third of the way into the held-out part."""
    cut = attacker_frames(total)
    return cut + (total - cut) // 3


def held_out(count: int, size: int, clip: str = CLIP, start: int | None = None) -> tuple[list[int], np.ndarray]:
    """`count` consecutive held-out frame indices of `clip` from `start` (default `held_out_start`)
    and their model inputs (count, 3, size, size) in [0, 1]."""
    total = clip_frames(clip)
    cut = attacker_frames(total)
    start = held_out_start(total) if start is None else start
    wanted = list(range(start, start + count))
    if start < cut or wanted[-1] >= total:
        raise ValueError(f"{clip} has {total} frames, held out from {cut}; cannot take {count} held-out frames "
                         f"from {start}")
    with open_source(clip) as src:
        images = {f.index: f.image for f in src if start <= f.index < start + count}
    return wanted, np.stack([to_model_input(images[i], size) for i in wanted])


def write_truth(folder: Path, seqs: list[int], images: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for seq, x in zip(seqs, images):
        save_png(folder / frame_name(STREAM, seq), x)
    return folder


def write_recording(folder: Path, model: SplitModel, seqs: list[int], images: np.ndarray,
                    source: str = CLIP) -> Path:
    """What the cloud's tap would have recorded for these frames through `model`'s head (fp32 codec)."""
    with RecordingWriter(folder, {"benchmark": "feature_inversion", "source": source}) as writer, torch.no_grad():
        for seq, x in zip(seqs, images):
            z = model.head(torch.from_numpy(x)[None]).numpy()
            meta = {"stream_id": STREAM, "seq": seq, "model_id": model.name, "split_point": model.split,
                    "weights": model.weights, "input_size": model.size, "num_classes": model.num_classes,
                    "codec": {"name": "fp32"}}
            writer.append("frame", meta, {"features": z})
    return folder


def invert(recording: Path, attack: str, out: Path, truth: Path, iterations: int, options: dict[str, Any],
           prior: Path | None, victim: str, victim_path: Path, frames: int, seed: int = 0) -> dict[str, Any]:
    """Run `attack` on a benchmark recording as one batch of `frames` (the trained victim's weights
    where victim is "trained", with `seed`); returns the run's metrics."""
    return run_attack(str(recording), attack, str(out), truth=str(truth), iterations=iterations, options=options,
                      prior=str(prior) if prior is not None else None,
                      weights_path=str(victim_path) if victim == "trained" else None,
                      batch_size=frames, progress=False, seed=seed)


def key(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def cached_prior(cache: Path, size: int, steps: int, vae_steps: int, batch: int, seed: int = 0,
                 decoder_steps: int = 0) -> tuple[Path, dict]:
    """A latent prior (`train-prior --latent`) on the attacker's footage; trained once per settings.
    With `decoder_steps`, the prior without them resumed with its decoder tuned (the rest is unchanged)."""
    from adversary.priors.train import RECIPE, TrainConfig, train_prior

    frames = attacker_frames(clip_frames())
    settings = {"source": CLIP, "frames": frames, "size": size, "latent": True, "steps": steps,
                "vae_steps": vae_steps, "batch": batch, "seed": seed, "recipe": RECIPE}
    if decoder_steps:
        settings["decoder_steps"] = decoder_steps  # only when set: the key of the plain prior stays as it was
    folder = cache / f"prior-{key(settings)}"
    done = folder / "benchmark_done.json"
    if not done.is_file():
        if decoder_steps and not folder.exists():
            base, _ = cached_prior(cache, size, steps, vae_steps, batch, seed)
            shutil.copytree(base, folder, ignore=shutil.ignore_patterns(done.name))
        cfg = TrainConfig(source=CLIP, out=str(folder), latent=True, size=size, steps=steps, vae_steps=vae_steps,
                          decoder_steps=decoder_steps, batch=batch, frames=frames, seed=seed, resume=True)
        meta = train_prior(cfg, show=True)
        write_json(done, {"settings": settings, "steps": meta["steps"], "losses": meta["losses"],
                          "seconds_per_step": meta["seconds_per_step"]})
    return folder, {**json.loads(done.read_text()), "folder": str(folder)}


def add_prior_option(p: argparse.ArgumentParser) -> None:
    """--prior DIR, read by benchmark_prior."""
    p.add_argument("--prior", metavar="DIR",
                   help="invert with this train-prior folder (trained on the attacker's footage) instead of the "
                        "cached one, e.g. one resumed with --decoder-steps")


def benchmark_prior(cache: Path, s: Any, given: str | None = None) -> tuple[Path, dict]:
    """The prior the benchmark inverts with: `given` (a `train-prior` folder, e.g. one with a tuned decoder
    or other widths; it should have been trained on the attacker's footage only), else the one cached for
    the benchmark settings `s` (size, prior_steps, prior_vae_steps, prior_batch, prior_decoder_steps)."""
    if given is None:
        return cached_prior(cache, s.size, s.prior_steps, s.prior_vae_steps, s.prior_batch,
                            decoder_steps=s.prior_decoder_steps)
    from adversary.priors.io import read_meta

    meta = read_meta(given)
    if not meta:
        raise SystemExit(f"--prior {given}: not a train-prior folder (no prior.json)")
    train = meta.get("train", {})
    if train.get("source") != CLIP or int(train.get("frames", 0)) > attacker_frames(clip_frames()):
        raise SystemExit(f"--prior {given}: trained on {train.get('source')} x {train.get('frames')} frames, not on the "
                         f"attacker's footage ({CLIP}, at most {attacker_frames(clip_frames())} frames)")
    return Path(given), {"given": True, "train": train, "steps": meta.get("steps"), "losses": meta.get("losses"),
                         "seconds_per_step": meta.get("seconds_per_step"), "folder": str(given)}


def cached_victim(cache: Path, size: int, epochs: int, seed: int = 0) -> tuple[Path, dict]:
    """resnet18 trained by `train-victim` (which clip is this frame from?); trained once per settings."""
    from adversary.victim import DEFAULT_SOURCES, VictimConfig, report_path, train_victim

    settings = {"model": "resnet18", "size": size, "epochs": epochs, "seed": seed, "sources": list(DEFAULT_SOURCES),
                "train_fraction": TRAIN_FRACTION}
    path = cache / f"victim-{key(settings)}.pt"
    if not (path.is_file() and report_path(path).is_file()):
        cache.mkdir(parents=True, exist_ok=True)
        train_victim(VictimConfig(out=str(path), model="resnet18", size=size, epochs=epochs, seed=seed,
                                  train_fraction=TRAIN_FRACTION))
    report = json.loads(report_path(path).read_text())
    keep = ("weights_tag", "classes", "train_frames", "held_out_frames", "held_out_accuracy", "train_accuracy",
            "chance", "seconds")
    return path, {k: report.get(k) for k in keep} | {"path": str(path), "epochs": epochs}


def head(model: str, split: str, size: int, victim: str, victim_path: Path | None) -> SplitModel:
    weights = str(victim_path) if victim == "trained" else "seed:0"
    return build_split_model(model, split, size=size, weights=weights)
