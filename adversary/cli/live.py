"""`splitleak attack-live` (reconstruct a live stream from the tap) and `splitleak train-victim`."""
from __future__ import annotations

import argparse
import json
import signal

from adversary.cli.attack import add_config_options
from splitleak.checks import check_output_dir, check_output_file
from splitleak.cli.common import (
    add_device,
    add_message_limit,
    add_threads,
    add_tls,
    apply_threads,
    batch_size,
    learning_rate,
    positive_int,
    resolve_device,
    seconds,
    seed,
    size_px,
    tls_files,
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    live = sub.add_parser("attack-live", help="reconstruct frames of a live stream from the cloud's tap",
                          description="Subscribe to the cloud's tap, reconstruct frames as they arrive (batched), "
                          "write PNGs as it goes and metrics.json at the end; Ctrl-C stops with what it has. "
                          "Feature attacks invert the tapped features; gradient attacks (dlg, idlg, ig, "
                          "dlg-batched, idlg-batched, ...) the FedSGD updates, each against its round's state, "
                          "the batched ones a whole batch of updates in one optimisation. "
                          "What was tapped is also recorded in OUT/tap.")
    live.add_argument("--cloud", required=True, metavar="HOST:PORT", help="the cloud whose tap to subscribe to")
    live.add_argument("--attack", required=True, metavar="NAME", help="attack name, e.g. do, bb-do, dmb, idlg-batched")
    live.add_argument("--out", required=True, metavar="DIR", help="output folder")
    live.add_argument("--truth", metavar="DIR", help="ground-truth frames (edge --truth) to score against at the end")
    live.add_argument("--batch", type=batch_size,
                      help="frames reconstructed together (default 8 for feature attacks, 64 for dlg-batched / "
                           "idlg-batched; the other gradient attacks take one update at a time)")
    live.add_argument("--batch-timeout", "--wait", type=seconds, dest="batch_timeout",
                      help="seconds to wait for a batch to fill once its first frame arrived (default 0.5 for "
                           "feature attacks, 1 for the batched gradient attacks)")
    live.add_argument("--max-frames", type=positive_int,
                      help="stop after N tapped frames (gradient attacks: the frames of whole updates)")
    live.add_argument("--token", help="the cloud's tap token")
    live.add_argument("--stream", action="append", default=[], help="only this stream id (repeatable)")
    live.add_argument("--queue", type=positive_int, default=1024, help="server-side queue for this subscriber")
    add_message_limit(live, " the tap receives", "; match the cloud's")
    live.add_argument("--iterations", type=positive_int, help="optimisation / training steps (default: the attack's)")
    live.add_argument("--seed", type=seed, default=0, help="seed (default 0)")
    live.add_argument("--weights", metavar="PATH", help="the head's state dict, if the stream names a file tag")
    live.add_argument("--prior", metavar="DIR", help="a diffusion prior for attacks that use one")
    live.add_argument("--query-source", metavar="SRC",
                      help="black-box attacks: footage the attacker queries F1 with (default sample:bigbuckbunny)")
    add_config_options(live)
    live.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device(live)
    add_threads(live)
    add_tls(live, server=False)
    live.set_defaults(run=run_attack_live)

    victim = sub.add_parser("train-victim", help="train a split-model victim on a real task (clip classification)",
                            description="Train a model to tell which bundled clip a frame comes from (first 70% "
                            "of each clip trains, the rest is held out); save a full-model state dict for --weights.")
    victim.add_argument("--out", required=True, metavar="FILE", help="state-dict file to write (report: FILE.json)")
    victim.add_argument("--model", default="resnet18", help="model name (default resnet18)")
    victim.add_argument("--size", type=size_px, default=64, help="square input size (default 64)")
    victim.add_argument("--epochs", type=positive_int, default=3, help="epochs (default 3)")
    victim.add_argument("--source", action="append", default=[], metavar="SRC",
                        help="one class per source (repeatable; default the three bundled clips)")
    victim.add_argument("--frames", type=positive_int, help="at most N frames of each source")
    victim.add_argument("--batch", type=batch_size, default=32, help="batch size (default 32)")
    victim.add_argument("--lr", type=learning_rate, default=2e-3, help="peak learning rate (default 0.002)")
    victim.add_argument("--seed", type=seed, default=0, help="seed (default 0)")
    victim.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device(victim)
    add_threads(victim)
    victim.set_defaults(run=run_train_victim)


def run_attack_live(args: argparse.Namespace) -> int:
    from splitleak.wire.channel import check_target, message_limit

    tls = tls_files(args)  # before torch loads: a bad file is one line, never gRPC's abort
    check_target(args.cloud)
    check_output_dir(args.out, "--out")
    from adversary.runner.live import LiveAttack, LiveConfig

    apply_threads(args)
    options = dict(args.option)
    if args.query_source:
        options["query_source"] = args.query_source
    config = LiveConfig(cloud=args.cloud, attack=args.attack, out=args.out, truth=args.truth, batch=args.batch,
                        batch_timeout=args.batch_timeout, device=resolve_device(args.device), token=args.token,
                        tls=tls, stream_ids=tuple(args.stream), max_frames=args.max_frames,
                        queue_size=args.queue, iterations=args.iterations, seed=args.seed, weights_path=args.weights,
                        options=options, prior=args.prior, progress=not args.quiet, preset=args.preset,
                        config_file=args.config, max_message_bytes=message_limit(args.max_message_mb))
    attack = LiveAttack(config)
    signal.signal(signal.SIGTERM, lambda *_: attack.stop())
    metrics = attack.run()
    print(json.dumps(metrics["summary"], indent=2))
    return 0


def run_train_victim(args: argparse.Namespace) -> int:
    check_output_file(args.out, "--out")
    from adversary.victim import DEFAULT_SOURCES, VictimConfig, train_victim

    apply_threads(args)
    config = VictimConfig(out=args.out, model=args.model, size=args.size, epochs=args.epochs,
                          sources=tuple(args.source) or DEFAULT_SOURCES, frames=args.frames, batch=args.batch,
                          lr=args.lr, seed=args.seed, device=resolve_device(args.device), progress=not args.quiet)
    report = train_victim(config)
    print(f"held-out accuracy {report['held_out_accuracy']:.3f} over {len(config.sources)} classes "
          f"({report['held_out_frames']} frames; chance {report['chance']:.3f}); weights {report['weights']}")
    return 0
