"""Federated and split learning over a real loopback server; the tap records replayable updates."""
import threading

import grpc
import numpy as np
import pytest
import torch

from edge.session import EdgeConfig
from edge.trainer import EdgeTrainer
from splitleak import codecs, learning
from splitleak.errors import SplitleakError
from splitleak.models import build_split_model
from splitleak.recording import RecordingReader
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.video import load_png, frame_name
from splitleak.wire.channel import open_channel

TINY = dict(source="synthetic:40x40", model="lenet", size=32, progress=False)
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def train(port, **kwargs):
    config = EdgeConfig(cloud=f"127.0.0.1:{port}", **{**TINY, "split": "none", **kwargs})
    trainer = EdgeTrainer(config)
    return trainer.run(), trainer


def test_fedsgd_updates_are_replayable_from_the_recording(start_cloud, tmp_path):
    cloud = start_cloud(record=str(tmp_path / "rec"))
    summary, trainer = train(cloud.port, mode="fedsgd", frames=3, lr=0.5, label=3, truth=str(tmp_path / "truth"))
    assert summary["sent"] == summary["acked"] == 3 and trainer.round == 3
    cloud.stop(1)
    items = RecordingReader(tmp_path / "rec").items()
    updates = [it for it in items if it.kind == "update"]
    states = {int(it.meta["round"]): it.tensors for it in items if it.kind == "state"}
    assert len(updates) == 3 and sorted(states) == [0, 1, 2, 3]
    model = build_split_model("lenet", "none", size=32)
    for update in updates:
        meta = update.meta
        assert meta["mode"] == "fedsgd" and int(meta["batch_size"]) == 1
        assert meta["param_names"] == learning.parameter_names(model.tail)
        assert np.array_equal(update.tensors["labels"] if "labels" in update.tensors else [3], [3])
        model.tail.load_state_dict({k: torch.from_numpy(v) for k, v in states[int(meta["round"])].items()})
        seq = int(meta["frame"]["seq"])
        x = torch.from_numpy(load_png(tmp_path / "truth" / frame_name("edge0", seq)))[None]
        replay = learning.gradients(model.tail, x, torch.tensor([3]))
        for name, grad in replay.items():
            assert np.allclose(update.tensors[name], grad.numpy(), atol=1e-6), name
    # the edge ends with exactly the cloud's global model
    final = {k: torch.from_numpy(v) for k, v in states[3].items()}
    for name, value in learning.state(trainer.module).items():
        assert torch.equal(value, final[name]), name


