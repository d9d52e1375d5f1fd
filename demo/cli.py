"""`splitleak demo`: cloud + edge + adversary on loopback, a bundled real clip, one report folder."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from splitleak.checks import check_output_dir
from splitleak.cli.common import add_device, float_in, positive_int, resolve_device, seed, size_px
from splitleak.codecs import NAMES as CODECS
from splitleak.errors import SplitleakError
from splitleak.recording import write_json


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the embedded default: stream a real clip, tap it, invert the features",
                       description="Start a cloud and an edge on loopback, stream a bundled real clip through "
                       "resnet18 split at layer1, record the tap, run the white-box `do` inversion on a few "
                       "tapped frames, and write a report folder (grid.png, metrics.json, stream.json).")
    p.add_argument("--out", default="reports/demo", help="report folder (default reports/demo; an earlier demo report there is replaced)")
    p.add_argument("--source", default="sample:bikes", help="video source (default sample:bikes, bundled)")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--split", default="layer1")
    p.add_argument("--size", type=size_px, default=64, help="input size (default 64)")
    p.add_argument("--frames", type=positive_int, default=32, help="frames to stream (default 32)")
    p.add_argument("--attack-frames", type=positive_int, default=8, help="tapped frames to invert (default 8)")
    p.add_argument("--iterations", type=positive_int, default=600, help="DO iterations (default 600)")
    p.add_argument("--tv", type=float_in(0.0), default=0.3,
                   help="DO's total-variation weight (default 0.3: layer1 after the max-pool needs a strong prior)")
    p.add_argument("--codec", default="fp32", choices=CODECS, help="wire codec for the features (default fp32)")
    p.add_argument("--link", default="", help="network conditions for the edge's link (default: ideal)")
    p.add_argument("--seed", type=seed, default=0)
    add_device(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")
    from adversary.runner.run import run_attack
    from cloud.server import CloudConfig, CloudServer
    from edge.streamer import EdgeConfig, EdgeStreamer

    device = resolve_device(args.device)
    out = Path(args.out)
    clear_previous_report(out)
    out.mkdir(parents=True)
    write_json(out / "config.json", {**vars(args), "run": "demo", "device": device})
    started = time.time()

    say(f"[1/3] cloud on loopback, edge streaming {args.frames} frames of {args.source} "
        f"through {args.model}/{args.split} at {args.size}px")
    cloud = CloudServer(CloudConfig(listen="127.0.0.1:0", record=str(out / "recording"), device=device))
    try:
        edge = EdgeConfig(cloud=f"127.0.0.1:{cloud.port}", source=args.source, model=args.model, split=args.split,
                          frames=args.frames, size=args.size, codec=args.codec, link=args.link,
                          truth=str(out / "truth"), stats=str(out / "stream.json"), device=device, seed=args.seed,
                          stream_id="demo")
        stream = EdgeStreamer(edge).run()
    finally:
        cloud.stop(grace=1.0)
    say(f"      sent {stream['sent']}, acked {stream['acked']}, lost {stream['lost']}, "
        f"{stream['fps']} fps, p50 {stream['latency_ms']['p50']} ms, {stream['bytes_per_frame']:.0f} B/frame")

    say(f"[2/3] adversary: white-box `do` inversion of {args.attack_frames} tapped frames, {args.iterations} iterations")
    metrics = run_attack(str(out / "recording"), "do", str(out / "attack"), truth=str(out / "truth"), device=device,
                         iterations=args.iterations, seed=args.seed, max_frames=args.attack_frames,
                         options={"lambda_tv": args.tv})

    say("[3/3] report")
    shutil.copy(out / "attack" / "metrics.json", out / "metrics.json")
    if (out / "attack" / "grid.png").exists():
        shutil.copy(out / "attack" / "grid.png", out / "grid.png")
    s = metrics["summary"]
    say(f"      PSNR {s['mean_psnr']:.2f} dB, SSIM {s['mean_ssim']:.3f}, success {s['success_rate']:.0%} "
        f"(attack {s['seconds']:.1f} s); demo took {time.time() - started:.0f} s")
    say(f"      report: {out}/grid.png, {out}/metrics.json, {out}/stream.json")
    print(json.dumps({"stream": stream, "attack": s, "report": str(out)}, indent=2))
    return 0


def clear_previous_report(out: Path) -> None:
    """Replace an earlier demo report, but never a folder the demo did not write."""
    if not out.exists():
        return
    marker = out / "config.json"
    try:
        earlier = json.loads(marker.read_text()).get("run") == "demo"
    except (OSError, ValueError):
        earlier = False
    if not earlier and any(out.iterdir()):
        raise SplitleakError(f"{out} exists and is not an earlier demo report; choose another --out")
    shutil.rmtree(out)


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
