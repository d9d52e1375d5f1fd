"""Stream benchmark: what the wire, the tap, the codecs and the link cost.

In one run: local head+tail fps vs split over loopback (cloud in its own process; both warmed
up on the same frames, with the same torch threads per process, best of interleaved passes), tap
recording on vs off, codec encode+decode time and bytes, fps and latency under link specs.
"""
from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
# Edge and cloud share this machine's cores: each service gets one torch thread, and so does the
# local baseline, so that split_over_local compares the same per-process compute (two threads per
# process on two shared cores ran 5-20x slower whenever another job woke up).
SERVICE_THREADS = 1
WARMUP_PASSES = 1  # untimed passes over the same frames before any timed one (allocator, oneDNN packing)
TIMED_PASSES = 3   # the best of these, local and split interleaved so that they share the machine's noise


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with n torch threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def local_pass(model, size: int, frames: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """fps of capture, preprocess, head and tail in one process over the first `frames` frames.

    The model is built by the caller, outside the timed region; the clock runs from opening the
    source to the last tail output, as the edge's own fps runs from opening its source to the last answer.
    """
    start = clock()
    with open_source(SOURCE, frames=frames) as source, torch.inference_mode():
        for frame in source:
            model.tail(model.head(torch.from_numpy(to_model_input(frame.image, size))[None]))
    return frames / (clock() - start)


def local_vs_split(local: Callable[[], float], split: Callable[[], float], *, warmup: int = WARMUP_PASSES,
                   repeats: int = TIMED_PASSES) -> tuple[float, float]:
    """Best fps of each of two passes, both warmed up and both run with SERVICE_THREADS torch threads."""
    with torch_threads(SERVICE_THREADS):
        for _ in range(warmup):
            local()
            split()
        runs = [(local(), split()) for _ in range(repeats)]
    return max(r[0] for r in runs), max(r[1] for r in runs)


def split_run(target: str, split: str, size: int, frames: int, codec="fp32", link="", stream="bench") -> dict[str, Any]:
    """The edge in this process on SERVICE_THREADS threads; the cloud (started with --threads 1) in its own."""
    config = EdgeConfig(cloud=target, source=SOURCE, model=MODEL, split=split, size=size, frames=frames,
                        codec=codec, link=link, stream_id=stream, progress=False)
    with torch_threads(SERVICE_THREADS):
        return EdgeStreamer(config).run()  # its fps excludes building the model (done in the constructor)


def warm(target: str, split: str, size: int) -> None:
    split_run(target, split, size, 2, stream="warmup")


def wire_rows(quick: bool, frames: int) -> list[dict[str, Any]]:
    rows = []
    sizes, splits = ((224, 64), ("layer1", "layer2"))
    with CloudProcess("--threads", str(SERVICE_THREADS)) as cloud:
        for size in sizes:
            for split in splits:
                model = build_split_model(MODEL, split, size=size)
                last: dict[str, Any] = {}

                def split_fps() -> float:
                    last.update(split_run(cloud.target, split, size, frames))
                    return last["fps"]

                local, remote = local_vs_split(lambda: local_pass(model, size, frames), split_fps)
                rows.append({"size": size, "split": split, "codec": "fp32", "local_fps": local,
                             "split_fps": remote, "split_over_local": remote / local,
                             "bytes_per_frame": last["bytes_per_frame"], "p50_ms": last["latency_ms"]["p50"]})
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
    print(f"stream benchmark: {MODEL} on {SOURCE}, {frames} frames per measurement, {SERVICE_THREADS} torch "
          f"thread(s) per process (local, edge, cloud), best of {TIMED_PASSES} after {WARMUP_PASSES} warm-up")
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
           "local_threads": SERVICE_THREADS, "service_threads": SERVICE_THREADS,
           "warmup_passes": WARMUP_PASSES, "timed_passes": TIMED_PASSES})


if __name__ == "__main__":
    main()
