"""`splitleak attack` and `splitleak evaluate`: reconstruct tapped frames, score them."""
from __future__ import annotations

import argparse
import json

from adversary.cli.enhance import add_scale_and_video
from splitleak.checks import check_output_dir, check_output_file
from splitleak.cli.common import add_device, batch_size, float_in, positive_int, resolve_device, seed, size_px


def add_parsers(sub: argparse._SubParsersAction) -> None:
    attack = sub.add_parser("attack", help="reconstruct frames from a recording",
                            description="Run an attack on what the tap recorded; write PNGs and metrics.json.")
    attack.add_argument("--recording", required=True, metavar="DIR", help="a recording (cloud --record or tap)")
    what = attack.add_mutually_exclusive_group(required=True)
    what.add_argument("--attack", metavar="NAME", help="attack name, e.g. do")
    what.add_argument("--chain", metavar="STAGES",
                      help="run attacks in a chain, each on what the one before recovered, e.g. "
                           "fvi,dmb,enhance:refs (gradients -> features -> frames -> enhanced frames); "
                           "OUT/<k>-<stage>/ per stage, OUT/chain.json scores them all (docs/chains.md). "
                           "Options per stage: --option STAGE.KEY=VALUE (STAGE.preset=NAME), or --config FILE.yaml "
                           "mapping each stage to its options")
    attack.add_argument("--out", required=True, metavar="DIR", help="output folder")
    attack.add_argument("--truth", metavar="DIR", help="ground-truth frames (edge --truth) to score against")
    attack.add_argument("--prior", metavar="DIR", help="a diffusion prior folder (train-prior) for db, dmb, dmb-multi")
    attack.add_argument("--text", metavar="TEXT", help="text prior for dmb / dmb-multi: condition the sampler on it")
    attack.add_argument("--iterations", type=positive_int, help="optimisation steps (default: the attack's)")
    attack.add_argument("--seed", type=seed, default=0, help="seed (default 0)")
    attack.add_argument("--weights", metavar="PATH", help="the head's state dict, if the recording names a file tag")
    attack.add_argument("--max-frames", type=positive_int, help="attack at most N frames")
    attack.add_argument("--batch", type=batch_size, default=8, help="frames optimised together (default 8)")
    add_config_options(attack)
    add_enhance_options(attack)
    add_device(attack)
    attack.set_defaults(run=run_attack)

    evaluate = sub.add_parser("evaluate", help="score reconstructions against the truth",
                              description="PSNR/SSIM per frame on [0,1] floats at --size; writes metrics.json. "
                                          "STREAM_SEQ.png frames pair by stream and sequence, other images by "
                                          "file name.")
    evaluate.add_argument("--recon", required=True, metavar="DIR", help="reconstructed PNGs")
    evaluate.add_argument("--truth", required=True, metavar="DIR", help="ground-truth PNGs")
    evaluate.add_argument("--out", required=True, metavar="DIR", help="output folder")
    evaluate.add_argument("--size", type=size_px, default=128, help="compare at this size (default 128)")
    evaluate.add_argument("--threshold", type=float_in(unit=" (dB)"), default=20.0,
                          help="PSNR (dB) that counts as success")
    evaluate.add_argument("--low", metavar="DIR",
                          help="the recovered low-resolution frames that --recon enhanced: adds the paper's Table I "
                               "comparisons (High vs Low, Enhanced vs High, Enhanced vs Low)")
    evaluate.set_defaults(run=run_evaluate)


