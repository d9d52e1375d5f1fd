"""`splitleak cloud`: serve the tail F2 over gRPC, with the tap and the recorder."""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from splitleak.checks import check_output_dir
from splitleak.cli.common import (
    add_device,
    add_message_limit,
    add_threads,
    add_tls,
    apply_threads,
    positive_int,
    positive_seconds,
    resolve_device,
    tls_files,
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    cloud = sub.add_parser("cloud", help="run the cloud service (tail F2, tap, recorder)",
                           description="Serve split inference over gRPC; optionally record what it decodes.")
    cloud.add_argument("--listen", default="127.0.0.1:50051", help="HOST:PORT to bind (port 0: any free port)")
    cloud.add_argument("--record", metavar="DIR", help="record every decoded frame here (manifest + safetensors)")
    cloud.add_argument("--weights", action="append", default=[], metavar="PATH",
                       help="a state-dict file edges may name by its tag (repeatable)")
    cloud.add_argument("--round-size", type=positive_int, default=1,
                       help="learning: edges whose updates make one round (default 1)")
    cloud.add_argument("--round-timeout", type=positive_seconds, default=10.0,
                       help="learning: close a round with fewer edges after this many seconds (default 10)")
    cloud.add_argument("--token", help="bearer token every edge must present")
    cloud.add_argument("--tap-token", help="bearer token for the tap (required for the tap when --token is set)")
    cloud.add_argument("--allow-models", type=lambda text: tuple(filter(None, text.split(","))), default=(),
                       metavar="A,B", help="models edges may ask for (default: every model of the zoo)")
    cloud.add_argument("--max-classes", type=positive_int, default=1000,
                       help="largest num_classes an edge may ask for (default 1000)")
    cloud.add_argument("--max-input-size", type=positive_int, default=512,
                       help="largest input size in pixels an edge may ask for (default 512)")
    cloud.add_argument("--max-classifier-params", type=positive_int, default=2**26,
                       help="largest classifier (edge --classifier) an edge may ask for, in parameters "
                       "(default 2^26: 256 MB of fp32)")
    cloud.add_argument("--allow-downloads", action="store_true",
                       help="fetch torchvision weights an edge names (tv:NAME) at request time (default: only cached)")
    cloud.add_argument("--build-timeout", type=positive_seconds, default=60.0,
                       help="seconds a request waits for its model to be built (default 60)")
    add_message_limit(cloud, ", either way", ": what one peer's message may make the cloud hold; raise it on "
                      "cloud and edges for models whose fedsgd state is larger (vit_b_16: 330 MiB fp32)")
    add_device(cloud)
    add_threads(cloud)
    add_tls(cloud, server=True)
    cloud.set_defaults(run=run_cloud)


def run_cloud(args: argparse.Namespace) -> int:
    from splitleak.wire.channel import check_target, message_limit

    tls = tls_files(args, server=True)  # before torch loads: a bad file is one line, never gRPC's abort
    check_target(args.listen)
    max_message_bytes = message_limit(args.max_message_mb)
    check_output_dir(args.record, "--record")
    from cloud.server import CloudConfig, CloudServer

    apply_threads(args)
    config = CloudConfig(listen=args.listen, record=args.record, device=resolve_device(args.device),
                         weights=tuple(args.weights), token=args.token, tap_token=args.tap_token, tls=tls,
                         round_size=args.round_size, round_timeout=args.round_timeout,
                         allow_models=args.allow_models, max_classes=args.max_classes,
                         max_input_size=args.max_input_size, max_classifier_params=args.max_classifier_params,
                         allow_downloads=args.allow_downloads,
                         build_timeout=args.build_timeout, max_message_bytes=max_message_bytes)
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
