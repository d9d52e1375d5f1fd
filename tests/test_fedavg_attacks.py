"""FedAvg updates of several local steps: the attacks simulate the edge's local training and invert it.

The simulation must be the edge's own arithmetic (edge/trainer.py `_local_delta`, called here on the
same weights and frames); the attacks match the delta over -lr; a recording made by a real loopback
cloud and edge in fedavg mode is attacked end to end through the CLI."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

import adversary.gradient  # noqa: F401  (registers the attacks)
from adversary.attacks import build_attack
from adversary.gradient import GradientCase, cosine_distance, dummy_gradients, infer_labels_idlg
from adversary.gradient.batched import BatchedGradientCase, frame_gradients
from adversary.gradient.local import LocalTraining, simulated_delta, unrolled_gradients
from edge.session import EdgeConfig
from edge.trainer import EdgeTrainer
from splitleak import learning
from splitleak.cli.main import main
from splitleak.errors import SplitleakError
from splitleak.models import build_split_model
from splitleak.recording import RecordingReader

SIZE = 16
LR = 0.01  # the edge's default
pytestmark = pytest.mark.usefixtures("one_thread")


def lenet(seed: int = 0) -> torch.nn.Module:
    return build_split_model("lenet", "none", size=SIZE, weights=f"seed:{seed}").tail.eval()


def frames(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, SIZE, SIZE, generator=gen), torch.randint(0, 10, (batch,), generator=gen)


def edge_delta(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float = LR) -> dict:
    """The edge's own FedAvg delta (EdgeTrainer._local_delta on this module, frames and labels)."""
    trainer = SimpleNamespace(module=module, names=learning.parameter_names(module),
                              config=SimpleNamespace(local_steps=steps, lr=lr))
    return EdgeTrainer._local_delta(trainer, x, y)


def fedavg_case(steps: int, batch: int = 1, lr: float = LR, seed: int = 0, weights: int = 0) -> tuple[GradientCase,
                                                                                                       torch.Tensor]:
    """A FedAvg update as the runner hands it over (delta over -lr, its local training) and its frames."""
    module = lenet(weights)
    x, y = frames(batch, seed)
    delta = edge_delta(module, x, y, steps, lr)
    case = GradientCase(module, {n: d / -lr for n, d in delta.items()}, batch, (3, SIZE, SIZE), 10, y, seed=seed,
                        local=LocalTraining(steps, lr))
    return case, x


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean().clamp_min(1e-12)))


@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 2])
def test_simulated_local_training_equals_the_edges_own(steps, batch):
    module = lenet()
    x, y = frames(batch)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    edge = edge_delta(module, x, y, steps)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items()), "the edge steps back"
    names = learning.parameter_names(module)
    ours = simulated_delta(module, x, y, names, LocalTraining(steps, LR))
    assert max(float(edge[n].abs().max()) for n in names) > 1e-3, "the delta must not be trivial"
    for n in names:
        torch.testing.assert_close(ours[n], edge[n], rtol=0, atol=1e-7)
    # what the attacks compare with the wire's delta over -lr: by autograd (dlg, idlg, ig) ...
    case = GradientCase(module, {n: d / -LR for n, d in edge.items()}, batch, (3, SIZE, SIZE), 10, y,
                        local=LocalTraining(steps, LR))
    for n, g in zip(names, dummy_gradients(case, x, y, create_graph=False)):
        torch.testing.assert_close(g, edge[n] / -LR, rtol=1e-4, atol=1e-5)
    if batch == 1:  # ... and per frame under vmap (the batched engine)
        vmapped = frame_gradients(module, x, y, names, local=case.local)
        for n in names:
            torch.testing.assert_close(vmapped[n][0], edge[n] / -LR, rtol=1e-4, atol=1e-5)


