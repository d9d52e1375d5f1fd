"""`splitleak enhance` and `splitleak train-sr`: super-resolution of recovered frames, and its training."""
from __future__ import annotations

import argparse
import json

from splitleak.checks import check_output_dir, check_output_file
from splitleak.cli.common import add_device, batch_size, float_in, positive_int, resolve_device, seed, size_px
from splitleak.errors import SplitleakError

# adversary.enhance.degrade.PRESETS (not imported: keeps --help light)
DEGRADATIONS = ("realesrgan", "recovered", "recovered-heavy")
DEFAULT_TRAIN_STEPS = 200  # ~15 minutes on 2 shared CPU cores at batch 8, patch 64 (provisional)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    enhance = sub.add_parser("enhance", help="super-resolve recovered frames (bicubic, noref, ref1, refs, video)",
                             description="Enlarge the frames an attack recovered (STREAM_SEQ.png) --scale times; "
                                         "write PNGs under the same names and config.json; with --truth, "
                                         "metrics.json (the paper's Table I comparisons).")
    enhance.add_argument("--in", dest="in_dir", required=True, metavar="DIR", help="recovered frames (STREAM_SEQ.png)")
    enhance.add_argument("--method", required=True, metavar="NAME", help="enhancement method, e.g. bicubic, noref")
    enhance.add_argument("--out", required=True, metavar="DIR", help="output folder")
    enhance.add_argument("--refs", nargs="+", action="extend", metavar="FILE|DIR",
                         help="high-resolution reference frames of the scene (reference-based methods)")
    enhance.add_argument("--weights", metavar="PATH",
                         help="a train-sr folder, or a pretrained file spandrel knows (RealESRGAN_x4plus.pth, ...)")
    enhance.add_argument("--batch", type=batch_size, default=16, help="frames enhanced together (default 16)")
    add_output_options(enhance)
    add_device(enhance)
    enhance.set_defaults(run=run_enhance)

    train = sub.add_parser("train-sr", help="train a super-resolution model on footage",
                           description="Train an enhancement method's model on degraded/clean pairs made from "
                                       "footage (Real-ESRGAN's second-order degradation plus gradient-inversion-"
                                       "like noise); write model.safetensors and config.json to --out.")
    train.add_argument("--source", required=True, metavar="SRC",
                       help="footage: a video file, a folder of images, sample:NAME, synthetic")
    train.add_argument("--out", required=True, metavar="DIR", help="output folder (then: enhance --weights DIR)")
    train.add_argument("--method", default="noref", metavar="NAME",
                       help="the method to train: noref, ref (ref1 and refs share it) or video (default noref)")
    train.add_argument("--scale", type=positive_int, default=4, help="upscale factor (default 4)")
    train.add_argument("--size", type=size_px, default=128, help="side of the clean frames (default 128)")
    train.add_argument("--patch", type=size_px, default=64, help="side of the clean training crops (default 64)")
    train.add_argument("--steps", type=positive_int, default=DEFAULT_TRAIN_STEPS,
                       help=f"training steps (default {DEFAULT_TRAIN_STEPS})")
    train.add_argument("--batch", type=batch_size, default=8, help="pairs per step (default 8)")
    train.add_argument("--lr", type=float_in(0.0, 1.0, above=True), default=5e-4, help="Adam learning rate")
    train.add_argument("--frames", type=positive_int, default=300, help="frames of the source to load (default 300)")
    train.add_argument("--stride", type=positive_int, default=1, help="keep every N-th frame (default 1)")
    train.add_argument("--degradation", choices=DEGRADATIONS,
                       help="how training inputs are degraded: realesrgan (second-order blur, resize, noise, "
                            "JPEG; noref's default), recovered (area downscale + light white noise, as DLG "
                            "frames from an untrained LeNet look; ref's and video's default) or recovered-heavy "
                            "(blotchy, colour-shifted noise, as frames from a saturated stream)")
    train.add_argument("--base", metavar="DIR",
                       help="video only: a train-sr noref folder; its generator upsamples every frame and the "
                            "video model learns a residual over its output (default: bicubic)")
    train.add_argument("--seed", type=seed, default=0, help="seed (default 0)")
    add_device(train)
    train.set_defaults(run=run_train)


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """--truth, --size and the shared --scale, --video, --fps: scoring and the comparison video."""
    parser.add_argument("--truth", metavar="DIR", help="original frames to score and show beside the enhanced ones")
    parser.add_argument("--size", type=size_px, default=128, help="score and show frames at this size (default 128)")
    add_scale_and_video(parser)


def add_scale_and_video(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--scale, --video, --fps: the options `enhance` and `attack --enhance` share."""
    parser.add_argument("--scale", type=positive_int, default=4, help="upscale factor (default 4: 32 -> 128 px)")
    parser.add_argument("--video", metavar="FILE.mp4",
                        help="write original | recovered | enhanced side by side, labelled, plus FILE.png")
    parser.add_argument("--fps", type=float_in(0.0, 240.0, above=True), default=30.0,
                        help="frame rate of --video (default 30, the source's)")


def run_enhance(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")
    check_output_file(args.video, "--video")
    from adversary.enhance.methods import get_method
    from adversary.enhance.pipeline import enhance_folder

    method = get_method(args.method)
    enhancer = method(scale=args.scale, device=resolve_device(args.device), weights=args.weights)
    result = enhance_folder(args.in_dir, args.out, enhancer, refs=args.refs, batch=args.batch, truth=args.truth,
                            size=args.size, video=args.video, fps=args.fps)
    report(result)
    return 0


def report(result: dict) -> None:
    """Print the enhancement's summary (or its timing without truth) and where the video went."""
    if "config" in result:
        config = result["config"]
        print(json.dumps(result["summary"] or {k: config[k] for k in ("method", "frames", "seconds_per_frame")},
                         indent=2))
    if "video" in result:
        video = result["video"]
        print(f"video: {video['path']} ({video['codec']}, {video['frames']} frames at {video['fps']:g} fps); "
              f"contact sheet {video['contact_sheet']}")


def run_train(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")
    from adversary.enhance.methods import get_trainer
    from adversary.enhance.training import TrainSpec

    trainer = get_trainer(args.method)
    if args.base is not None and args.method != "video":
        raise SplitleakError(f"--base is for --method video, not {args.method}")
    spec = TrainSpec(source=args.source, out=args.out, scale=args.scale, size=args.size, patch=args.patch,
                     steps=args.steps, batch=args.batch, lr=args.lr, frames=args.frames, stride=args.stride,
                     seed=args.seed, device=resolve_device(args.device), degradation=args.degradation, base=args.base)
    config = trainer(spec)
    print(json.dumps({"method": config["method"], "out": args.out, **config.get("training", {})}, indent=2))
    return 0
