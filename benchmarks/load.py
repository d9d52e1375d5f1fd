"""Load benchmark: N edges against one cloud with a token, a recording and a tap, alone and beside idle calls.

Three scenarios, each on a fresh cloud process (`splitleak cloud --token ... --tap-token ... --record DIR`,
one torch thread) with a tap subscriber recording beside it:
  edges           the N edges alone;
  idle-silent     plus --idle-calls unauthenticated Infer streams that open and send nothing;
  idle-no-token   plus as many streams that send one frame without a token, then wait.
Each idle call is its own client (its own connection). The edges are real EdgeStreamer threads in this
process (lenet split at conv1, 32 px, a synthetic scene, paced at --fps each) that stream for --seconds.
Reported per edge and in total: frames sent / acked / lost / rejected, fps, latency p50/p95/p99 (capture to
answer); per scenario: frames the cloud recorded (the recording's items), frames the tap recorded, the
cloud's RSS at start and end, and how many idle calls the cloud itself ended.
"""
from __future__ import annotations

import argparse
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import grpc
import numpy as np
import torch

from adversary.tap_client import TapRecorder
from benchmarks.common import CloudProcess, parser, print_table, write
from edge.streamer import EdgeConfig, EdgeStreamer
from splitleak.checks import check_output_file
from splitleak.cli.common import float_in, int_in, positive_int
from splitleak.errors import SplitleakError
from splitleak.recording import RecordingReader
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.v1 import splitleak_pb2_grpc as rpc

TOKEN, TAP_TOKEN = "load-edge-token", "load-tap-token"
MODEL, SPLIT, SIZE = "lenet", "conv1", 32
SOURCE = f"synthetic:{SIZE}x{SIZE}"
SCENARIOS = ("edges", "idle-silent", "idle-no-token")
TAP_QUEUE = 65536  # the cloud's most: the tap should lose nothing it can keep
TAP_SETTLE_S = 3.0  # after the edges end, wait this long without progress for the tap to catch up
WARMUP_FRAMES = 4
EDGE_GRACE_S = 15.0  # beyond the edges' own --retry-for, before an edge counts as hung
EDGE_COLUMNS = ["scenario", "edge", "sent", "acked", "lost", "rejected", "pending", "fps", "acked_fps", "p50_ms",
                "p95_ms", "p99_ms", "reconnects", "error"]
TOTAL_COLUMNS = ["scenario", "idle_calls", "sent", "acked", "lost", "rejected", "pending", "edges_hung",
                 "delivered_pct", "acked_fps", "p50_ms", "p95_ms", "p99_ms", "recorded", "tap_frames", "tap_dropped",
                 "cloud_rss_start_mb", "cloud_rss_end_mb", "idle_ended_by_cloud"]


class PacedSource:
    """Wraps an edge's source: at most `fps` frames a second (0: unpaced), none after `deadline` (monotonic)."""

    def __init__(self, source: Any, deadline: float, fps: float):
        self.source, self.deadline, self.period = source, deadline, 1.0 / fps if fps else 0.0

    def __enter__(self) -> "PacedSource":
        self.source.__enter__()
        return self

    def __exit__(self, *exc: object) -> Any:
        return self.source.__exit__(*exc)

    def __iter__(self) -> Iterator[Any]:
        frames, due = iter(self.source), time.monotonic()
        while True:
            time.sleep(max(0.0, due - time.monotonic()))  # wait before grabbing, so capture_ts is the send time
            if time.monotonic() >= self.deadline:
                return
            frame = next(frames, None)
            if frame is None:
                return
            yield frame
            due += self.period


class Cloud(CloudProcess):
    """The cloud process, its stderr drained (so it never blocks on a full pipe) and its RSS read from /proc."""

    def __init__(self, record: str):
        super().__init__("--threads", "1", "--token", TOKEN, "--tap-token", TAP_TOKEN, "--record", record)
        self.lines: list[str] = []
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def rss_mb(self) -> float | None:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        return round(int(match.group(1)) / 1024, 1) if match else None

    def stop(self) -> None:
        self.__exit__(None, None, None)
        self._drain.join(5)


class IdleCalls:
    """`count` unauthenticated Infer streams, each on its own connection, that send nothing (or one frame)."""

    def __init__(self, target: str, count: int, first_frame: bool):
        self._stop = threading.Event()
        self.channels = [grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                         for _ in range(count)]
        self.calls = [rpc.SplitInferenceStub(channel).Infer(self._requests(i, first_frame))
                      for i, channel in enumerate(self.channels)]

    def _requests(self, index: int, first_frame: bool) -> Iterator[pb.FeatureFrame]:
        if first_frame:
            frame = pb.FeatureFrame()
            frame.meta.stream_id, frame.meta.model_id, frame.meta.split_point = f"idle{index:03d}", MODEL, SPLIT
            yield frame
        self._stop.wait()

    def ended_by_cloud(self) -> dict[str, int]:
        """How many calls the cloud has ended so far, by status code."""
        codes: dict[str, int] = {}
        for call in self.calls:
            if call.done():
                codes[call.code().name] = codes.get(call.code().name, 0) + 1
        return codes

    def close(self) -> None:
        self._stop.set()
        for call, channel in zip(self.calls, self.channels):
            call.cancel()
            channel.close()


