"""`splitleak tap`: the adversary's remote recorder of a cloud's tap."""
from __future__ import annotations

import argparse
import signal
import sys

from splitleak.checks import check_output_dir
from splitleak.cli.common import add_message_limit, add_tls, positive_int, tls_files


def add_parsers(sub: argparse._SubParsersAction) -> None:
    tap = sub.add_parser("tap", help="record a cloud's tap remotely",
                         description="Subscribe to the cloud's tap and record what it decoded, until Ctrl-C.")
    tap.add_argument("--cloud", required=True, help="HOST:PORT of the cloud")
    tap.add_argument("--record", required=True, metavar="DIR", help="recording folder to create")
    tap.add_argument("--token", help="the cloud's tap token")
    tap.add_argument("--stream", action="append", default=[], help="only this stream id (repeatable)")
    tap.add_argument("--limit", type=positive_int, help="stop after N items")
    tap.add_argument("--queue", type=positive_int, default=1024, help="server-side queue for this subscriber")
    add_message_limit(tap, " the tap receives", "; match the cloud's")
    add_tls(tap, server=False)
    tap.set_defaults(run=run_tap)


def run_tap(args: argparse.Namespace) -> int:
    from splitleak.wire.channel import check_target, message_limit

    tls = tls_files(args)  # a bad file is one line, never gRPC's abort
    check_target(args.cloud)
    max_message_bytes = message_limit(args.max_message_mb)
    check_output_dir(args.record, "--record")
    from tqdm import tqdm

    from adversary.tap_client import TapRecorder

    bars: list[tqdm] = []  # made at the first item: a tap that never connects prints only its one-line error

    def on_item() -> None:
        if not bars:
            bars.append(tqdm(unit="item", desc="tap"))
        bars[0].update(1)

    recorder = TapRecorder(args.cloud, args.record, tls=tls, token=args.token,
                           stream_ids=tuple(args.stream), queue_size=args.queue, limit=args.limit, on_item=on_item,
                           max_message_bytes=max_message_bytes)
    signal.signal(signal.SIGTERM, lambda *_: recorder.stop())
    try:
        count = recorder.run()
    except KeyboardInterrupt:
        recorder.stop()
        count = recorder.writer.count
    for bar in bars:
        bar.close()
    print(f"recorded {count} items to {args.record} ({recorder.dropped} dropped by the tap)", file=sys.stderr)
    return 0
