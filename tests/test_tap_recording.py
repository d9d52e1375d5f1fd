"""The tap bus drops the oldest for a slow subscriber; recordings survive a crash."""
import json
import threading

import numpy as np
import pytest

from cloud.tap import TapBus, TapEvent
from splitleak.errors import SplitleakError
from splitleak.recording import RecordingReader, RecordingWriter


def event(i, stream="s"):
    return TapEvent("frame", stream, meta=i, codec=None, tensors={"features": np.full((1, 2), i, np.float32)})


def test_slow_subscriber_loses_oldest_and_counts():
    bus = TapBus()
    slow = bus.subscribe(maxsize=3)
    fast = bus.subscribe(maxsize=100)
    for i in range(10):
        bus.publish(event(i))
    assert slow.dropped == 7 and fast.dropped == 0
    assert [slow.get(0).meta for _ in range(3)] == [7, 8, 9]
    assert slow.get(0.01) is None
    assert [fast.get(0).meta for _ in range(10)] == list(range(10))


def test_publish_never_blocks_on_a_stalled_subscriber():
    bus = TapBus()
    stalled = bus.subscribe(maxsize=1)
    done = threading.Event()
    threading.Thread(target=lambda: ([bus.publish(event(i)) for i in range(10000)], done.set())).start()
    assert done.wait(5.0)
    assert stalled.dropped == 9999


def test_stream_filter_and_unsubscribe():
    bus = TapBus()
    only_a = bus.subscribe(maxsize=10, stream_ids=frozenset({"a"}))
    bus.publish(event(1, "a"))
    bus.publish(event(2, "b"))
    assert only_a.get(0).meta == 1 and only_a.get(0) is None
    bus.unsubscribe(only_a)
    assert not bus.active and only_a.closed


def write_recording(folder, n):
    with RecordingWriter(folder, {"why": "test"}) as writer:
        for i in range(n):
            writer.append("frame", {"seq": i}, {"features": np.full((1, 3), i, np.float32)})


def test_recording_round_trip(tmp_path):
    write_recording(tmp_path / "r", 5)
    reader = RecordingReader(tmp_path / "r")
    items = reader.items()
    assert [it.meta["seq"] for it in items] == list(range(5))
    assert np.array_equal(items[3].tensors["features"], np.full((1, 3), 3, np.float32))
    assert reader.broken is None and reader.summary["items"] == 5
    assert reader.header["config"] == {"why": "test"}


def test_torn_manifest_reads_up_to_the_break(tmp_path):
    write_recording(tmp_path / "r", 5)
    manifest = tmp_path / "r" / "items.jsonl"
    data = manifest.read_bytes()
    manifest.write_bytes(data[: len(data) - 10])  # a crash mid-line
    reader = RecordingReader(tmp_path / "r")
    assert [it.meta["seq"] for it in reader] == [0, 1, 2, 3]
    assert "torn" in reader.broken


def test_missing_or_corrupt_tensor_file_stops_there(tmp_path):
    write_recording(tmp_path / "r", 5)
    (tmp_path / "r" / "tensors" / "00000002.safetensors").write_bytes(b"garbage")
    reader = RecordingReader(tmp_path / "r")
    assert len(reader.items()) == 2 and reader.broken.startswith("line 3")


def test_recording_without_close_is_readable(tmp_path):
    writer = RecordingWriter(tmp_path / "r", {})
    writer.append("frame", {"seq": 0}, {"features": np.zeros((1, 2), np.float32)})
    reader = RecordingReader(tmp_path / "r")  # the writer was never closed: as after a crash
    assert len(reader.items()) == 1 and reader.summary is None


def test_bad_recordings(tmp_path):
    with pytest.raises(SplitleakError, match="not a recording"):
        RecordingReader(tmp_path)
    (tmp_path / "recording.json").write_text("{not json")
    with pytest.raises(SplitleakError, match="corrupt"):
        RecordingReader(tmp_path)
    (tmp_path / "recording.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(SplitleakError, match="unknown recording format"):
        RecordingReader(tmp_path)
    write_recording(tmp_path / "r", 1)
    with pytest.raises(SplitleakError, match="already holds"):
        RecordingWriter(tmp_path / "r")


def test_remote_tap_says_when_it_is_subscribed(start_cloud, tmp_path):
    """`subscribed` is set only once the cloud holds the subscription, so nothing published after is missed."""
    from adversary.tap_client import TapRecorder

    cloud = start_cloud()
    recorder = TapRecorder(f"127.0.0.1:{cloud.port}", str(tmp_path / "tap"), queue_size=8)
    thread = threading.Thread(target=recorder.run, daemon=True)
    thread.start()
    try:
        assert recorder.subscribed.wait(10)
        assert cloud.bus.active  # no sleep, no polling: the headers came after the subscription
    finally:
        recorder.stop()
        thread.join(10)
    assert not thread.is_alive()