def option(text: str) -> tuple[str, str]:
    """KEY=VALUE as given; the attack's typed config parses and checks both (adversary.configs)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """--preset, --config and --option: how an attack is configured, shared by attack and attack-live."""
    parser.add_argument("--preset", metavar="NAME",
                        help="the attack's named settings: paper (the published algorithm as written) or best "
                             "(the measured defaults; default)")
    parser.add_argument("--config", metavar="FILE.yaml",
                        help="a YAML file of the attack's options, nested as config.json writes them "
                             "(e.g. 'pixel: {steps: 0}'), and optionally 'preset: NAME'")
    parser.add_argument("--option", action="append", default=[], type=option, metavar="KEY=VALUE",
                        help="one config field, by dotted path (pixel.steps=0), path joined by _ (pixel_steps=0) or "
                             "a unique name (lambda_tv=0.3, variant=guidance); checked against its type (repeatable)")


def add_enhance_options(parser: argparse.ArgumentParser) -> None:
    """--enhance and friends: super-resolve what the attack recovered, and write the comparison video."""
    group = parser.add_argument_group("enhancement of the recovered frames (into OUT/enhanced)")
    group.add_argument("--enhance", metavar="METHOD", help="super-resolution method: bicubic, noref, ref1, refs, video")
    group.add_argument("--refs", nargs="+", action="extend", metavar="FILE|DIR",
                       help="high-resolution reference frames for ref1 / refs")
    group.add_argument("--enhance-weights", metavar="PATH", help="the method's weights (train-sr folder or file)")
    add_scale_and_video(group)


def enhance_request(args: argparse.Namespace, device: str):
    """The EnhanceRequest the options ask for, or None; SplitleakError for options without --enhance."""
    from adversary.runner.enhanced import EnhanceRequest
    from splitleak.errors import SplitleakError

    if args.enhance is None and (args.refs or args.enhance_weights):
        raise SplitleakError("--refs and --enhance-weights need --enhance METHOD")
    if args.enhance is None and args.video is None:
        return None
    return EnhanceRequest(method=args.enhance, refs=args.refs, weights=args.enhance_weights, scale=args.scale,
                          device=device, video=args.video, fps=args.fps)


def run_attack(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")
    check_output_file(args.video, "--video")
    if args.chain is not None:
        return run_chain(args)
    from adversary.runner.run import run_attack as attack

    options = dict(args.option)
    if args.text is not None:
        options["text"] = args.text
    device = resolve_device(args.device)
    metrics = attack(args.recording, args.attack, args.out, truth=args.truth, device=device,
                     iterations=args.iterations, seed=args.seed, weights_path=args.weights,
                     max_frames=args.max_frames, batch_size=args.batch, options=options, prior=args.prior,
                     preset=args.preset, config_file=args.config, enhance=enhance_request(args, device))
    print(json.dumps(metrics["summary"], indent=2))
    if "enhanced" in metrics:
        from adversary.cli.enhance import report

        enhanced = metrics["enhanced"]
        if "config" in enhanced:
            print(f"enhanced ({enhanced['config']['method']}):")
        report(enhanced)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")
    from adversary.evaluate import evaluate_folders

    metrics = evaluate_folders(args.recon, args.truth, args.out, size=args.size, threshold=args.threshold,
                               low_dir=args.low)
    print(json.dumps(metrics["summary"], indent=2))
    return 0


def run_chain(args: argparse.Namespace) -> int:
    """`attack --chain`: the flags that configure one attack are per stage here (--option STAGE.KEY=V)."""
    from adversary.runner.chain import ChainRun, run_chain as chain
    from adversary.runner.chain_spec import read_chain_config
    from adversary.runner.enhanced import EnhanceRequest
    from splitleak.errors import SplitleakError

    for flag, given in (("--preset", args.preset), ("--iterations", args.iterations), ("--text", args.text),
                        ("--enhance", args.enhance)):
        if given is not None:
            hint = "an enhance:METHOD stage" if flag == "--enhance" else f"--option STAGE.{flag[2:]}=..."
            raise SplitleakError(f"{flag} is per stage in a chain; use {hint}")
    device = resolve_device(args.device)
    request = EnhanceRequest(refs=args.refs, weights=args.enhance_weights, scale=args.scale, device=device,
                             video=args.video, fps=args.fps)
    run = ChainRun(args.recording, args.out, truth=args.truth, prior=args.prior, device=device, seed=args.seed,
                   weights_path=args.weights, max_frames=args.max_frames, batch_size=args.batch, enhance=request)
    tree = read_chain_config(args.config) if args.config else None
    result = chain(args.chain, run, args.option, tree)
    for stage in result["stages"]:
        print(f"{stage['stage']}-{stage['name']} ({stage['takes']} -> {stage['gives']}): "
              f"{json.dumps(stage['scores'])}")
    return 0
