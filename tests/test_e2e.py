"""End to end over a real loopback gRPC server: stream, answers, tap, recording, tokens."""
import threading

import grpc
import numpy as np
import pytest

from adversary.tap_client import TapRecorder
from edge.streamer import EdgeConfig, EdgeStreamer
from splitleak.errors import SplitleakError
from splitleak.models import build_split_model
from splitleak.recording import RecordingReader
from splitleak.video import load_png, open_source, to_model_input

TINY = dict(source="synthetic:48x40", model="lenet", split="conv2", size=32, progress=False)


def stream(port, frames=6, **kwargs):
    config = EdgeConfig(cloud=f"127.0.0.1:{port}", frames=frames, **{**TINY, **kwargs})
    return EdgeStreamer(config).run()


def test_stream_is_answered_recorded_and_true_to_the_head(start_cloud, tmp_path):
    cloud = start_cloud(record=str(tmp_path / "rec"))
    summary = stream(cloud.port, frames=6, truth=str(tmp_path / "truth"), stats=str(tmp_path / "stats.json"))
    assert summary["sent"] == summary["acked"] == 6 and summary["lost"] == 0
    assert summary["latency_ms"]["p50"] > 0 and summary["bytes_per_frame"] > 12 * 8 * 8 * 4
    cloud.stop(1)
    items = RecordingReader(tmp_path / "rec").items()
    assert [int(it.meta["seq"]) for it in items] == list(range(6))
    assert items[0].meta["model_id"] == "lenet" and items[0].meta["codec"]["name"] == "fp32"
    # What the tap recorded is exactly the head's output on the truth frame.
    head = build_split_model("lenet", "conv2", size=32).head
    truth = load_png(tmp_path / "truth" / "edge0_000003.png")
    frame = list(open_source("synthetic:48x40", frames=4))[3]
    assert np.abs(truth - to_model_input(frame.image, 32)).max() <= 0.5 / 255 + 1e-6
    import torch

    with torch.no_grad():
        z = head(torch.from_numpy(to_model_input(frame.image, 32))[None]).numpy()
    assert np.array_equal(items[3].tensors["features"], z)
    assert (tmp_path / "stats.json").exists()


def test_int8_stream_decodes_within_a_step(start_cloud, tmp_path):
    cloud = start_cloud(record=str(tmp_path / "rec"))
    fp32 = stream(cloud.port, frames=3, codec="fp32", stream_id="a")
    int8 = stream(cloud.port, frames=3, codec="int8", stream_id="b")
    assert int8["acked"] == 3 and int8["bytes_per_frame"] < 0.3 * fp32["bytes_per_frame"]
    cloud.stop(1)
    items = RecordingReader(tmp_path / "rec").items()
    by = {(it.meta["stream_id"], int(it.meta["seq"])): it for it in items}
    for seq in range(3):
        exact, coded = by["a", seq].tensors["features"], by["b", seq].tensors["features"]
        assert np.abs(exact - coded).max() <= by["b", seq].meta["codec"]["scale"] / 2 * 1.001


