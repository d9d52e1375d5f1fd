"""`splitleak cloud`, `splitleak edge`, `splitleak tap`: the services and the remote recorder."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from splitleak.cli.common import add_device, add_threads, add_tls, apply_threads, positive_int, resolve_device, tls_files
from splitleak.codecs import NAMES as CODECS

LINK_HELP = ("network conditions, e.g. 'rate=10mbit,delay=20ms,jitter=5ms,loss=1%%'; keys: rate, delay, jitter, "
             "loss, drop (0: a lost frame is retransmitted after rto; 1: it is dropped and counted lost), "
             "rto (default 200ms), window (frames in flight, default 64)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    cloud = sub.add_parser("cloud", help="run the cloud service (tail F2, tap, recorder)",
                           description="Serve split inference over gRPC; optionally record what it decodes.")
    cloud.add_argument("--listen", default="127.0.0.1:50051", help="HOST:PORT to bind (port 0: any free port)")
    cloud.add_argument("--record", metavar="DIR", help="record every decoded frame here (manifest + safetensors)")
    cloud.add_argument("--weights", action="append", default=[], metavar="PATH",
                       help="a state-dict file edges may name by its tag (repeatable)")
    cloud.add_argument("--round-size", type=positive_int, default=1,
                       help="learning: edges whose updates make one round (default 1)")
    cloud.add_argument("--round-timeout", type=float, default=10.0,
                       help="learning: close a round with fewer edges after this many seconds (default 10)")
    cloud.add_argument("--token", help="bearer token every edge must present")
    cloud.add_argument("--tap-token", help="bearer token for the tap (required for the tap when --token is set)")
    cloud.add_argument("--allow-models", type=lambda text: tuple(filter(None, text.split(","))), default=(),
                       metavar="A,B", help="models edges may ask for (default: every model of the zoo)")
    cloud.add_argument("--max-classes", type=positive_int, default=1000,
                       help="largest num_classes an edge may ask for (default 1000)")
    cloud.add_argument("--max-input-size", type=positive_int, default=512,
                       help="largest input size in pixels an edge may ask for (default 512)")
    cloud.add_argument("--allow-downloads", action="store_true",
                       help="fetch torchvision weights an edge names (tv:NAME) at request time (default: only cached)")
    cloud.add_argument("--build-timeout", type=float, default=60.0,
                       help="seconds a request waits for its model to be built (default 60)")
    add_device(cloud)
    add_threads(cloud)
    add_tls(cloud, server=True)
    cloud.set_defaults(run=run_cloud)

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
    edge.add_argument("--batch", type=positive_int, default=1, help="frames per learning step (default 1)")
    edge.add_argument("--local-steps", type=positive_int, default=1, help="fedavg: local SGD steps per round")
    edge.add_argument("--lr", type=float, default=0.01, help="learning rate (default 0.01)")
    edge.add_argument("--label", type=int, default=0, help="class id of every frame (learning modes; default 0)")
    edge.add_argument("--labels", metavar="FILE", help="CSV rows start,end,label giving segments their class")
    edge.add_argument("--frames", type=positive_int, help="stop after N frames (default: the whole source)")
    edge.add_argument("--size", type=positive_int, help="square input size in pixels (default: the model's)")
    edge.add_argument("--codec", default="fp32", choices=CODECS, help="wire codec for the features")
    edge.add_argument("--link", default="", help=LINK_HELP)
    edge.add_argument("--truth", metavar="DIR", help="save the preprocessed input frames here (never sent)")
    edge.add_argument("--stats", metavar="FILE", help="write the summary as JSON")
    edge.add_argument("--weights", default="seed:0", help="seed:N, a state-dict PATH, or a torchvision weight name")
    edge.add_argument("--stream-id", default="edge0", help="stream id (default edge0)")
    edge.add_argument("--seed", type=int, default=0, help="seed for the link emulator and synthetic source")
    edge.add_argument("--token", help="bearer token for the cloud")
    edge.add_argument("--retry-for", type=float, default=30.0, help="give up after the cloud is unreachable this long (s)")
    edge.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device(edge)
    add_threads(edge)
    add_tls(edge, server=False)
    edge.set_defaults(run=run_edge)

    tap = sub.add_parser("tap", help="record a cloud's tap remotely",
                         description="Subscribe to the cloud's tap and record what it decoded, until Ctrl-C.")
    tap.add_argument("--cloud", required=True, help="HOST:PORT of the cloud")
    tap.add_argument("--record", required=True, metavar="DIR", help="recording folder to create")
    tap.add_argument("--token", help="the cloud's tap token")
    tap.add_argument("--stream", action="append", default=[], help="only this stream id (repeatable)")
    tap.add_argument("--limit", type=positive_int, help="stop after N items")
    tap.add_argument("--queue", type=positive_int, default=1024, help="server-side queue for this subscriber")
    add_tls(tap, server=False)
    tap.set_defaults(run=run_tap)


def run_cloud(args: argparse.Namespace) -> int:
    from cloud.server import CloudConfig, CloudServer

    apply_threads(args)
    config = CloudConfig(listen=args.listen, record=args.record, device=resolve_device(args.device),
                         weights=tuple(args.weights), token=args.token, tap_token=args.tap_token, tls=tls_files(args),
                         round_size=args.round_size, round_timeout=args.round_timeout,
                         allow_models=args.allow_models, max_classes=args.max_classes,
                         max_input_size=args.max_input_size, allow_downloads=args.allow_downloads,
                         build_timeout=args.build_timeout)
    server = CloudServer(config)
    host = args.listen.rpartition(":")[0]
    print(f"cloud listening on {host}:{server.port}" + (f", recording to {args.record}" if args.record else ""),
          file=sys.stderr, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.stop(grace=2.0)
    print(f"cloud stopped after {server.inference.frames} frames", file=sys.stderr)
    return 0


def run_edge(args: argparse.Namespace) -> int:
    from edge.session import EdgeConfig
    from edge.streamer import EdgeStreamer
    from edge.trainer import EdgeTrainer

    apply_threads(args)
    config = EdgeConfig(cloud=args.cloud, source=args.source, model=args.model, split=args.split,
                        frames=args.frames, size=args.size, codec=args.codec, link=args.link, truth=args.truth,
                        stats=args.stats, device=resolve_device(args.device), seed=args.seed, weights=args.weights,
                        stream_id=args.stream_id, token=args.token, tls=tls_files(args), retry_for=args.retry_for,
                        progress=not args.quiet, mode=args.mode, batch=args.batch, local_steps=args.local_steps,
                        lr=args.lr, label=args.label, labels=args.labels)
    summary = (EdgeStreamer if args.mode == "infer" else EdgeTrainer)(config).run()
    print(json.dumps(summary, indent=2))
    return 0


def run_tap(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from adversary.tap_client import TapRecorder

    bar = tqdm(unit="item", desc="tap")
    recorder = TapRecorder(args.cloud, args.record, tls=tls_files(args), token=args.token,
                           stream_ids=tuple(args.stream), queue_size=args.queue, limit=args.limit,
                           on_item=lambda: bar.update(1))
    signal.signal(signal.SIGTERM, lambda *_: recorder.stop())
    try:
        count = recorder.run()
    except KeyboardInterrupt:
        recorder.stop()
        count = recorder.writer.count
    bar.close()
    print(f"recorded {count} items to {args.record} ({recorder.dropped} dropped by the tap)", file=sys.stderr)
    return 0