def test_fedavg_round_averages_two_edges(start_cloud):
    cloud = start_cloud(round_size=2, round_timeout=30)
    results = {}

    def run(name, label):
        results[name] = train(cloud.port, mode="fedavg", frames=2, batch=2, local_steps=3, lr=0.2,
                              label=label, stream_id=name)[1]

    threads = [threading.Thread(target=run, args=(f"e{i}", i)) for i in range(2)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    a, b = learning.state(results["e0"].module), learning.state(results["e1"].module)
    assert all(torch.equal(a[k], b[k]) for k in a)
    federation = next(iter(cloud.learning.federations.values()))
    assert federation.round == 1
    initial = learning.state(build_split_model("lenet", "none", size=32).tail)
    assert any(not torch.equal(a[k], initial[k]) for k in a)


def test_split_learning_trains_head_and_tail(start_cloud):
    cloud = start_cloud()
    before = build_split_model("lenet", "conv2", size=32)
    summary, trainer = train(cloud.port, mode="split", split="conv2", frames=3, lr=0.5, label=1)
    assert summary["acked"] == 3
    changed_head = [not torch.equal(p, q) for p, q in zip(trainer.model.head.parameters(), before.head.parameters())]
    assert any(changed_head)
    federation = next(iter(cloud.learning.federations.values()))
    assert federation.round == 3
    assert any(not torch.equal(p, q) for p, q in zip(federation.module.parameters(), before.tail.parameters()))


def test_frozen_feature_extractor_sends_only_classifier_gradients(start_cloud, tmp_path):
    cloud = start_cloud(record=str(tmp_path / "rec"))
    train(cloud.port, mode="fedsgd", split="conv3", frames=2)
    cloud.stop(1)
    update = next(it for it in RecordingReader(tmp_path / "rec") if it.kind == "update")
    tail = build_split_model("lenet", "conv3", size=32).tail
    assert update.meta["param_names"] == learning.parameter_names(tail)
    assert all(not name.startswith("conv") for name in update.meta["param_names"])


def _update(**change):
    model = build_split_model("lenet", "none", size=32)
    grads = learning.gradients(model.tail, torch.rand(1, 3, 32, 32), torch.tensor([0]))
    update = pb.ModelUpdate()
    m = update.meta
    m.frame.stream_id, m.frame.seq, m.frame.model_id, m.frame.split_point = "s", 0, "lenet", "none"
    m.frame.weights, m.frame.input_size = "seed:0", 32
    m.mode, m.batch_size, m.learning_rate = change.pop("mode", "fedsgd"), change.pop("batch_size", 1), 0.1
    for name, g in grads.items():
        if name == change.get("drop"):
            continue
        named = update.tensors.add(name=name)
        value = g.numpy() if name != change.get("reshape") else g.numpy().reshape(-1)
        named.codec.CopyFrom(codecs.encode("fp32", value, named.tensor))
    if "labels" in change:
        from splitleak.wire import serde

        serde.to_proto(np.asarray(change["labels"]), update.labels)
    return update.SerializeToString()


def test_bad_updates_get_invalid_argument(start_cloud):
    cloud = start_cloud()
    name = learning.parameter_names(build_split_model("lenet", "none", size=32).tail)[0]
    bad = [b"\xff\x00junk", _update(mode="fedprox"), _update(drop=name), _update(reshape=name),
           _update(batch_size=0), _update(labels=np.array([99])), _update(labels=np.array([0.5], np.float32))]
    channel = open_channel(f"127.0.0.1:{cloud.port}")
    call = channel.stream_stream("/splitleak.v1.Learning/Train", request_serializer=lambda b: b,
                                 response_deserializer=pb.UpdateAck.FromString)
    answers = list(call(iter(bad + [_update()]), timeout=60))
    channel.close()
    assert [a.error.code for a in answers[:-1]] == [INVALID] * len(bad)
    assert answers[-1].HasField("state") and answers[-1].round == 1


def test_bad_learning_arguments():
    with pytest.raises(SplitleakError, match="unknown mode"):
        EdgeTrainer(EdgeConfig(cloud="127.0.0.1:1", mode="fedprox", split="none", **TINY))
    with pytest.raises(SplitleakError, match="label"):
        EdgeTrainer(EdgeConfig(cloud="127.0.0.1:1", mode="fedsgd", split="none", label=10, **TINY))


def test_remote_tap_records_updates_and_states(start_cloud, tmp_path):
    from adversary.tap_client import TapRecorder

    cloud = start_cloud()
    recorder = TapRecorder(f"127.0.0.1:{cloud.port}", str(tmp_path / "tap"), stream_ids=("edge0",), limit=4)
    thread = threading.Thread(target=recorder.run)
    thread.start()
    while not cloud.bus.active:
        threading.Event().wait(0.02)
    train(cloud.port, mode="fedsgd", frames=2, codec="int8")
    thread.join(30)
    items = RecordingReader(tmp_path / "tap").items()
    kinds = [it.kind for it in items]
    assert kinds == ["state", "update", "state", "update"]
    assert items[1].meta["codec"]["name"] == "int8" and all(v.dtype == np.float32 for v in items[1].tensors.values())
    assert int(items[2].meta["round"]) == 1 and items[2].meta["model_id"] == "lenet"
