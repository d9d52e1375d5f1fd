"""The stream benchmark's timing procedure: local and split warmed up, same threads, build outside the clock.

No wall-clock figure is asserted: fake clocks and fake passes check what is timed and how.
"""
import torch

from benchmarks import stream


def test_local_and_split_run_with_the_same_threads_after_warmup():
    seen = []

    def pass_of(kind, fps):
        def run():
            seen.append((kind, torch.get_num_threads()))
            return fps.pop(0)
        return run

    before = torch.get_num_threads()
    local, split = stream.local_vs_split(pass_of("local", [1.0, 5.0, 7.0, 6.0]), pass_of("split", [2.0, 9.0, 3.0, 4.0]),
                                         warmup=1, repeats=3)
    assert {threads for _, threads in seen} == {stream.SERVICE_THREADS}
    assert torch.get_num_threads() == before  # restored afterwards
    assert [kind for kind, _ in seen] == ["local", "split"] * 4  # interleaved, warm-up first
    assert (local, split) == (7.0, 9.0)  # best of the timed passes; the warm-up's figures are discarded


class CountingClock:
    """A clock that reads how many model calls happened so far: the timed region is visible in its readings."""

    def __init__(self):
        self.calls = 0
        self.readings = []

    def __call__(self):
        self.readings.append(self.calls)
        return float(self.calls)


class FakeModel:
    def __init__(self, clock):
        self.clock = clock

    def head(self, x):
        assert x.shape[-2:] == (16, 16)
        return x

    def tail(self, z):
        self.clock.calls += 1
        return z


def test_local_pass_times_exactly_the_frames(monkeypatch):
    monkeypatch.setattr(stream, "SOURCE", "synthetic:32x32")
    clock = CountingClock()
    fps = stream.local_pass(FakeModel(clock), 16, 5, clock=clock)
    assert clock.readings == [0, 5]  # started before the first frame, stopped after the fifth
    assert fps == 1.0  # 5 frames over 5 ticks of the fake clock


def test_split_run_uses_the_service_threads(monkeypatch):
    seen = {}

    class FakeStreamer:
        def __init__(self, config):
            seen["config"] = config

        def run(self):
            seen["threads"] = torch.get_num_threads()
            return {"fps": 1.0}

    monkeypatch.setattr(stream, "EdgeStreamer", FakeStreamer)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        stream.split_run("127.0.0.1:1", "layer1", 64, 3)
    finally:
        torch.set_num_threads(before)
    assert seen["threads"] == stream.SERVICE_THREADS
    assert seen["config"].frames == 3 and seen["config"].source == stream.SOURCE
