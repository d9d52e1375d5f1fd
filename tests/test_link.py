"""The application-level link emulator: spec parsing, rate, delay, jitter, loss, backpressure."""

from __future__ import annotations

import threading
import time

import pytest

from edge.link import LinkClosed, LinkEmulator, LinkSpec
from splitleak.errors import SplitleakError


# -- LinkSpec ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("", "none"),
        ("none", "none"),
        ("  NONE ", "none"),
        ("rate=10mbit,delay=20ms,jitter=5ms,loss=1%", "rate=10mbit,delay=20ms,jitter=5ms,loss=1%"),
        ("loss=0.01, delay=20ms ,rate=10Mbps", "rate=10mbit,delay=20ms,loss=1%"),
        ("rate=1500kbit", "rate=1.5mbit"),
        ("rate=2gbps", "rate=2gbit"),
        ("rate=800", "rate=800bit"),
        ("rate=1e6bit", "rate=1mbit"),
        ("delay=1.5s,jitter=250us", "delay=1.5s,jitter=250us"),
        ("delay=0.5msec", "delay=500us"),
        ("delay=1000ms", "delay=1s"),
        ("loss=0.1%,drop=1", "loss=0.1%,drop=1"),
        ("loss=100%,drop=1", "loss=100%,drop=1"),
        ("drop=0,rto=50ms,window=8", "rto=50ms,window=8"),
        ("rto=0s", "rto=0ms"),
        ("delay=0ms,loss=0%", "none"),
        ("rate=10 mbit", "rate=10mbit"),
    ],
)
def test_parse_canonical_round_trip(text: str, canonical: str) -> None:
    spec = LinkSpec.parse(text)
    assert str(spec) == canonical
    assert LinkSpec.parse(str(spec)) == spec


def test_parse_values() -> None:
    spec = LinkSpec.parse("rate=10mbit,delay=20ms,jitter=5ms,loss=1%")
    assert spec == LinkSpec(rate=10e6, delay=0.02, jitter=0.005, loss=0.01)
    assert LinkSpec.parse("rate=1kbit").rate == 1000.0  # tc: kbit = 1000 bit/s
    assert LinkSpec.parse("rate=3KBPS").rate == 3000.0
    assert LinkSpec.parse("delay=250us").delay == pytest.approx(250e-6)
    assert LinkSpec.parse("loss=2.5%").loss == pytest.approx(0.025)
    assert LinkSpec.parse("drop=1").drop is True
    ideal = LinkSpec.parse("none")
    assert ideal.ideal and ideal == LinkSpec() and ideal.rto == 0.2 and ideal.window == 64
    assert not LinkSpec.parse("delay=1ms").ideal


@pytest.mark.parametrize(
    "text, names",
    [
        ("foo=1", "foo"),
        ("rate", "rate"),
        ("rate=", "rate="),
        ("rate=abc", "rate=abc"),
        ("rate=10mb", "mb"),
        ("rate=10 furlongs", "furlongs"),
        ("rate=-1mbit", "rate=-1mbit"),
        ("rate=0mbit", "rate=0mbit"),
        ("rate=1..5mbit", "rate=1..5mbit"),
        ("rate=nanmbit", "rate=nanmbit"),
        ("delay=5", "delay=5"),
        ("delay=5xs", "xs"),
        ("delay=-5ms", "delay=-5ms"),
        ("jitter=-1us", "jitter=-1us"),
        ("rto=-1ms", "rto=-1ms"),
        ("loss=101%", "loss=101%"),
        ("loss=1.5", "loss=1.5"),
        ("loss=-1%", "loss=-1%"),
        ("loss=1ms", "loss=1ms"),
        ("loss=100%", "loss=100%"),  # drop=0 would retransmit forever
        ("drop=2", "drop=2"),
        ("drop=yes", "drop=yes"),
        ("window=0", "window=0"),
        ("window=1.5", "window=1.5"),
        ("window=-3", "window=-3"),
        ("rate=1mbit,rate=2mbit", "rate"),
    ],
)
def test_parse_malformed(text: str, names: str) -> None:
    with pytest.raises(SplitleakError) as info:
        LinkSpec.parse(text)
    message = str(info.value)
    assert "\n" not in message
    assert names in message


