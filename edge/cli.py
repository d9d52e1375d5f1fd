"""`splitleak edge`: stream a video source through the head F1 to a cloud."""
from __future__ import annotations

import argparse
import json

from splitleak.checks import MAX_CLASSES, check_output_dir, check_output_file
from splitleak.cli.common import (
    add_device,
    add_message_limit,
    add_threads,
    add_tls,
    apply_threads,
    batch_size,
    int_in,
    learning_rate,
    positive_int,
    resolve_device,
    seconds,
    seed,
    size_px,
    tls_files,
)
from splitleak.codecs import NAMES as CODECS

CLASSIFIERS = ("simple", "moderate")  # splitleak.models.CLASSIFIERS, without importing torch to parse arguments

LINK_HELP = ("network conditions, e.g. 'rate=10mbit,delay=20ms,jitter=5ms,loss=1%%'; keys: rate, delay, jitter, "
             "loss, drop (0: a lost frame is retransmitted after rto; 1: it is dropped and counted lost), "
             "rto (default 200ms), window (frames in flight, default 64)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    edge = sub.add_parser("edge", help="stream a video source through the head to a cloud",
                          description="Capture, preprocess, run the head F1, encode, shape, send; print a summary.")
    edge.add_argument("--cloud", required=True, help="HOST:PORT of the cloud")
    edge.add_argument("--source", default="sample:bikes",
                      help="a video file, camera:N, a folder of images, sample:NAME (bikes, bigbuckbunny, "
                      "carphone) or synthetic (default sample:bikes)")
    edge.add_argument("--model", default="resnet18", help="model name (see `splitleak models`)")
    edge.add_argument("--split", default="layer1", help="named split point of the model")
    edge.add_argument("--mode", default="infer", choices=["infer", "fedsgd", "fedavg", "split"],
                      help="infer: stream features for inference (default); fedsgd: send a gradient per batch; "
                      "fedavg: send the weight delta of --local-steps local steps; split: split learning "
                      "(send activations and labels, train the head with the returned dL/dz)")
    edge.add_argument("--batch", type=batch_size, default=1, help="frames per learning step (default 1)")
    edge.add_argument("--local-steps", type=positive_int, default=1, help="fedavg: local SGD steps per round")
    edge.add_argument("--lr", type=learning_rate, default=0.01, help="learning rate (default 0.01)")
    edge.add_argument("--label", type=int_in(0, MAX_CLASSES - 1, " (a class id)"), default=0,
                      help="class id of every frame (learning modes; default 0)")
    edge.add_argument("--labels", metavar="FILE", help="CSV rows start,end,label giving segments their class")
    edge.add_argument("--frames", type=positive_int, help="stop after N frames (default: the whole source)")
    edge.add_argument("--size", type=size_px, help="square input size in pixels (default: the model's)")
    edge.add_argument("--codec", default="fp32", choices=CODECS, help="wire codec for the features")
    edge.add_argument("--link", default="", help=LINK_HELP)
    edge.add_argument("--defence", default="none", metavar="NAME[:K=V,...]",
                      help="what the edge does to what it sends: none, noise:sigma=S (Gaussian, S x the tensor's RMS), "
                      "subsample:keep=N (every N-th frame), topk:ratio=R (largest R fraction), "
                      "clip:norm=C,sigma=S[,delta=D] (fedsgd: per-example clipping + noise; epsilon by Opacus)")
    edge.add_argument("--on-congestion", default="block", choices=["block", "skip", "adapt"],
                      help="when the link cannot carry the stream (infer): block (default: send every frame late), "
                      "skip (drop frames while --max-pending await an answer), adapt (step the codec "
                      "fp32 -> fp16 -> int8 by the measured delivery rate)")
    edge.add_argument("--max-pending", type=positive_int, default=4,
                      help="frames awaiting an answer that count as congestion (default 4)")
    edge.add_argument("--realtime", action="store_true",
                      help="deliver frames as a live camera would: at the source's frame rate (30 when it has "
                           "none), once the cloud answered the first; default: as fast as they decode")
    edge.add_argument("--truth", metavar="DIR", help="save the preprocessed input frames here (never sent)")
    edge.add_argument("--stats", metavar="FILE", help="write the summary as JSON")
    edge.add_argument("--weights", default="seed:0", help="seed:N, a state-dict PATH, or a torchvision weight name")
    edge.add_argument("--classifier", choices=CLASSIFIERS,
                      help="replace the model's remaining stages by the video paper's Table II classifier over the "
                      "head's flattened features (the head is the frozen extractor; needs a split point)")
    edge.add_argument("--stream-id", default="edge0", help="stream id (default edge0)")
    edge.add_argument("--seed", type=seed, default=0, help="seed for the link emulator and synthetic source")
    edge.add_argument("--token", help="bearer token for the cloud")
    edge.add_argument("--retry-for", type=seconds, default=30.0,
                      help="give up after the cloud is unreachable this long (s)")
    edge.add_argument("--quiet", action="store_true", help="no progress bar")
    add_message_limit(edge, ", either way", "; match the cloud's")
    add_device(edge)
    add_threads(edge)
    add_tls(edge, server=False)
    edge.set_defaults(run=run_edge)


def run_edge(args: argparse.Namespace) -> int:
    tls = tls_files(args)  # before torch loads: a bad file is one line, never gRPC's abort
    check_output_dir(args.truth, "--truth")
    check_output_file(args.stats, "--stats")
    from splitleak.wire.channel import message_limit

    max_message_bytes = message_limit(args.max_message_mb)
    from edge.session import EdgeConfig
    from edge.streamer import EdgeStreamer
    from edge.trainer import EdgeTrainer

    apply_threads(args)
    config = EdgeConfig(cloud=args.cloud, source=args.source, model=args.model, split=args.split,
                        frames=args.frames, size=args.size, codec=args.codec, link=args.link, truth=args.truth,
                        stats=args.stats, device=resolve_device(args.device), seed=args.seed, weights=args.weights,
                        classifier=args.classifier,
                        stream_id=args.stream_id, token=args.token, tls=tls, retry_for=args.retry_for,
                        progress=not args.quiet, mode=args.mode, batch=args.batch, local_steps=args.local_steps,
                        lr=args.lr, label=args.label, labels=args.labels, defence=args.defence,
                        on_congestion=args.on_congestion, max_pending=args.max_pending, realtime=args.realtime,
                        max_message_bytes=max_message_bytes)
    summary = (EdgeStreamer if args.mode == "infer" else EdgeTrainer)(config).run()
    print(json.dumps(summary, indent=2))
    return 0
