"""`splitleak attack --chain`: run attacks one after another, each on what the stage before recovered.

OUT/<k>-<stage>/ holds stage k's output and its own metrics.json; a gradient stage that recovers
features also writes OUT/<k>-<stage>/recording/, the hand-over (adversary.runner.handover), which
the next stage reads as any tapped recording. OUT/chain.json scores every stage against the truth:
features by cosine and relative error against the head run on the truth frames, frames by
PSNR/SSIM, enhanced frames by the paper's Table I comparisons.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from adversary.runner.chain_spec import ENHANCE, ENHANCED, FEATURES, FRAMES, GRADIENTS, Stage, assign_options, check_order, \
    parse_chain
from adversary.runner.clip_features import check_clip_attack
from adversary.runner.enhanced import EnhanceRequest
from adversary.runner.meta import HeadKey
from adversary.runner.output import recording_output
from splitleak.errors import SplitleakError
from splitleak.recording import RecordingReader, write_json

CHAIN_JSON = "chain.json"
HANDOVER = "recording"
FRAME_SCORES = ("mean_psnr", "mean_ssim", "mean_psnr_native", "mean_ssim_native", "success_rate", "frames",
                "seconds", "seconds_per_frame")
FEATURE_SCORES = ("mean_feature_cosine", "mean_feature_mse", "label_accuracy", "success_rate_loss", "frames",
                  "seconds", "seconds_per_frame")


@dataclass
class ChainRun:
    """Everything a chain needs besides its stages: the run's common settings."""

    recording: str
    out: str
    truth: str | None = None
    prior: str | None = None
    device: str = "cpu"
    seed: int = 0
    weights_path: str | None = None
    max_frames: int | None = None
    batch_size: int = 8
    progress: bool = True
    enhance: EnhanceRequest | None = None  # refs / weights / scale / video for an enhance stage (method unused)


def plan_chain(text: str, run: ChainRun, options: list[tuple[str, str]] | None = None,
               tree: Mapping[str, Any] | None = None) -> tuple[list[Stage], bool]:
    """Parse and check the whole chain against the recording, the prior and the enhancement options;
    returns the stages and whether the recording's updates are raw frames (split none)."""
    stages = parse_chain(text)
    assign_options(stages, options or [], tree)
    first, image_updates, heads = recording_kind(run.recording, run.max_frames)
    check_order(stages, first, image_updates)
    for i, stage in enumerate(stages, 1):
        if stage.family != ENHANCE:
            _check_attack(i, stage, heads)
    _check_prior(stages, run.prior)
    enhances = [s for s in stages if s.family == ENHANCE]
    if run.enhance is not None:
        if run.enhance.video is not None and stages[-1].gives(image_updates) not in (FRAMES, ENHANCED):
            raise SplitleakError("--video needs a chain that ends in frames (a feature attack or enhance:METHOD)")
        if (run.enhance.refs or run.enhance.weights) and not enhances:
            raise SplitleakError("--refs and --enhance-weights need an enhance:METHOD stage in the chain")
        if enhances:
            run.enhance.method = enhances[0].method
            run.enhance.check()  # its weights and references are read now, not after the attacks
    return stages, image_updates


def recording_kind(recording: str, max_frames: int | None) -> tuple[str, bool, set[HeadKey]]:
    """What the recording gives the first stage (its updates, else its frames), metadata only, whether
    its updates are raw frames, and its heads; SplitleakError for a recording with neither."""
    from adversary.runner.features import index_recording
    from adversary.runner.updates import plan_recording

    if not Path(recording).is_dir():
        raise SplitleakError(f"recording folder not found: {recording}")
    kinds = {item.kind for item in RecordingReader(recording)}
    if "update" in kinds:
        plan = plan_recording(recording, max_frames)  # refuses updates no attack takes (split mode, a malformed fedavg)
        return GRADIENTS, all(u.head.split == "none" for u in plan.updates), {u.head for u in plan.updates}
    if "frame" in kinds:
        return FEATURES, False, index_recording(recording, max_frames).heads
    raise SplitleakError(f"recording {recording} holds no gradient updates and no feature frames")


def _check_attack(index: int, stage: Stage, heads: set[HeadKey]) -> None:
    """Build the stage's attack now: a bad option or preset, or a feature attack that cannot invert the
    recording's clip features, fails before anything runs."""
    from adversary.runner.attacks import make_attack

    try:
        if stage.family == "feature":
            check_clip_attack(stage.name, heads)
        make_attack(stage.name, None, stage.options, stage.preset)
    except SplitleakError as err:
        raise SplitleakError(f"chain stage {index} {stage.name!r}: {err}") from None