class TapThread:
    """A tap subscriber recording the edges' streams beside them, on its own thread."""

    def __init__(self, target: str, folder: str, stream_ids: tuple[str, ...]):
        self.recorder = TapRecorder(target, folder, token=TAP_TOKEN, stream_ids=stream_ids, queue_size=TAP_QUEUE)
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="tap", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.recorder.run()
        except SplitleakError as err:
            self.error = str(err)

    @property
    def count(self) -> int:
        return self.recorder.writer.count

    def settle(self, expected: int) -> None:
        """Wait until the tap holds `expected` items, or makes no progress for TAP_SETTLE_S."""
        last, since = -1, time.monotonic()
        while self.count < expected and time.monotonic() - since < TAP_SETTLE_S and self._thread.is_alive():
            if self.count != last:
                last, since = self.count, time.monotonic()
            time.sleep(0.05)

    def stop(self) -> None:
        self.recorder.stop()
        self._thread.join(10)


def stream_ids(count: int) -> tuple[str, ...]:
    return tuple(f"load{i:02d}" for i in range(count))


def edge_config(target: str, stream_id: str, **kw: Any) -> EdgeConfig:
    return EdgeConfig(cloud=target, source=SOURCE, model=MODEL, split=SPLIT, size=SIZE, token=TOKEN,
                      stream_id=stream_id, progress=False, **kw)


def warm_up(target: str) -> None:
    """A few frames first, so the cloud has built its tail and the timed run measures steady state."""
    EdgeStreamer(edge_config(target, "warmup", frames=WARMUP_FRAMES, retry_for=10.0)).run()


def build_edges(target: str, count: int, retry_for: float) -> list[EdgeStreamer]:
    return [EdgeStreamer(edge_config(target, stream_id, seed=i, retry_for=retry_for))
            for i, stream_id in enumerate(stream_ids(count))]


def run_edges(edges: list[EdgeStreamer], seconds: float, fps: float, grace: float) -> list[dict[str, Any]]:
    """Stream from every edge at once for `seconds`; each edge's summary (with `error` if it gave up).

    An edge still running `grace` seconds after the others should have ended is left behind (its
    threads are daemons) and reported as it stands, with `hung` set and its unanswered frames `pending`.
    """
    deadline = time.monotonic() + seconds
    summaries: list[dict[str, Any]] = [{} for _ in edges]

    def one(i: int, edge: EdgeStreamer) -> None:
        edge.source = PacedSource(edge.source, deadline, fps)
        try:
            summaries[i] = edge.run()
        except SplitleakError:  # the summary is written before the uplink's error is raised
            summaries[i] = edge.summary()

    threads = [threading.Thread(target=one, args=(i, edge), name=f"edge{i}", daemon=True)
               for i, edge in enumerate(edges)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline + grace - time.monotonic()))
    for i, (thread, edge) in enumerate(zip(threads, edges)):
        if thread.is_alive():
            edge.link.close()  # stop it producing; its uplink may still be retrying
            summaries[i] = {**edge.stats.summary(), "hung": True,
                            "error": f"still running {grace:g}s after its last frame (uplink retrying)"}
    return summaries


def edge_row(scenario: str, edge: EdgeStreamer, summary: dict[str, Any], seconds: float) -> dict[str, Any]:
    latency = summary["latency_ms"]
    pending = summary["sent"] - summary["acked"] - summary["lost"] - summary["rejected"]
    return {"scenario": scenario, "edge": edge.config.stream_id,
            **{k: summary[k] for k in ("sent", "acked", "lost", "rejected", "fps", "reconnects")},
            "pending": pending, "hung": bool(summary.get("hung")),
            "acked_fps": round(summary["acked"] / seconds, 3), "p50_ms": latency["p50"], "p95_ms": latency["p95"],
            "p99_ms": latency["p99"], "error": summary.get("error")}


