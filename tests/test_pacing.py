"""--realtime (edge.pacing): frames at the source's rate after the first is answered, on a fake clock;
then a real stream whose cloud builds its model on the first frame keeps every frame under skip."""
from __future__ import annotations

import numpy as np

from edge import pacing
from edge.streamer import EdgeConfig, EdgeStreamer
from splitleak.video.base import Frame
from tests.test_congestion import TINY


class FakeTime:
    def __init__(self) -> None:
        self.now, self.sleeps = 100.0, []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1000.0 + self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def frames(n: int) -> list[Frame]:
    return [Frame(i, np.zeros((2, 2, 3), np.uint8), capture_ts=0.0) for i in range(n)]


def test_paced_waits_for_ready_then_takes_frames_at_the_rate_and_stamps_them(monkeypatch):
    clock = FakeTime()
    monkeypatch.setattr(pacing, "time", clock)
    events = []
    out = []
    for frame in pacing.paced(frames(4), 10.0, lambda: events.append(("ready", clock.now))):
        out.append((frame.index, clock.now, frame.capture_ts))
        clock.now += 0.01  # sending takes 10 ms
    assert out[0] == (0, 100.0, 0.0) and events == [("ready", 100.01)]  # the first frame goes before ready()
    starts = [t for _, t, _ in out[1:]]
    assert np.allclose(np.diff([100.01, *starts]), 0.1) and np.allclose(clock.sleeps, [0.1, 0.09, 0.09])
    assert [ts for _, _, ts in out[1:]] == [1000.0 + t for t in starts]  # stamped when taken


def test_source_fps_reads_the_container_and_defaults_to_30():
    class Clip:
        fps = 25.0
    assert pacing.source_fps(Clip()) == 25.0 and pacing.source_fps(object()) == pacing.DEFAULT_FPS


def test_realtime_skip_keeps_frames_the_cloud_startup_would_have_cost(start_cloud, tmp_path, one_thread):
    cloud = start_cloud()
    config = dict(cloud=f"127.0.0.1:{cloud.port}", frames=6, on_congestion="skip", max_pending=1, **TINY)
    live = EdgeStreamer(EdgeConfig(stream_id="live", realtime=True, **config)).run()
    cloud.stop(1)
    assert live["sent"] == live["acked"] == 6 and live["skipped"] == 0
