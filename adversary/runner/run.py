"""`splitleak attack`: run any registered attack over a recording; the attack's family picks the path."""

from __future__ import annotations

from typing import Any

from adversary.runner.attacks import check_prior, make_attack
from adversary.runner.enhanced import EnhanceRequest, enhance_recovered
from adversary.runner.features import run_feature_attack
from adversary.runner.gradients import run_gradient_attack


def run_attack(recording: str, attack: str, out: str, *, truth: str | None = None, device: str = "cpu",
               iterations: int | None = None, seed: int = 0, weights_path: str | None = None,
               max_frames: int | None = None, batch_size: int = 8, progress: bool = True,
               options: dict[str, Any] | None = None, prior: str | None = None, preset: str | None = None,
               config_file: str | None = None, enhance: EnhanceRequest | None = None) -> dict[str, Any]:
    """Attack the recording's frames (feature attacks) or FedSGD / FedAvg updates (gradient attacks); write the
    reconstructions, metrics.json and config.json to `out`; return the metrics dict.

    `prior`: a prior folder (diffusers format) or hub name, for attacks that need one (db, dmb, ...).
    With `truth`, frames are scored at 128 px (psnr, ssim) and at the truth's size (psnr_native,
    ssim_native); without it the scores are null. summary.seconds is the attack's own wall time.
    `preset` / `config_file` / `options` configure the attack (adversary.attacks.build_attack).
    `batch_size` is the feature path's (a gradient update's batch is its own).
    `enhance`: then super-resolve the recovered frames into OUT/enhanced (and write its video), scored
    against `truth`; the returned metrics gain an "enhanced" entry.
    """
    check_prior(attack, prior)
    method = make_attack(attack, iterations, options, preset, config_file)
    common = dict(truth=truth, device=device, seed=seed, weights_path=weights_path, max_frames=max_frames,
                  progress=progress)
    if enhance is not None:
        enhance.check()  # a bad method, weight file or reference fails now, not after the attack
    if method.family == "gradient":
        metrics = run_gradient_attack(recording, attack, method, out, **common)
    else:
        metrics = run_feature_attack(recording, attack, method, out, batch_size=batch_size, prior=prior, **common)
    if enhance is not None:
        metrics["enhanced"] = enhance_recovered(out, enhance, truth=truth, progress=progress)
    return metrics
