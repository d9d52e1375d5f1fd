"""--on-congestion block|skip|adapt (edge.congestion): the policies on a fake clock, then a real stream
over a slow emulated link to a loopback cloud; and defences on a real stream."""
from __future__ import annotations

import pytest

from edge.congestion import make_policy
from edge.streamer import EdgeConfig, EdgeStreamer
from splitleak.errors import SplitleakError
from splitleak.recording import RecordingReader

TINY = dict(source="synthetic:48x40", model="lenet", split="conv2", size=32, progress=False)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_block_admits_everything_and_skip_bounds_the_frames_in_flight() -> None:
    pending = [0]
    block = make_policy("block", "fp32", lambda: pending[0], max_pending=2)
    skip = make_policy("skip", "fp32", lambda: pending[0], max_pending=2)
    admitted = []
    for n in (0, 1, 2, 3, 1):
        pending[0] = n
        admitted.append(skip.admit())
        assert block.admit()
    assert admitted == [True, True, False, False, True] and skip.report()["skipped"] == 2


def test_adapt_steps_the_codec_down_to_what_the_measured_rate_carries() -> None:
    clock, pending = Clock(), [0]
    adapt = make_policy("adapt", "fp32", lambda: pending[0], max_pending=4, clock=clock)
    # frames produced at 10/s, 1000 fp32 bytes each: 10 kB/s wanted; answers arrive at 3 kB/s
    for seq in range(6):
        clock.now = seq * 0.1
        assert adapt.admit()
        adapt.on_sent(seq, int(1000 * {"fp32": 1, "fp16": 0.5, "int8": 0.25}[adapt.codec()]), adapt.current)
    assert adapt.current == "fp32"  # no delivery estimate yet and the queue is short
    for seq in range(3):
        clock.now = 1.0 + seq / 3  # 1000 bytes every 1/3 s
        adapt.on_answer(seq)
    assert adapt.delivery_rate() == pytest.approx(3000)
    assert adapt.codec() == "int8"  # 10 kB/s x 0.25 = 2.5 kB/s fits; fp16's 5 kB/s does not
    assert adapt.report()["switches"] == [[6, "int8"]]


def test_adapt_without_an_estimate_steps_down_when_the_queue_fills() -> None:
    pending = [5]
    adapt = make_policy("adapt", "fp16", lambda: pending[0], max_pending=4)
    assert adapt.codec() == "int8" and adapt.codec() == "int8"  # the ladder ends at int8
    with pytest.raises(SplitleakError, match="unknown --on-congestion policy 'drop'"):
        make_policy("drop", "fp32", lambda: 0)


def stream(port: int, tmp_path, name: str, **kwargs) -> dict:
    config = EdgeConfig(cloud=f"127.0.0.1:{port}", frames=8, stream_id=name, truth=str(tmp_path / name),
                        **{**TINY, **kwargs})
    return EdgeStreamer(config).run()


def test_on_a_slow_link_skip_sends_fewer_frames_and_keeps_the_truth_of_all(start_cloud, tmp_path, one_thread):
    cloud = start_cloud(record=str(tmp_path / "rec"))
    slow = "rate=40kbit"  # a lenet conv2 frame (~2.4 kB fp32) takes ~0.5 s
    block = stream(cloud.port, tmp_path, "block", link=slow, codec="int8")
    skip = stream(cloud.port, tmp_path, "skip", link=slow, on_congestion="skip", max_pending=1, codec="int8")
    cloud.stop(1)
    assert block["sent"] == block["acked"] == 8 and block["skipped"] == 0
    assert skip["skipped"] > 0 and skip["sent"] + skip["skipped"] == 8 and skip["acked"] == skip["sent"]
    assert skip["latency_ms"]["p95"] < block["latency_ms"]["p95"]
    assert len(list((tmp_path / "skip").glob("*.png"))) == 8  # skipped frames are still truth
    tapped = [int(i.meta["seq"]) for i in RecordingReader(tmp_path / "rec").items() if i.meta["stream_id"] == "skip"]
    assert len(tapped) == skip["sent"] and sorted(map(int, skip["top1"])) == tapped


def test_adapt_on_a_slow_link_sends_coarser_codecs(start_cloud, tmp_path, one_thread):
    cloud = start_cloud(record=str(tmp_path / "rec"))
    out = stream(cloud.port, tmp_path, "adapt", link="rate=40kbit", on_congestion="adapt", max_pending=2)
    cloud.stop(1)
    frames = out["congestion"]["codec_frames"]
    assert out["acked"] == 8 and frames.get("int8", 0) > 0 and sum(frames.values()) == 8
    codecs = {i.meta["codec"]["name"] for i in RecordingReader(tmp_path / "rec").items()}
    assert "int8" in codecs and "fp32" in codecs


def test_defences_on_a_real_stream(start_cloud, tmp_path, one_thread):
    cloud = start_cloud(record=str(tmp_path / "rec"))
    sub = stream(cloud.port, tmp_path, "sub", defence="subsample:keep=2")
    noisy = stream(cloud.port, tmp_path, "noisy", defence="noise:sigma=0.5")
    cloud.stop(1)
    assert sub["sent"] == 4 and sub["skipped"] == 4 and sub["defence"]["name"] == "subsample"
    seqs = sorted(int(i.meta["seq"]) for i in RecordingReader(tmp_path / "rec").items() if i.meta["stream_id"] == "sub")
    assert seqs == [0, 2, 4, 6]
    assert noisy["acked"] == 8 and noisy["defence"]["params"] == {"sigma": 0.5}


def test_congestion_policies_other_than_block_refuse_learning_modes(tmp_path) -> None:
    with pytest.raises(SplitleakError, match="applies to --mode infer"):
        from edge.trainer import EdgeTrainer

        EdgeTrainer(EdgeConfig(cloud="127.0.0.1:1", mode="fedsgd", on_congestion="skip", **TINY))