def test_one_step_is_the_gradient_fast_path():
    module = lenet()
    x, y = frames(1)
    case = GradientCase(module, learning.gradients(module, x, y), 1, (3, SIZE, SIZE), 10, y,
                        local=LocalTraining(1, LR))
    assert case.local is None and case.local_steps == 1
    plain = learning.gradients(module, x, y, create_graph=False)
    assert all(torch.equal(g, plain[n]) for n, g in zip(case.names, dummy_gradients(case, x, y, create_graph=False)))


def test_several_steps_are_not_one_gradient():
    """At the true frame the simulated objective is matched, the one-gradient reading is not."""
    case, x = fedavg_case(steps=3)
    truth = [case.gradients[n] for n in case.names]
    simulated = dummy_gradients(case, x, case.labels, create_graph=False)
    single = learning.gradients(case.module, x, case.labels)
    miss = sum(float((single[n] - t).pow(2).sum()) for n, t in zip(case.names, truth))
    hit = sum(float((s - t).pow(2).sum()) for s, t in zip(simulated, truth))
    norm2 = sum(float(t.pow(2).sum()) for t in truth)
    assert hit < 1e-8 * norm2 and miss > 0.1 * norm2  # hit: the edge's float32 rounding of w_E - w_0 only


@pytest.mark.parametrize("labels,steps,lr", [([7], 10, 10.0), ([3], 2, 0.01), ([2, 2], 2, 0.01), ([1, 6], 3, 0.1)])
def test_idlg_labels_from_a_multi_step_delta(labels, steps, lr):
    """Each step's bias gradient is softmax - onehot: their sum keeps the sign rule at batch 1 for any lr;
    at batch B each label counts once per step, which the inference divides out."""
    module = lenet()
    x, _ = frames(len(labels))
    y = torch.tensor(labels)
    local = LocalTraining(steps, lr)
    grads = unrolled_gradients(module, x, y, learning.parameter_names(module), local, create_graph=False)
    case = GradientCase(module, grads, len(labels), (3, SIZE, SIZE), 10, y, local=local)
    assert sorted(infer_labels_idlg(case).tolist()) == sorted(labels)


# a uniform-noise frame's random start is ~12 dB from it; 8 L-BFGS steps reach ~24 dB (12 steps: > 30 dB)
BAR_DB = 20.0


@pytest.mark.parametrize("name", ["idlg", "idlg-batched", "dlg", "dlg-batched"])
def test_lbfgs_attacks_recover_a_frame_from_three_local_steps(name):
    case, x = fedavg_case(steps=3)
    result = build_attack(name, iterations=8, options={"restarts": 1}).reconstruct(case)
    assert psnr(result.inputs, x) > BAR_DB
    assert int(result.labels[0]) == int(case.labels[0])


def test_ig_matches_the_simulated_update_by_cosine():
    """ig's loss is the cosine distance to the simulated local training's pseudo-gradient (here far
    from the one-gradient reading's: at batch 2 the steps reweight the frames as they fit)."""
    case, _ = fedavg_case(steps=3, batch=2, lr=0.03, seed=3)
    truth = [case.gradients[n] for n in case.names]
    result = build_attack("ig", iterations=10).reconstruct(case)
    simulated = cosine_distance(dummy_gradients(case, result.inputs, case.labels, create_graph=False), truth)
    single = learning.gradients(case.module, result.inputs, case.labels)
    one_gradient = cosine_distance([single[n] for n in case.names], truth)
    assert float(result.loss[0]) == pytest.approx(float(simulated), abs=1e-6)
    assert abs(float(one_gradient) - float(simulated)) > 1e-3


def test_batched_engine_takes_each_rounds_weights_through_its_steps():
    cases = [fedavg_case(steps=2, seed=s, weights=s)[0] for s in (0, 1)]
    truth = torch.cat([frames(1, s)[0] for s in (0, 1)])
    results = build_attack("idlg-batched", iterations=8, options={"restarts": 1}).reconstruct_many(cases)
    assert [psnr(r.inputs[0], t) > BAR_DB for r, t in zip(results, truth)] == [True, True]