def _check_prior(stages: list[Stage], prior: str | None) -> None:
    from adversary.attacks import get_attack

    needs = [s.name for s in stages if s.family != ENHANCE and "prior" in getattr(get_attack(s.name), "access", ())]
    if prior is None and needs:
        raise SplitleakError(f"chain stage {needs[0]!r} needs a diffusion prior; pass --prior DIR")
    if prior is not None and not needs:
        raise SplitleakError("no stage of the chain takes a prior; drop --prior")


def run_chain(text: str, run: ChainRun, options: list[tuple[str, str]] | None = None,
              tree: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Check the chain, then run its stages in order into OUT/<k>-<stage>/; write and return chain.json."""
    out = recording_output(run.recording, run.out, run.truth)
    stages, image_updates = plan_chain(text, run, options, tree)
    out.mkdir(parents=True, exist_ok=True)
    source, entries, started = run.recording, [], time.perf_counter()
    for k, stage in enumerate(stages, 1):
        folder = out / f"{k}-{stage.folder_name}"
        entry, source = _run_stage(stage, source, folder, run, image_updates)
        entries.append({"stage": k, "name": stage.name, "takes": stage.takes, "gives": stage.gives(image_updates),
                        "folder": folder.name, **entry})
        _write(out, text, run, entries, time.perf_counter() - started)
    if run.enhance is not None and run.enhance.video is not None and stages[-1].family != ENHANCE:
        entries[-1]["video"] = _video(source, run)
    return _write(out, text, run, entries, time.perf_counter() - started)


def _run_stage(stage: Stage, source: str, folder: Path, run: ChainRun,
               image_updates: bool) -> tuple[dict[str, Any], str]:
    """Run one stage on `source`; its chain.json entry and what the next stage reads."""
    if stage.family == ENHANCE:
        return _enhance(source, folder, run), str(folder)
    from adversary.runner.run import run_attack

    metrics = run_attack(source, stage.name, str(folder), truth=run.truth, device=run.device, seed=run.seed,
                         weights_path=run.weights_path, max_frames=run.max_frames, batch_size=run.batch_size,
                         progress=run.progress, options=stage.options, preset=stage.preset,
                         prior=run.prior if stage.family == "feature" and _takes_prior(stage) else None)
    summary = metrics["summary"]
    if stage.gives(image_updates) != FEATURES:
        return {"scores": {**_pick(summary, FRAME_SCORES), "frames": len(metrics["frames"])}}, str(folder)
    from adversary.runner.handover import features_to_recording

    handover = features_to_recording(source, folder, folder / HANDOVER, truth=run.truth, device=run.device,
                                     weights_path=run.weights_path, max_frames=run.max_frames)
    scores = {**_pick(summary, FEATURE_SCORES), **handover["summary"]}
    return {"scores": scores, "recording": f"{folder.name}/{HANDOVER}"}, handover["recording"]


def _takes_prior(stage: Stage) -> bool:
    from adversary.attacks import get_attack

    return "prior" in getattr(get_attack(stage.name), "access", ())


def _enhance(source: str, folder: Path, run: ChainRun) -> dict[str, Any]:
    from adversary.enhance.pipeline import enhance_folder

    request = run.enhance
    if request is None or request.enhancer is None:
        raise SplitleakError("internal: an enhance stage without its method built (plan_chain builds it)")
    result = enhance_folder(source, str(folder), request.enhancer, refs=request.refs, batch=request.batch,
                            truth=run.truth, size=request.size, video=request.video, fps=request.fps,
                            progress=run.progress)
    entry: dict[str, Any] = {"scores": result["summary"], "method": request.method}
    if "video" in result:
        entry["video"] = result["video"]
    return entry


def _video(frames_dir: str, run: ChainRun) -> dict[str, Any]:
    """The chain's last frames as a video (original | recovered), when no enhance stage wrote one."""
    from adversary.enhance.pipeline import load_stream, stream_frames, write_video

    request = run.enhance
    assert request is not None and request.video is not None
    streams = stream_frames(frames_dir)
    lows = {s: load_stream(frames_dir, s, seqs) for s, seqs in streams.items()}
    return write_video(request.video, streams, lows, None, run.truth, request.fps, request.size)


def _pick(summary: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: summary.get(k) for k in keys if k in summary}


def _write(out: Path, text: str, run: ChainRun, stages: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """chain.json after every stage, so a long chain that fails later leaves what it did."""
    data = {"chain": text, "recording": str(Path(run.recording).resolve()), "truth": run.truth,
            "prior": run.prior, "device": run.device, "seed": run.seed, "stages": stages, "seconds": seconds}
    write_json(out / CHAIN_JSON, data)
    return data