def test_spec_constructor_validates() -> None:
    for bad in (dict(rate=0), dict(delay=-1.0), dict(loss=1.5), dict(window=0), dict(loss=1.0)):
        with pytest.raises(SplitleakError):
            LinkSpec(**bad)


# -- LinkEmulator ---------------------------------------------------------------------------


def _pump(link: LinkEmulator, items: list, nbytes: int) -> threading.Thread:
    """Send ``items`` from a thread, then close the link."""

    def run() -> None:
        for item in items:
            link.send(item, nbytes)
        link.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


class FakeClock:
    """The link's time, moved by the test: what arrives when does not depend on the machine's speed."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def poll(link: LinkEmulator) -> list:
    """Everything that has arrived by the link's current time, without waiting."""
    got = []
    while (item := link.receive(timeout=0)) is not None:
        got.append(item)
    return got


def test_ideal_link_is_fifo() -> None:
    link = LinkEmulator("none")
    n = 2000
    for i in range(n):
        link.send(i, 1000)
        assert link.receive(timeout=0) == i  # no delay: there at once
    assert link.sent == link.delivered == n and link.in_flight == 0


def test_rate_serialises_frames_like_a_token_bucket() -> None:
    clock = FakeClock()
    link = LinkEmulator("rate=10mbit", clock=clock)  # 12500 B = 100 kbit: 10 ms on the wire each
    for i in range(30):
        link.send(i, 12500)  # the sender does not wait: frames queue in the link
    assert poll(link) == []
    for k in range(1, 31):
        clock.now = (k + 0.5) * 0.01
        assert poll(link) == [k - 1], f"at {clock.now:.3f} s"  # frame k-1 finished at k * 10 ms
    clock.now = 1.0  # a quiet link banks no credit: the next frame still takes its 10 ms
    link.send(30, 12500)
    clock.now = 1.0095
    assert poll(link) == []
    clock.now = 1.0105
    assert poll(link) == [30]


def test_delay_adds_delay() -> None:
    clock = FakeClock()
    link = LinkEmulator("delay=100ms", clock=clock)
    clock.now = 5.0
    link.send("a", 100)
    clock.now = 5.0999
    assert poll(link) == [] and link.in_flight == 1
    clock.now = 5.1001
    assert poll(link) == ["a"] and link.in_flight == 0


def test_jitter_stays_in_bounds_and_reorders() -> None:
    clock = FakeClock()
    link = LinkEmulator("delay=50ms,jitter=20ms", seed=1, clock=clock)
    n = 60
    for i in range(n):
        link.send(i, 10)
    got = []
    for ms in range(101):  # seen within 1 ms of arriving
        clock.now = ms / 1000
        got += [(item, clock.now) for item in poll(link)]
    order = [item for item, _ in got]
    assert sorted(order) == list(range(n))
    assert order != list(range(n))  # netem-like reordering
    assert all(0.030 <= t <= 0.071 for _, t in got), got  # 50 ms +- 20 ms


def test_blocking_receive_waits_for_the_arrival() -> None:
    link = LinkEmulator("delay=50ms")
    link.send("a", 100)
    assert link.receive(timeout=30.0) == "a"  # waits for it rather than giving up early


def test_loss_with_drop_counts_and_calls_on_drop() -> None:
    lost: list[int] = []
    n = 4000
    link = LinkEmulator("loss=10%,drop=1", seed=3, on_drop=lost.append)
    thread = _pump(link, list(range(n)), 100)
    got = list(link)
    thread.join(1)
    assert link.dropped == len(lost)
    assert 0.075 * n <= len(lost) <= 0.125 * n
    assert sorted(got + lost) == list(range(n))
    assert link.delivered == len(got) and link.sent == n and link.retransmissions == 0


def test_drop_fires_at_arrival_time() -> None:
    clock = FakeClock()
    lost: list[str] = []
    link = LinkEmulator("delay=80ms,loss=100%,drop=1", on_drop=lost.append, clock=clock)
    link.send("x", 10)
    clock.now = 0.0799
    assert poll(link) == [] and lost == [] and link.in_flight == 1
    clock.now = 0.0801
    assert poll(link) == [] and lost == ["x"] and link.dropped == 1 and link.in_flight == 0
    link.close()
    assert list(link) == []