def test_cases_of_different_local_training_are_not_stacked():
    one, _ = fedavg_case(steps=2)
    other, _ = fedavg_case(steps=3)
    with pytest.raises(SplitleakError, match="local training"):
        BatchedGradientCase.from_cases([one, other])


def test_rgap_refuses_a_multi_step_update_in_one_line():
    case, _ = fedavg_case(steps=2)
    with pytest.raises(SplitleakError, match="FedAvg delta of 2 local steps") as err:
        build_attack("rgap").reconstruct(case)
    assert "\n" not in str(err.value)


# ---- end to end: a real loopback cloud records an edge training in fedavg mode ---------------------

@pytest.fixture
def fedavg_recording(start_cloud, tmp_path):
    """Two frames (two rounds) of an edge in fedavg mode with 2 local steps at its default lr."""
    cloud = start_cloud(record=str(tmp_path / "rec"))
    summary = EdgeTrainer(EdgeConfig(cloud=f"127.0.0.1:{cloud.port}", source="synthetic:40x40", model="lenet",
                                     split="none", size=SIZE, frames=2, truth=str(tmp_path / "truth"),
                                     progress=False, mode="fedavg", local_steps=2)).run()
    assert summary["acked"] == 2
    cloud.stop(1)
    return tmp_path / "rec", tmp_path / "truth"


def test_cli_attacks_a_two_step_fedavg_recording(fedavg_recording, tmp_path, capsys):
    rec, truth = fedavg_recording
    updates = [it.meta for it in RecordingReader(rec).items() if it.kind == "update"]
    assert [(u["mode"], int(u["local_steps"])) for u in updates] == [("fedavg", 2)] * 2
    out = tmp_path / "out"
    code = main(["attack", "--recording", str(rec), "--attack", "idlg-batched", "--out", str(out),
                 "--truth", str(truth), "--iterations", "20", "--option", "restarts=1", "--device", "cpu"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # the bar: 30 dB at the frame's own 16 px on both frames (one round each; measured ~44 and ~55 dB)
    assert [f["psnr_native"] >= 30.0 for f in metrics["frames"]] == [True, True]
    assert [f["round"] for f in metrics["frames"]] == [0, 1] and {f["label"] for f in metrics["frames"]} == {0}
    # both success rules per frame and in the summary: the attack's relative one and the paper's absolute L2
    for frame in metrics["frames"]:
        assert frame["gradient_loss"] == frame["gradient_loss_relative"]
        assert frame["gradient_loss_l2"] == pytest.approx(frame["gradient_loss_relative"] * frame["gradient_norm"] ** 2,
                                                          rel=1e-3)
    assert {"success_rate_loss_l2", "success_rate_loss_relative"} <= set(metrics["summary"])
    # each frame's own success rule: these early rounds' rounding floors (~1e-11) leave it at 1e-8
    assert [f["loss_threshold"] for f in metrics["frames"]] == pytest.approx([1e-8, 1e-8])
    assert metrics["summary"]["raised_loss_thresholds"] == 0
    (training,) = metrics["config"]["local_training"]
    assert (training["mode"], training["local_steps"], training["updates"]) == ("fedavg", 2, 2)


@pytest.mark.parametrize("field,value,message", [
    ("local_steps", 101, "needs 1..100 local steps"),
    ("local_steps", 0, "needs 1..100 local steps"),
    ("learning_rate", 0.0, "learning rate > 0"),
])
def test_a_malformed_fedavg_update_is_one_line(fedavg_recording, tmp_path, capsys, field, value, message):
    rec, _ = fedavg_recording
    items = rec / "items.jsonl"
    lines = [json.loads(line) for line in items.read_text().splitlines()]
    for line in lines:
        if line["kind"] == "update":
            line["meta"][field] = value
    items.write_text("".join(json.dumps(line) + "\n" for line in lines))
    capsys.readouterr()
    code = main(["attack", "--recording", str(rec), "--attack", "idlg-batched", "--out", str(tmp_path / "o"),
                 "--iterations", "1", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err and "Traceback" not in err