def total_row(scenario: str, edges: list[EdgeStreamer], rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    counts = {k: sum(r[k] for r in rows) for k in ("sent", "acked", "lost", "rejected", "pending", "reconnects")}
    # every acked frame's latency, from each edge's ledger, for percentiles over all frames
    latencies = np.concatenate([np.asarray(edge.stats._latencies, dtype=float) for edge in edges] or [[]]) * 1e3
    pct = {f"p{p}_ms": round(float(np.percentile(latencies, p)), 3) if latencies.size else None for p in (50, 95, 99)}
    return {"scenario": scenario, "edge": "total", **counts, "edges": len(edges),
            "fps": round(sum(r["fps"] for r in rows), 3), "acked_fps": round(counts["acked"] / seconds, 3),
            "delivered_pct": round(100 * counts["acked"] / counts["sent"], 2) if counts["sent"] else 0.0,
            "edges_with_error": sum(1 for r in rows if r["error"]), "edges_hung": sum(r["hung"] for r in rows),
            **pct}


def recorded_frames(folder: str, streams: tuple[str, ...]) -> tuple[int, int | None]:
    """The edges' frames in the cloud's recording, and the drops its summary counts (None without a summary)."""
    reader = RecordingReader(folder)
    frames = sum(1 for item in reader if item.kind == "frame" and item.meta.get("stream_id") in streams)
    return frames, (reader.summary or {}).get("dropped")


def scenario(name: str, args: argparse.Namespace, seconds: float) -> list[dict[str, Any]]:
    idle = {"edges": 0}.get(name, args.idle_calls)
    with tempfile.TemporaryDirectory(prefix="load-") as tmp:
        cloud = Cloud(f"{tmp}/record")
        idle_calls: IdleCalls | None = None
        try:
            warm_up(cloud.target)
            rss_start = cloud.rss_mb()
            tap = TapThread(cloud.target, f"{tmp}/tap", stream_ids(args.edges))
            tap.recorder.subscribed.wait(10)  # frames sent before the subscription would never reach the tap
            idle_calls = IdleCalls(cloud.target, idle, first_frame=name == "idle-no-token") if idle else None
            retry_for = max(2.0, seconds)
            edges = build_edges(cloud.target, args.edges, retry_for=retry_for)
            summaries = run_edges(edges, seconds, args.fps, grace=retry_for + EDGE_GRACE_S)
            rows = [edge_row(name, edge, summary, seconds) for edge, summary in zip(edges, summaries)]
            total = total_row(name, edges, rows, seconds)
            tap.settle(total["acked"])
            rss_end = cloud.rss_mb()
            ended = idle_calls.ended_by_cloud() if idle_calls else {}
            tap.stop()
        finally:
            if idle_calls:
                idle_calls.close()
            cloud.stop()
        recorded, record_dropped = recorded_frames(f"{tmp}/record", stream_ids(args.edges))
    total.update(idle_calls=idle, idle_kind=name if idle else None, recorded=recorded, record_dropped=record_dropped,
                 tap_frames=tap.count, tap_dropped=tap.recorder.dropped, tap_error=tap.error,
                 cloud_rss_start_mb=rss_start, cloud_rss_end_mb=rss_end,
                 idle_ended_by_cloud=sum(ended.values()), idle_end_codes=ended,
                 cloud_frames=_stopped_after(cloud.lines))
    return rows + [total]


def _stopped_after(lines: list[str]) -> int | None:
    """Frames the cloud says it served when it stops ('cloud stopped after N frames'), less the warm-up's."""
    match = next((m for m in (re.search(r"stopped after (\d+) frames", line) for line in lines) if m), None)
    return int(match.group(1)) - WARMUP_FRAMES if match else None


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--edges", type=int_in(1, 256), default=16, help="edges streaming at once (default 16)")
    p.add_argument("--seconds", type=float_in(0.0, 3600.0, above=True),
                   help="seconds each scenario streams (default 60; 3 with --quick)")
    p.add_argument("--idle-calls", type=int_in(0, 10_000), default=70,
                   help="idle unauthenticated calls in the idle scenarios (default 70)")
    p.add_argument("--fps", type=float_in(0.0, 10_000.0), default=10.0,
                   help="frames a second each edge sends (default 10, as a camera; 0: as fast as it can)")
    p.add_argument("--scenario", action="append", choices=SCENARIOS, help="run only these (repeatable)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads in this process (default 1)")
    return p


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = build_parser().parse_args(argv)
    check_output_file(args.json, "--json")
    seconds = args.seconds or (3.0 if args.quick else 60.0)
    torch.set_num_threads(args.threads)
    print(f"load benchmark: {args.edges} edges x {seconds:g} s at {args.fps:g} fps each ({MODEL}/{SPLIT}, {SIZE}px, "
          f"{SOURCE}); idle calls {args.idle_calls}")
    rows: list[dict[str, Any]] = []
    for name in args.scenario or SCENARIOS:
        got = scenario(name, args, seconds)
        print_table(got[:-1], EDGE_COLUMNS)
        rows += got
    print_table([r for r in rows if r["edge"] == "total"], TOTAL_COLUMNS)
    write(args.json, rows, {"edges": args.edges, "seconds": seconds, "idle_calls": args.idle_calls, "fps": args.fps,
                            "model": MODEL, "split": SPLIT, "size": SIZE, "source": SOURCE, "quick": args.quick,
                            "scenarios": list(args.scenario or SCENARIOS)})
    return rows


if __name__ == "__main__":
    main()
