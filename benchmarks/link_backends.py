"""Link backends side by side: the application's emulator against the kernel's tc, at the same rate.

Both runs are the same edge and cloud processes (the CLI, one torch thread each), streaming
resnet18 features that saturate the link; only the link differs:
- emulator: cloud on loopback, `splitleak edge --link rate=R`;
- tc: cloud in one network namespace, edge in the other, joined by a veth pair whose edge side
  is shaped by tc (tbf for rate; splitleak/netns.py), the edge with an ideal `--link`.
Throughput is goodput on the wire: bytes_per_frame * 8 * fps; latency is the edge's capture to
answer. Needs root and iproute2 for the tc row (else it says why and prints the emulator only).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import CloudProcess, parser, print_table, write
from splitleak.errors import SplitleakError
from splitleak.netns import check_tc_available, tc_path

RATE_MBIT = 10
# 401 kB a frame: 3.1 fps at 10 mbit, below what one core computes, so the link is the bottleneck
MODEL, SPLIT, SIZE, CODEC, SOURCE = "resnet18", "layer2", 224, "fp32", "sample:bikes"


def edge(target: str, frames: int, link: str, stats: Path, prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    """One `splitleak edge` run; its --stats summary."""
    cmd = [*prefix, sys.executable, "-m", "splitleak", "edge", "--cloud", target, "--source", SOURCE, "--model", MODEL,
           "--split", SPLIT, "--size", str(SIZE), "--frames", str(frames), "--codec", CODEC, "--link", link,
           "--stats", str(stats), "--quiet", "--stream-id", stats.stem]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise SplitleakError(f"edge failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(stats.read_text())


def row(backend: str, summary: dict[str, Any], qdisc: str) -> dict[str, Any]:
    goodput = summary["bytes_per_frame"] * 8 * summary["fps"] / 1e6
    return {"backend": backend, "qdisc": qdisc, "rate_mbit": RATE_MBIT, "frames": summary["sent"],
            "acked": summary["acked"], "fps": summary["fps"], "goodput_mbit": goodput,
            "goodput_over_rate": goodput / RATE_MBIT, "p50_ms": summary["latency_ms"]["p50"],
            "p95_ms": summary["latency_ms"]["p95"], "seconds": summary["seconds"]}


def emulator_row(frames: int, tmp: Path) -> dict[str, Any]:
    with CloudProcess("--threads", "1") as cloud:
        edge(cloud.target, 2, "", tmp / "warm-emu.json")
        return row("emulator", edge(cloud.target, frames, f"rate={RATE_MBIT}mbit", tmp / "emu.json"), "-")


def tc_row(frames: int, tmp: Path) -> dict[str, Any]:
    with tc_path(rate=RATE_MBIT * 1e6) as path:
        into = {side: tuple(path.command(side, [])) for side in ("cloud", "edge")}
        with CloudProcess("--threads", "1", listen=f"{path.ips['cloud']}:0", prefix=into["cloud"]) as cloud:
            edge(cloud.target, 2, "", tmp / "warm-tc.json", into["edge"])
            out = row("tc", edge(cloud.target, frames, "", tmp / "tc.json", into["edge"]), "+".join(path.qdiscs))
        print(f"tc on the edge's veth: {path.shown}")
        return out


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    frames = 12 if args.quick else 40
    print(f"link backends at {RATE_MBIT} mbit: {MODEL}/{SPLIT} at {SIZE} px, {CODEC}, {frames} frames")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [emulator_row(frames, Path(tmp))]
        try:
            check_tc_available()
            rows.append(tc_row(frames, Path(tmp)))
        except SplitleakError as e:
            print(f"tc row skipped: {e}")
    print_table(rows, ["backend", "qdisc", "frames", "acked", "fps", "goodput_mbit", "goodput_over_rate", "p50_ms",
                       "p95_ms", "seconds"])
    if len(rows) == 2:
        print(f"tc goodput / emulator goodput = {rows[1]['goodput_mbit'] / rows[0]['goodput_mbit']:.3f}")
    write(args.json, rows, {"rate_mbit": RATE_MBIT, "model": MODEL, "split": SPLIT, "size": SIZE, "codec": CODEC,
                            "frames": frames, "quick": args.quick})


if __name__ == "__main__":
    main()
