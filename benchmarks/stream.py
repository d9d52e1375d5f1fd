"""Stream benchmark: what the wire, the tap, the codecs and the link cost.

In one run: local head+tail fps vs split over loopback (cloud in its own process), tap
recording on vs off, codec encode+decode time and bytes, fps and latency under link specs.
"""
from __future__ import annotations

import tempfile
import time
from typing import Any

import numpy as np
import torch

from benchmarks.common import CloudProcess, parser, print_table, timed, write
from edge.streamer import EdgeConfig, EdgeStreamer
from splitleak import codecs
from splitleak.models import build_split_model
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.video import open_source, to_model_input

SOURCE = "sample:bikes"
MODEL = "resnet18"
# Edge and cloud share this machine's cores: each service gets one torch thread, while the
# local baseline runs head and tail back to back with all of torch's threads.
SERVICE_THREADS = 1


def local_fps(split: str, size: int, frames: int) -> float:
    """Capture, preprocess, head and tail in one process: the no-network baseline."""
    model = build_split_model(MODEL, split, size=size)
    run_local(model, size, 2)
    start = time.perf_counter()
    run_local(model, size, frames)
    return frames / (time.perf_counter() - start)


def run_local(model, size: int, frames: int) -> None:
    with open_source(SOURCE, frames=frames) as source, torch.inference_mode():
        for frame in source:
            model.tail(model.head(torch.from_numpy(to_model_input(frame.image, size))[None]))


def split_run(target: str, split: str, size: int, frames: int, codec="fp32", link="", stream="bench") -> dict[str, Any]:
    """The edge in this process on one thread; the cloud (started with --threads 1) on the other core."""
    config = EdgeConfig(cloud=target, source=SOURCE, model=MODEL, split=split, size=size, frames=frames,
                        codec=codec, link=link, stream_id=stream, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(SERVICE_THREADS)
    try:
        return EdgeStreamer(config).run()
    finally:
        torch.set_num_threads(threads)


def warm(target: str, split: str, size: int) -> None:
    split_run(target, split, size, 2, stream="warmup")


def wire_rows(quick: bool, frames: int) -> list[dict[str, Any]]:
    rows = []
    sizes, splits = ((224, 64), ("layer1", "layer2"))
    with CloudProcess("--threads", str(SERVICE_THREADS)) as cloud:
        for size in sizes:
            for split in splits:
                warm(cloud.target, split, size)
                local = local_fps(split, size, frames)
                remote = split_run(cloud.target, split, size, frames)
                rows.append({"size": size, "split": split, "codec": "fp32", "local_fps": local,
                             "split_fps": remote["fps"], "split_over_local": remote["fps"] / local,
                             "bytes_per_frame": remote["bytes_per_frame"], "p50_ms": remote["latency_ms"]["p50"]})
    return rows


def tap_row(frames: int) -> dict[str, Any]:
    """Same stream with the cloud recording to disk and without, alternated to share the noise."""
    size, split = 224, "layer2"
    on, off = [], []
    with tempfile.TemporaryDirectory() as tmp, CloudProcess("--threads", str(SERVICE_THREADS)) as plain, CloudProcess("--threads", str(SERVICE_THREADS), "--record", f"{tmp}/rec") as rec:
        warm(plain.target, split, size)
        warm(rec.target, split, size)
        for i in range(2):
            off.append(split_run(plain.target, split, size, frames, stream=f"off{i}")["fps"])
            on.append(split_run(rec.target, split, size, frames, stream=f"on{i}")["fps"])
    return {"size": size, "split": split, "codec": "fp32", "tap_on_fps": max(on), "tap_off_fps": max(off),
            "tap_on_over_off": max(on) / max(off)}


def codec_rows(quick: bool) -> list[dict[str, Any]]:
    """Encode + decode per codec on real layer outputs and on a 1 MB fp32 tensor."""
    rows = []
    shapes = {"224/layer2": (1, 128, 28, 28), "224/layer1": (1, 64, 56, 56), "1MB": (1, 256, 32, 32)}
    rng = np.random.default_rng(0)
    for label, shape in shapes.items():
        x = np.maximum(rng.normal(0, 1, shape), 0).astype(np.float32)
        for name in codecs.NAMES:
            msg = pb.FeatureFrame()

            def roundtrip():
                msg.codec.CopyFrom(codecs.encode(name, x, msg.features))
                codecs.decode(msg.codec, msg.features)

            def over_wire():
                msg.codec.CopyFrom(codecs.encode(name, x, msg.features))
                wire = pb.FeatureFrame.FromString(msg.SerializeToString())
                codecs.decode(wire.codec, wire.features)

            repeat = 20 if quick else 100
            rows.append({"tensor": label, "codec": name, "tensor_bytes": x.nbytes,
                         "encode_decode_us": timed(roundtrip, repeat) * 1e6,
                         "with_protobuf_us": timed(over_wire, repeat) * 1e6, "bytes_per_frame": msg.ByteSize()})
    return rows


def link_rows(quick: bool, frames: int) -> list[dict[str, Any]]:
    rows = []
    size, split = 224, "layer2"
    specs = ["rate=10mbit", "rate=10mbit,delay=20ms,jitter=5ms", "rate=10mbit,delay=20ms,jitter=5ms,loss=1%"]
    with CloudProcess("--threads", str(SERVICE_THREADS)) as cloud:
        warm(cloud.target, split, size)
        for spec in specs[:1] if quick else specs:
            for codec in codecs.NAMES:
                r = split_run(cloud.target, split, size, frames, codec=codec, link=spec)
                rows.append({"size": size, "split": split, "codec": codec, "link": spec, "split_fps": r["fps"],
                             "bytes_per_frame": r["bytes_per_frame"], "p50_ms": r["latency_ms"]["p50"],
                             "p95_ms": r["latency_ms"]["p95"], "lost": r["lost"]})
    return rows


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    frames = 12 if args.quick else 40
    print(f"stream benchmark: {MODEL} on {SOURCE}, {frames} frames per measurement, torch threads "
          f"{torch.get_num_threads()}")
    wire = wire_rows(args.quick, frames)
    print_table(wire, ["size", "split", "codec", "local_fps", "split_fps", "split_over_local", "bytes_per_frame", "p50_ms"])
    tap = tap_row(frames)
    print_table([tap], ["size", "split", "tap_on_fps", "tap_off_fps", "tap_on_over_off"])
    codec = codec_rows(args.quick)
    print_table(codec, ["tensor", "codec", "tensor_bytes", "encode_decode_us", "with_protobuf_us", "bytes_per_frame"])
    links = link_rows(args.quick, max(8, frames // 2))
    print_table(links, ["link", "codec", "split_fps", "bytes_per_frame", "p50_ms", "p95_ms", "lost"])
    write(args.json, wire + [tap] + codec + links,
          {"model": MODEL, "source": SOURCE, "frames": frames, "quick": args.quick,
           "local_threads": torch.get_num_threads(), "service_threads": SERVICE_THREADS})


if __name__ == "__main__":
    main()