def test_many_edges_at_once(start_cloud):
    cloud = start_cloud()
    results = {}

    def run(name):
        results[name] = stream(cloud.port, frames=5, stream_id=name)

    threads = [threading.Thread(target=run, args=(f"e{i}",)) for i in range(3)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert all(results[f"e{i}"]["acked"] == 5 for i in range(3))
    assert cloud.inference.frames == 15


def test_remote_tap_records_what_the_cloud_decoded(start_cloud, tmp_path):
    cloud = start_cloud(token="edge-secret", tap_token="tap-secret")
    recorder = TapRecorder(f"127.0.0.1:{cloud.port}", str(tmp_path / "tap"), token="tap-secret", limit=4)
    thread = threading.Thread(target=recorder.run)
    thread.start()
    _wait_for(lambda: cloud.bus.active)
    stream(cloud.port, frames=4, token="edge-secret", codec="fp16")
    thread.join(20)
    items = RecordingReader(tmp_path / "tap").items()
    assert len(items) == 4 and items[0].tensors["features"].dtype == np.float32
    assert items[0].meta["codec"]["name"] == "fp16"


def test_tokens_are_enforced(start_cloud, tmp_path):
    cloud = start_cloud(token="edge-secret", tap_token="tap-secret")
    with pytest.raises(SplitleakError, match="refused"):
        stream(cloud.port, frames=2, token="wrong")
    with pytest.raises(SplitleakError, match="UNAUTHENTICATED"):
        TapRecorder(f"127.0.0.1:{cloud.port}", str(tmp_path / "t1"), token="edge-secret").run()
    only_edge = start_cloud(token="edge-secret")
    with pytest.raises(SplitleakError, match="PERMISSION_DENIED"):
        TapRecorder(f"127.0.0.1:{only_edge.port}", str(tmp_path / "t2"), token="edge-secret").run()


def test_lossy_link_with_drop_counts_every_frame(start_cloud):
    cloud = start_cloud()
    summary = stream(cloud.port, frames=30, link="loss=30%,drop=1", seed=3)
    assert 0 < summary["lost"] < 30 and summary["acked"] + summary["lost"] == 30


@pytest.mark.slow
def test_unreachable_cloud_fails_with_a_reason():
    with pytest.raises(SplitleakError, match="unreachable"):
        stream(1, frames=2, retry_for=0.5)


def _wait_for(condition, timeout=10.0):
    import time

    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "condition never held"
        time.sleep(0.02)


@pytest.mark.slow
def test_edge_reconnects_when_the_cloud_restarts(start_cloud):
    cloud = start_cloud()
    port = cloud.port
    stream(port, frames=1)  # warm the cloud's model cache, so frames queue in the link, not at the cloud
    result = {}
    config = EdgeConfig(cloud=f"127.0.0.1:{port}", frames=60, link="delay=5ms,rate=1mbit", **TINY)
    streamer = EdgeStreamer(config)
    thread = threading.Thread(target=lambda: result.update(streamer.run()))
    thread.start()
    _wait_for(lambda: streamer.stats.acked >= 10)
    cloud.stop(0)
    restarted = start_cloud(listen=f"127.0.0.1:{port}")
    assert restarted.port == port
    thread.join(60)
    assert result["sent"] == 60 and result["acked"] + result["lost"] == 60
    assert result["reconnects"] >= 1 and result["acked"] > 10 and restarted.inference.frames > 0


@pytest.mark.slow
def test_clip_model_streams_one_message_per_clip(start_cloud, tmp_path):
    cloud = start_cloud(record=str(tmp_path / "rec"))
    config = EdgeConfig(cloud=f"127.0.0.1:{cloud.port}", source="synthetic:40x40", model="r3d_18", split="layer3",
                        size=32, frames=16, progress=False, truth=str(tmp_path / "truth"))
    summary = EdgeStreamer(config).run()
    assert summary["sent"] == summary["acked"] == 2
    cloud.stop(1)
    items = RecordingReader(tmp_path / "rec").items()
    assert [int(it.meta["seq"]) for it in items] == [0, 8]
    assert items[0].tensors["features"].shape[:2] == (1, 256)
    assert len(list((tmp_path / "truth").glob("*.png"))) == 16


@pytest.mark.slow
def test_edge_gives_up_on_a_cloud_that_connects_but_refuses_every_call():
    """Connecting is not being served: a cloud that accepts the connection and answers every call with
    RESOURCE_EXHAUSTED must not keep the edge retrying forever (its retry window runs from the first
    refusal and is reset only by a call that was answered)."""
    from concurrent import futures

    import grpc

    from splitleak.v1 import splitleak_pb2_grpc as rpc

    class Full(rpc.SplitInferenceServicer):
        def Infer(self, request_iterator, context):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "all call slots are taken")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    rpc.add_SplitInferenceServicer_to_server(Full(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    outcome: list[BaseException] = []

    def edge() -> None:
        try:
            stream(port, frames=2, retry_for=1.0)
        except BaseException as err:  # noqa: BLE001 - the edge's outcome, checked below
            outcome.append(err)

    runner = threading.Thread(target=edge, daemon=True)
    try:
        runner.start()
        runner.join(30)  # a daemon thread: a regression hangs it, not the suite
    finally:
        server.stop(0)
    assert not runner.is_alive(), "the edge kept retrying a cloud that refuses every call"
    assert len(outcome) == 1 and isinstance(outcome[0], SplitleakError), outcome
