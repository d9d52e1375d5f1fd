"""What every benchmark shares: arguments, the JSON shape, a cloud in its own process."""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="fewer frames and configurations (a smoke run)")
    p.add_argument("--json", metavar="PATH", help="write {rows, config} here")
    return p


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}


def write(path: str | None, rows: list[dict[str, Any]], config: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({"rows": rows, "config": {**config, "machine": machine()}}, indent=2))
        print(f"wrote {path}")


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


class CloudProcess:
    """`splitleak cloud` in a child process on an ephemeral port, as a real deployment runs it."""

    def __init__(self, *args: str, listen: str = "127.0.0.1:0", prefix: tuple[str, ...] = ()):
        """`prefix` runs the cloud under another command, e.g. `ip netns exec NS` (benchmarks/link_backends.py)."""
        cmd = [*prefix, sys.executable, "-m", "splitleak", "cloud", "--listen", listen, "--device", "cpu", *args]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        match = re.search(r"listening on ([^\s,]+)", line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"cloud did not start: {line.strip()}")
        self.target = match.group(1)

    def __enter__(self) -> "CloudProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def record_training(work: Path, cloud_args: tuple[str, ...] = (), **edge: Any) -> tuple[Path, Path]:
    """Train through a real edge (EdgeTrainer with `edge`'s EdgeConfig fields) against a recording
    `splitleak cloud` process (`cloud_args` added); the (recording, truth) folders under `work`."""
    from edge.session import EdgeConfig
    from edge.trainer import EdgeTrainer

    rec, truth = work / "rec", work / "truth"
    work.mkdir(parents=True, exist_ok=True)
    with CloudProcess("--threads", "1", "--record", str(rec), *cloud_args) as cloud:
        summary = EdgeTrainer(EdgeConfig(cloud=cloud.target, truth=str(truth), progress=False, **edge)).run()
    batch, frames = edge.get("batch", 1), edge["frames"]
    if summary["acked"] * batch < frames:
        raise RuntimeError(f"the cloud acknowledged {summary['acked']} of {frames // batch} updates")
    return rec, truth


def record_in_process(rec: Path, **edge: Any) -> None:
    """Stream through a real edge (EdgeConfig fields `edge`; mode "infer": the streamer, else the trainer)
    into a recording cloud server in this process, on an ephemeral loopback port; the recording goes to `rec`."""
    from cloud.server import CloudConfig, CloudServer
    from edge.session import EdgeConfig
    from edge.streamer import EdgeStreamer
    from edge.trainer import EdgeTrainer

    server = CloudServer(CloudConfig(listen="127.0.0.1:0", record=str(rec)))
    try:
        config = EdgeConfig(cloud=f"127.0.0.1:{server.port}", progress=False, **edge)
        (EdgeStreamer if config.mode == "infer" else EdgeTrainer)(config).run()
    finally:
        server.stop(1)


def timed(fn, repeat: int) -> float:
    """Best-of-3 mean seconds per call over `repeat` calls (noisy shared machine)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best
