"""The wire's message limit is the operator's (--max-message-mb on edge and cloud): a message over it is
refused with one line naming the option, whichever end's limit it crosses; under it, updates pass."""
from __future__ import annotations

import pytest

from edge.session import EdgeConfig
from edge.trainer import EdgeTrainer
from splitleak import learning
from splitleak.cli.main import main
from splitleak.errors import SplitleakError
from splitleak.models import build_split_model
from splitleak.wire.channel import MAX_MESSAGE_BYTES, message_limit

TINY = dict(source="synthetic:40x40", model="lenet", split="none", size=32, progress=False, mode="fedsgd",
            frames=2, retry_for=5.0)
KIB = 1 << 10


@pytest.fixture(scope="module")
def state_bytes() -> int:
    """lenet's fp32 state: the size of its fedsgd gradient and of the cloud's answer, give or take metadata."""
    tail = build_split_model("lenet", "none", size=32).tail
    return sum(t.numel() * t.element_size() for t in learning.state(tail).values())


def train(port: int, **kwargs):
    return EdgeTrainer(EdgeConfig(cloud=f"127.0.0.1:{port}", **{**TINY, **kwargs})).run()


def test_the_limit_is_validated_and_defaults_to_256_mib(capsys):
    assert message_limit(256) == MAX_MESSAGE_BYTES and message_limit(1) == 1 << 20
    for bad in (0, -1, 2048, 1.5):
        with pytest.raises(SplitleakError, match="--max-message-mb"):
            message_limit(bad)
    assert main(["cloud", "--listen", "127.0.0.1:0", "--max-message-mb", "4096"]) == 2
    assert main(["edge", "--cloud", "127.0.0.1:1", "--max-message-mb", "4096"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("--max-message-mb must be an integer in [1, 2047]" in line for line in err)
    with pytest.raises(SplitleakError, match="message limit"):
        EdgeTrainer(EdgeConfig(cloud="127.0.0.1:1", max_message_bytes=0, **TINY))


def test_an_update_over_the_edges_limit_is_refused_before_it_is_sent(start_cloud, state_bytes):
    cloud = start_cloud()
    over = r"update 0 \(fedsgd\) is 0\.06\d+ MiB, over the message limit of 0\.03\d+ MiB: raise --max-message-mb"
    with pytest.raises(SplitleakError, match=over):
        train(cloud.port, max_message_bytes=state_bytes // 2)
    assert cloud.learning.updates == 0


def test_an_update_over_the_clouds_limit_ends_the_edge_with_the_option_named(start_cloud, state_bytes):
    cloud = start_cloud(max_message_bytes=state_bytes // 2)
    with pytest.raises(SplitleakError, match="over a message limit .*raise --max-message-mb") as err:
        train(cloud.port)
    assert "\n" not in str(err.value) and cloud.learning.updates == 0


def test_an_answer_over_the_clouds_limit_is_refused_and_the_update_not_applied(start_cloud, state_bytes):
    cloud = start_cloud(max_message_bytes=state_bytes + 32 * KIB)  # the update fits, the answer's estimate not
    with pytest.raises(SplitleakError, match=r"none of the 2 updates .*the cloud's answer \(the new global state\) "
                                             r"is 0\.1\d+ MiB, over the message limit .*--max-message-mb"):
        train(cloud.port)
    assert cloud.learning.updates == 0 and all(f.round == 0 for f in cloud.learning.federations.values())


def test_under_a_raised_limit_every_update_is_answered(start_cloud, state_bytes):
    limit = state_bytes + 128 * KIB
    cloud = start_cloud(max_message_bytes=limit)
    summary = train(cloud.port, max_message_bytes=limit)
    assert summary["sent"] == summary["acked"] == 2 and cloud.learning.updates == 2


def test_a_tap_item_over_the_taps_limit_is_one_line_naming_the_option(start_cloud, tmp_path, capsys):
    """The tap's receive limit is the adversary's (--max-message-mb on tap / attack-live): a vit_b_16 update is
    over the default; an item over it ends the tap with one line, not a gRPC dump."""
    import threading

    from adversary.tap_client import TapRecorder

    assert main(["tap", "--cloud", "127.0.0.1:1", "--record", str(tmp_path / "t"), "--max-message-mb", "4096"]) == 2
    assert main(["attack-live", "--cloud", "127.0.0.1:1", "--attack", "dlg", "--out", str(tmp_path / "a"),
                 "--max-message-mb", "4096"]) == 2
    assert "--max-message-mb" in capsys.readouterr().err
    cloud = start_cloud()
    recorder = TapRecorder(f"127.0.0.1:{cloud.port}", str(tmp_path / "tap"), max_message_bytes=8 * KIB)
    failure: list[BaseException] = []
    thread = threading.Thread(target=lambda: _run_catching(recorder, failure), daemon=True)
    thread.start()
    assert recorder.subscribed.wait(10)
    train(cloud.port, frames=1)  # lenet's fedsgd update: ~60 KiB
    thread.join(20)
    assert not thread.is_alive() and len(failure) == 1
    assert isinstance(failure[0], SplitleakError) and "raise --max-message-mb" in str(failure[0])


def _run_catching(recorder, failure: list) -> None:
    try:
        recorder.run()
    except BaseException as err:  # noqa: BLE001  (checked by the test)
        failure.append(err)