def test_loss_with_retransmission_delivers_everything() -> None:
    clock = FakeClock()
    n = 400
    lost: list[int] = []
    link = LinkEmulator("loss=20%,rto=5ms,window=512", seed=5, on_drop=lost.append, clock=clock)
    for i in range(n):
        link.send(i, 100)
    clock.now = 10.0
    got = poll(link)
    assert sorted(got) == list(range(n)) and not lost and link.dropped == 0
    # failures before success are geometric: mean p/(1-p) = 0.25 per frame
    assert 0.15 * n <= link.retransmissions <= 0.35 * n
    assert got != list(range(n))  # retransmitted frames arrive late


def test_each_retransmission_adds_one_rto() -> None:
    clock = FakeClock()
    rto = 0.04
    link = LinkEmulator("loss=50%,rto=40ms", seed=0, clock=clock)
    for i in range(20):
        link.send(i, 10)
    late: dict[int, int] = {}  # frame -> whole rtos it arrived after its send
    for k in range(40):
        clock.now = (k + 0.5) * rto
        late.update((item, k) for item in poll(link))
    assert sorted(late) == list(range(20))
    assert max(late.values()) >= 1 and sum(late.values()) == link.retransmissions


def test_same_seed_same_losses() -> None:
    def run(seed: int) -> list[int]:
        lost: list[int] = []
        link = LinkEmulator("loss=30%,drop=1", seed=seed, on_drop=lost.append)
        _pump(link, list(range(300)), 10)
        list(link)
        return sorted(lost)

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_window_backpressure_blocks_sender() -> None:
    link = LinkEmulator("window=4")
    for i in range(4):
        link.send(i, 10)
    assert link.in_flight == 4
    done = threading.Event()

    def fifth() -> None:
        link.send(4, 10)
        done.set()

    threading.Thread(target=fifth, daemon=True).start()
    assert not done.wait(0.15)  # blocked: the window is full
    assert link.receive() == 0
    assert done.wait(1.0)
    assert link.in_flight == 4


def test_close_ends_iteration_and_refuses_sends() -> None:
    link = LinkEmulator("delay=10ms")
    for i in range(3):
        link.send(i, 10)
    link.close()
    with pytest.raises(LinkClosed):
        link.send(3, 10)
    assert list(link) == [0, 1, 2]
    with pytest.raises(LinkClosed):
        link.receive(timeout=0.01)


def test_close_wakes_blocked_receiver_and_sender() -> None:
    link = LinkEmulator("window=1")
    received: list = []
    reader = threading.Thread(target=lambda: received.extend(link), daemon=True)
    reader.start()
    time.sleep(0.05)
    link.close()
    reader.join(1.0)
    assert not reader.is_alive() and received == []

    link = LinkEmulator("window=1")
    link.send("a", 1)
    errors: list = []

    def blocked_send() -> None:
        try:
            link.send("b", 1)
        except LinkClosed as exc:
            errors.append(exc)

    sender = threading.Thread(target=blocked_send, daemon=True)
    sender.start()
    time.sleep(0.05)
    link.close()
    sender.join(1.0)
    assert not sender.is_alive() and len(errors) == 1
    assert list(link) == ["a"]


def test_many_senders_thread_safe() -> None:
    link = LinkEmulator("rate=1gbit,window=8", seed=2)
    per_thread, threads = 500, 4

    def send_range(base: int) -> None:
        for i in range(per_thread):
            link.send(base + i, 100)

    senders = [threading.Thread(target=send_range, args=(k * per_thread,)) for k in range(threads)]
    for t in senders:
        t.start()
    got: list[int] = []
    reader = threading.Thread(target=lambda: got.extend(link))
    reader.start()
    for t in senders:
        t.join(5)
    link.close()
    reader.join(5)
    assert sorted(got) == list(range(per_thread * threads))
    assert link.sent == link.delivered == per_thread * threads


def test_receive_timeout_on_empty_link() -> None:
    link = LinkEmulator()
    assert link.receive(timeout=0.05) is None
    assert link.receive(timeout=0) is None
