"""A hostile peer, a failing disk, a careless operator: regression tests on a real loopback cloud."""
import json
import math
import threading
import time

import grpc
import numpy as np
import pytest
import torch

from cloud.federation import Federation
from cloud.server import CloudConfig, CloudServer
from cloud.tap import TapBus, TapEvent
from edge.streamer import EdgeConfig, EdgeStreamer
from splitleak import codecs
from splitleak.errors import SplitleakError
from splitleak.models import build_split_model
from splitleak.recording import RecordingReader, RecordingWriter
from splitleak.v1 import splitleak_pb2 as pb
from wire_helpers import INFER, INVALID, SUBSCRIBE, TRAIN, UNAVAILABLE, IdleCalls, call, frame, update

TINY = dict(source="synthetic:48x40", model="lenet", split="conv2", size=32, progress=False)


def stream(port, frames=6, **kwargs):
    return EdgeStreamer(EdgeConfig(cloud=f"127.0.0.1:{port}", frames=frames, **{**TINY, **kwargs})).run()


def wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.02)


# ---- 1. credentials before the handler, idle calls bounded, an edge that delivered nothing fails ----

def test_idle_calls_without_a_token_do_not_lock_out_an_edge(start_cloud):
    cloud = start_cloud(token="secret")
    idle = IdleCalls(cloud.port, 70)
    try:
        summary = stream(cloud.port, frames=8, token="secret", retry_for=10)
    finally:
        codes = idle.close()
    assert summary["sent"] == summary["acked"] == 8 and summary["reconnects"] == 0
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 70


@pytest.mark.slow
def test_idle_calls_with_a_token_are_cancelled_after_the_first_message_deadline(start_cloud):
    cloud = start_cloud(token="secret", first_message_timeout=1.0)
    idle = IdleCalls(cloud.port, 70, token="secret")
    wait_for(lambda: len(idle.codes) >= 6)  # 64 slots taken: the calls beyond them are refused at once
    result = {}
    edge = threading.Thread(target=lambda: result.update(stream(cloud.port, frames=8, token="secret", retry_for=20)))
    edge.start()
    try:
        wait_for(lambda: len(idle.codes) == 70)  # never released: each ends by the deadline (or was refused)
    finally:
        codes = idle.close()
        edge.join(30)
    assert result["sent"] == result["acked"] == 8
    assert set(codes) == {grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert codes.count(grpc.StatusCode.CANCELLED) >= 64


def test_an_edge_opens_its_call_only_once_it_has_a_frame_to_send(start_cloud):
    cloud = start_cloud(first_message_timeout=0.5)
    summary = stream(cloud.port, frames=3, link="delay=1s")  # the first frame arrives after the deadline
    assert summary["acked"] == 3 and summary["reconnects"] == 0


def test_an_edge_that_delivered_nothing_fails_with_a_reason(start_cloud):
    cloud = start_cloud(allow_models=("cnn6",))
    with pytest.raises(SplitleakError, match="acknowledged none of the 3 frames.*not served here"):
        stream(cloud.port, frames=3)


# ---- 2. validated after decoding; the global model never goes non-finite ----

def _int8(message_codec, scale):
    message_codec.name, message_codec.scale, message_codec.zero_point = "int8", scale, 0


def test_overflowing_frames_are_refused_and_never_recorded(start_cloud, tmp_path):
    cloud = start_cloud(record=str(tmp_path / "rec"))
    huge = frame(1, value=3e38)
    int8 = frame(2, codec="int8")
    _int8(int8.codec, 1e300)
    int8_edge = frame(3, codec="int8")
    _int8(int8_edge.codec, 1e38)  # finite scale, but 127 steps of it overflow float32
    answers = call(cloud.port, INFER, [frame(0), huge, int8, int8_edge, frame(4)])
    assert [a.error.code for a in answers[1:4]] == [INVALID] * 3
    assert answers[0].HasField("prediction") and answers[4].HasField("prediction")
    cloud.stop(1)
    items = RecordingReader(tmp_path / "rec").items()
    assert [int(it.meta["seq"]) for it in items] == [0, 4]
    assert all(np.isfinite(it.tensors["features"]).all() for it in items)


def test_a_frame_that_drives_the_model_to_non_finite_outputs_is_refused(start_cloud, tmp_path):
    from splitleak.models import file_tag

    model = build_split_model("lenet", "conv2", size=32)
    path = tmp_path / "huge.pt"
    huge = {k: v * (3e38 / v.abs().max()) for k, v in model.state_dict().items()}  # finite, near float32's max
    torch.save(huge, path)
    cloud = start_cloud(record=str(tmp_path / "rec"), weights=(str(path),))
    answer = call(cloud.port, INFER, [frame(0, weights=file_tag(str(path)))])[0]
    assert answer.error.code == INVALID and "non-finite" in answer.error.message
    cloud.stop(1)
    assert RecordingReader(tmp_path / "rec").items() == []


def test_a_poisoned_update_is_refused_and_the_global_state_stays_good(start_cloud):
    cloud = start_cloud()
    poisoned = update(0)
    for named in poisoned.tensors:
        _int8(named.codec, 1e300)
        named.tensor.dtype, named.tensor.data = "int8", bytes(len(named.tensor.data) // 4)
    overflow = update(1, scale=1e30)  # finite fp32 values, far beyond any gradient
    honest = update(2)
    answers = call(cloud.port, TRAIN, [poisoned, overflow, honest])
    assert [a.error.code for a in answers[:2]] == [INVALID, INVALID]
    assert answers[2].HasField("state") and answers[2].round == 1
    state = {t.name: np.frombuffer(t.tensor.data, np.float32) for t in answers[2].state.tensors}
    assert all(np.isfinite(v).all() for v in state.values())
    # the next honest edge trains on from there
    assert call(cloud.port, TRAIN, [update(3, stream="t")])[0].round == 2


def test_federation_refuses_an_update_that_would_make_the_model_non_finite():
    model = build_split_model("lenet", "none", size=32)
    federation = Federation(model, round_size=1)
    before = federation.state()
    huge = {name: torch.full(shape, -3e38) for name, shape in federation.shapes.items()}
    with pytest.raises(SplitleakError, match="non-finite"):
        federation.submit("fedsgd", huge, lr=100.0)
    after = federation.state()
    assert federation.round == 0 and all(torch.equal(before[k], after[k]) for k in before)


# ---- 3. what a peer may ask the cloud to build ----

def test_model_requests_are_bounded_by_the_operators_limits(start_cloud):
    cloud = start_cloud(allow_models=("lenet",), max_classes=100, max_input_size=64)
    bad = [frame(1, num_classes=1_000_000), frame(2, weights="seed:" + "9" * 30),
           frame(3, weights="seed:99999999999999999999"), frame(4, input_size=128),
           frame(5, model_id="resnet18", split_point="layer1"), frame(6, weights="tv:IMAGENET1K_V1"),
           frame(7, weights="file:0123456789abcdef"), frame(8, num_classes=-5)]
    answers = call(cloud.port, INFER, bad + [frame(9)])
    assert [a.error.code for a in answers[:-1]] == [INVALID] * len(bad)
    assert answers[-1].HasField("prediction")
    assert "[1, 100]" in answers[0].error.message and "torchvision" in answers[5].error.message
    assert len(cloud.inference.tails._tails._futures) == 1  # only the good frame's model was ever built


def test_torchvision_weights_are_not_downloaded_at_request_time(start_cloud):
    from cloud.limits import _torchvision_weight

    try:
        _torchvision_weight("resnet18", "IMAGENET1K_V1", allow_downloads=False)
        pytest.skip("resnet18's torchvision weights are cached on this machine")
    except SplitleakError:
        pass
    cloud = start_cloud()
    message = frame(0, model_id="resnet18", split_point="layer4", input_size=32, weights="tv:IMAGENET1K_V1")
    answer = call(cloud.port, INFER, [message])[0]
    assert answer.error.code == INVALID and "--allow-downloads" in answer.error.message


def test_a_slow_build_blocks_only_its_own_key(start_cloud, monkeypatch):
    from cloud.tails import TailCache

    cloud = start_cloud(build_timeout=0.5)
    assert call(cloud.port, INFER, [frame(0)])[0].HasField("prediction")  # seed:0 is built
    release, real = threading.Event(), TailCache.split_model

    def slow(self, key):
        if key.weights == "seed:7":
            release.wait(30)
        return real(self, key)

    monkeypatch.setattr(TailCache, "split_model", slow)
    answers = {}
    slow_call = threading.Thread(target=lambda: answers.update(slow=call(cloud.port, INFER, [frame(1, weights="seed:7")])))
    slow_call.start()
    try:
        fast = call(cloud.port, INFER, [frame(2)], timeout=10)  # the built model answers meanwhile
    finally:
        slow_call.join(10)
        release.set()
    assert fast[0].HasField("prediction")
    assert answers["slow"][0].error.code == UNAVAILABLE and "longer than" in answers["slow"][0].error.message
    wait_for(lambda: call(cloud.port, INFER, [frame(3, weights="seed:7")])[0].HasField("prediction"))


def test_num_classes_zero_is_the_models_default_for_federation(start_cloud):
    cloud = start_cloud()
    answers = call(cloud.port, TRAIN, [update(0, num_classes=0), update(1, num_classes=10)])
    assert [a.round for a in answers] == [1, 2]
    assert len(cloud.learning.federations) == 1


# ---- 4. a recorder that fails is loud, bounded, and counted ----

def test_a_failing_recorder_is_reported_bounded_and_counted(tmp_path, monkeypatch):
    from adversary.tap_client import TapRecorder

    real, written = RecordingWriter.append, []

    def failing(self, kind, meta, tensors):
        if self.folder.name == "rec":
            if len(written) >= 5:
                raise RuntimeError("disk controller on fire")  # not an OSError
            written.append(kind)
        return real(self, kind, meta, tensors)

    monkeypatch.setattr(RecordingWriter, "append", failing)
    cloud = CloudServer(CloudConfig(record=str(tmp_path / "rec")))
    tap = TapRecorder(f"127.0.0.1:{cloud.port}", str(tmp_path / "tap"))
    tap_thread = threading.Thread(target=tap.run)
    tap_thread.start()
    try:
        wait_for(lambda: len(cloud.bus._subscribers) == 2)
        summary = stream(cloud.port, frames=20)
        wait_for(lambda: tap.cloud_error is not None)
        wait_for(lambda: cloud.recorder.sub.queued_bytes == 0)  # drained after the failure, not piling up
    finally:
        tap.stop()
        tap_thread.join(10)
        with pytest.raises(SplitleakError, match="disk controller on fire"):
            cloud.stop(1)
    assert summary["acked"] >= 5 and summary["acked"] + summary["rejected"] == 20
    assert summary["rejected"] > 0 and "disk controller on fire" in summary["errors"][0]
    assert "disk controller on fire" in tap.cloud_error
    counts = json.loads((tmp_path / "rec" / "summary.json").read_text())
    assert counts["items"] == 5 and counts["refused"] == summary["rejected"]
    assert counts["items"] + counts["dropped"] + counts["not_written"] == summary["acked"]


def test_a_tap_queue_is_bounded_in_bytes():
    bus = TapBus()
    sub = bus.subscribe(maxsize=100, max_bytes=1000)
    for i in range(10):
        bus.publish(TapEvent("frame", "s", i, None, {"features": np.zeros(100, np.float32)}))
    assert sub.queued_bytes <= 1000 and sub.dropped == 8
    assert [sub.get(0).meta for _ in range(2)] == [8, 9]


# ---- 5. one sample per frame: batches are refused, recordings stay attackable ----

def test_batched_frames_are_refused_at_the_door(start_cloud, tmp_path):
    cloud = start_cloud(record=str(tmp_path / "rec"))
    answers = call(cloud.port, INFER, [frame(0, shape=(2, 12, 8, 8)), frame(1)])
    assert answers[0].error.code == INVALID and "one sample" in answers[0].error.message
    cloud.stop(1)
    items = RecordingReader(tmp_path / "rec").items()
    assert [it.tensors["features"].shape[0] for it in items] == [1]


# ---- 6. identifiers ----

@pytest.mark.parametrize("stream_id", ["a\x00b", "a\nb", "../etc", "x" * 10_000, "", "é"])
def test_bad_stream_ids_are_refused(start_cloud, stream_id):
    cloud = start_cloud()
    answer = call(cloud.port, INFER, [frame(0, stream=stream_id)])[0]
    assert answer.error.code == INVALID and "stream id" in answer.error.message
    assert call(cloud.port, TRAIN, [update(0, stream=stream_id)])[0].error.code == INVALID


def test_seq_and_capture_time_are_checked_per_stream(start_cloud, tmp_path):
    cloud = start_cloud(record=str(tmp_path / "rec"))
    nan_ts = frame(9)
    nan_ts.meta.capture_ts = math.nan
    messages = [frame(2**64 - 1), nan_ts, frame(5), frame(5), frame(3), frame(3000), frame(5), frame(10, stream="t"),
                frame(1)]
    answers = call(cloud.port, INFER, messages)
    ok = [a.HasField("prediction") for a in answers]
    # huge seq, NaN time and a duplicate refused; 3 is a reorder within the window; 1 is too far behind 3000
    assert ok == [False, False, True, False, True, True, False, True, False]
    assert all(a.error.code == INVALID for a, good in zip(answers, ok) if not good)
    cloud.stop(1)
    recorded = [(it.meta["stream_id"], int(it.meta["seq"])) for it in RecordingReader(tmp_path / "rec").items()]
    assert recorded == [("s", 5), ("s", 3), ("s", 3000), ("t", 10)]


def test_an_unparseable_frame_is_answered_with_the_ids_it_carried(start_cloud):
    cloud = start_cloud()
    whole = frame(42, stream="cam-7").SerializeToString()
    cut = whole[: len(whole) - 100]  # the tensor bytes are cut short; the meta is intact
    answers = call(cloud.port, INFER, [cut, b"\xff\xfe"])
    assert answers[0].error.code == INVALID and (answers[0].stream_id, answers[0].seq) == ("cam-7", 42)
    assert answers[1].error.code == INVALID and answers[1].stream_id == ""
    cut_update = update(7, stream="cam-8").SerializeToString()[:-50]
    ack = call(cloud.port, TRAIN, [cut_update])[0]
    assert ack.error.code == INVALID and (ack.stream_id, ack.seq) == ("cam-8", 7)


def test_tap_requests_with_bad_stream_ids_are_refused(start_cloud):
    cloud = start_cloud()
    for request in (pb.TapRequest(stream_ids=["../x"]), pb.TapRequest(stream_ids=[f"s{i}" for i in range(65)])):
        with pytest.raises(grpc.RpcError) as info:
            call(cloud.port, SUBSCRIBE, [request], timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
