"""Gradient inversion: dlg, idlg, ig, fvi on tiny models and real frames, and the recording runner.

Speed: these run few L-BFGS / Adam iterations on a shared 2-core CPU, so the image attacks are
held to a lower bar than the papers' (a clear gain over the random start, not >= 30 dB: DLG on
LeNet 32 px needs ~1,000-1,500 evaluations for 30 dB, ~15 s a frame); the full-quality figures
come from benchmarks.gradient.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from torch import nn

from adversary import get_attack
from adversary.attack import Attack
from adversary.gradient import GradientCase, cosine_distance, dummy_gradients, gradient_distance_l2, infer_labels_idlg
from adversary.gradient.dlg import dummy_start
from adversary.gradient.features import feature_scores
from adversary.gradient.ig import milestones
from adversary.runner.gradient_truth import features_name
from adversary.runner.run import run_attack as run_gradient_attack
from adversary.metrics import psnr
from adversary.runner.run import run_attack
from splitleak import learning
from splitleak.errors import SplitleakError
from splitleak.models import build_split_model
from splitleak.recording import RecordingWriter
from splitleak.video import frame_name, load_png, open_source, save_png, to_model_input

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    """Two real frames of the bikes clip, (2, 3, 32, 32) in [0, 1], rounded as their truth PNGs are."""
    with open_source("sample:bikes", frames=2) as source:
        x = np.stack([to_model_input(f.image, SIZE) for f in source])
    return torch.from_numpy(np.rint(x * 255) / 255).float()


@pytest.fixture(scope="module")
def lenet():
    return build_split_model("lenet", "none", size=SIZE)


def image_case(model, x: torch.Tensor, y: torch.Tensor, labels_on_wire: bool = True) -> GradientCase:
    grads = learning.gradients(model.tail, x, y)
    return GradientCase(model.tail, grads, len(x), tuple(x.shape[1:]), model.num_classes,
                        y if labels_on_wire else None, "image")


def test_registered_with_family_and_access():
    for name in ("dlg", "idlg", "ig", "fvi"):
        cls = get_attack(name)
        assert cls.family == "gradient" and "gradients" in cls.access and issubclass(cls, Attack)


def test_distances_are_zero_on_equal_gradients(lenet, frames):
    g = list(learning.gradients(lenet.tail, frames[:1], torch.tensor([1])).values())
    assert float(gradient_distance_l2(g, g)) == 0.0
    assert abs(float(cosine_distance(g, g))) < 1e-6
    assert float(cosine_distance(g, [-t for t in g])) == pytest.approx(2.0, abs=1e-5)


def test_infer_labels_idlg_exact(lenet, frames):
    for k, x in enumerate(frames):
        for label in (k, 7 - k):
            case = image_case(lenet, x[None], torch.tensor([label]), labels_on_wire=False)
            assert infer_labels_idlg(case).tolist() == [label]
    # no bias on the wire: the argmin row sum of the last weight gradient
    names = [n for n in learning.parameter_names(lenet.tail) if n != "classifier.1.bias"]
    grads = learning.gradients(lenet.tail, frames[:1], torch.tensor([6]), names=names)
    case = GradientCase(lenet.tail, grads, 1, (3, SIZE, SIZE), 10)
    assert infer_labels_idlg(case).tolist() == [6]
    # batch > 1 (greedy over the bias gradient), order-free
    case = image_case(lenet, frames, torch.tensor([8, 2]), labels_on_wire=False)
    assert sorted(infer_labels_idlg(case).tolist()) == [2, 8]


def start_psnr(case: GradientCase, x: torch.Tensor) -> float:
    """PSNR of the attack's own seeded random start: the bar a reconstruction must clear."""
    x0, _ = dummy_start(case, case.seed, "uniform", False)
    return psnr(x0[0].numpy(), x[0].numpy())


def test_dlg_recovers_frame_and_label(lenet, frames):
    x, y = frames[:1], torch.tensor([3])
    case = image_case(lenet, x, y)
    x0, y0 = dummy_start(case, case.seed, "uniform", True)
    true = list(case.gradients.values())
    start = float(gradient_distance_l2(dummy_gradients(case, x0, torch.softmax(y0, -1), create_graph=False), true))
    result = get_attack("dlg")(iterations=6, restarts=1, init="uniform").reconstruct(case)
    assert result.inputs.shape == (1, 3, SIZE, SIZE) and 0 <= float(result.inputs.min()) <= float(result.inputs.max()) <= 1
    assert result.labels.tolist() == [3] and result.extra["label_accuracy"] == 1.0
    assert float(result.loss[0]) < start / 100
    assert psnr(result.inputs[0].numpy(), x[0].numpy()) > start_psnr(case, x) + 3  # ~8 -> ~15 dB


def test_idlg_label_and_psnr(lenet, frames):
    x, y = frames[:1], torch.tensor([5])
    case = image_case(lenet, x, y)
    result = get_attack("idlg")(iterations=6, restarts=1, init="uniform").reconstruct(case)
    assert result.labels.tolist() == [5] and result.extra["label_accuracy"] == 1.0
    assert psnr(result.inputs[0].numpy(), x[0].numpy()) > start_psnr(case, x) + 3
    assert result.success.dtype == torch.bool and result.loss.shape == (1,)


def test_dlg_stops_at_first_success(lenet, frames):
    case = image_case(lenet, frames[:1], torch.tensor([2]))
    result = get_attack("dlg")(iterations=1, restarts=3, threshold=1e9).reconstruct(case)
    assert result.extra["restarts_used"] == 1 and bool(result.success[0])


@pytest.mark.slow
def test_ig_resnet18_batch2_improves_cosine(frames):
    model = build_split_model("resnet18", "none", size=SIZE, num_classes=10)
    case = image_case(model, frames, torch.tensor([1, 4]), labels_on_wire=False)
    result = get_attack("ig")(iterations=6, lr=0.1).reconstruct(case)
    assert result.inputs.shape == (2, 3, SIZE, SIZE)
    assert sorted(result.labels.tolist()) == [1, 4]
    assert float(result.loss[0]) < result.extra["initial_loss"]


class FC(nn.Module):
    """A simple classifier over a (10, 64) feature matrix (the video paper's max-pooled features)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(640, 10)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(z.flatten(1))


@pytest.mark.parametrize("optimizer,iterations", [("lbfgs", 50), ("adam", 400)])
def test_fvi_recovers_feature_vector(optimizer, iterations):
    torch.manual_seed(0)
    clf = FC().eval()
    z = torch.relu(torch.randn(1, 10, 64))
    case = GradientCase(clf, learning.gradients(clf, z, torch.tensor([3])), 1, (10, 64), 10, None, "features")
    result = get_attack("fvi")(iterations=iterations, optimizer=optimizer, lr=0.03 if optimizer == "adam" else None,
                               check_every=100).reconstruct(case)
    _, cos = feature_scores(result.inputs, z)
    assert float(cos[0]) > 0.9 and result.labels.tolist() == [3]


def test_fvi_stagnation_kicks_halve_lr():
    clf = FC().eval()
    z = torch.relu(torch.randn(1, 10, 64))
    case = GradientCase(clf, learning.gradients(clf, z, torch.tensor([1])), 1, (10, 64), 10, None, "features")
    result = get_attack("fvi")(iterations=40, lr=1e-6, check_every=10).reconstruct(case)
    assert result.extra["stagnation_kicks"] >= 2


# ---- configs: checked options, presets, no run state ------------------------------------------

@pytest.mark.parametrize("name", ["dlg", "idlg", "ig", "fvi"])
def test_unknown_option_or_wrong_type_is_a_one_line_error(name):
    cls = get_attack(name)
    with pytest.raises(SplitleakError, match="unknown option 'nope'") as err:
        cls(nope=1)
    assert "\n" not in str(err.value)
    with pytest.raises(SplitleakError, match=r"option iterations='many': expected an integer") as err:
        cls(iterations="many")
    assert "\n" not in str(err.value)
    with pytest.raises(SplitleakError, match="restarts must be >= 1"):
        cls(restarts=0)


def test_options_by_path_leaf_or_text_and_frozen_configs():
    dlg = get_attack("dlg")
    a = dlg(iterations=300, restarts=1, lr=0.5, line_search=None, patience=0)
    b = dlg.from_options(None, {"lbfgs.lr": "0.5", "restarts": "1", "lbfgs_line_search": "none", "stop_patience": "0"})
    assert a.config == b.config and a.config.lbfgs.lr == 0.5 and a.config.lbfgs.line_search is None
    with pytest.raises(SplitleakError, match="lbfgs.line_search='wolfe': expected strong_wolfe or none"):
        dlg(line_search="wolfe")
    with pytest.raises(SplitleakError, match="init='gauss'"):
        dlg(init="gauss")
    with pytest.raises(SplitleakError, match="optimizer='sgd': expected adam | lbfgs"):
        get_attack("fvi")(optimizer="sgd")
    assert get_attack("fvi")(check_every=7).config.stagnation.check_every == 7
    with pytest.raises(AttributeError):
        a.config.restarts = 3  # frozen: an attack never changes its config


def test_paper_presets_are_the_papers_loops():
    dlg = get_attack("dlg").from_options("paper").config  # DLG reference code + the video-leakage protocol
    assert (dlg.iterations, dlg.restarts, dlg.init) == (300, 10, "normal")
    assert (dlg.lbfgs.lr, dlg.lbfgs.max_iter, dlg.lbfgs.history_size, dlg.lbfgs.line_search) == (1.0, 20, 100, None)
    assert (dlg.stop.threshold, dlg.stop.stop_loss, dlg.stop.patience) == (1e-5, 0.0, None)
    assert get_attack("idlg").from_options("paper").config == dlg
    best = get_attack("dlg")().config  # best = the defaults, which differ only in line search and patience
    assert best.lbfgs.line_search == "strong_wolfe" and best.stop.patience == 50
    ig = get_attack("ig").from_options("paper").config  # Geiping et al.
    assert (ig.iterations, ig.restarts, ig.lr, ig.signed, ig.boxed) == (24000, 1, 0.1, True, True)
    assert milestones(ig.iterations) == [9000, 15000, 21000]
    fvi = get_attack("fvi").from_options("paper").config  # 20,000 iterations, N(0, 0.001) kicks every 1,000
    assert (fvi.iterations, fvi.stop_loss, fvi.restarts) == (20000, 0.0, 1)
    assert (fvi.stagnation.check_every, fvi.stagnation.noise_std) == (1000, 1e-3)
    short = get_attack("dlg").from_options("paper", {"iterations": 5})  # options go on top of the preset
    assert short.config.iterations == 5 and short.config.stop.patience is None
    with pytest.raises(SplitleakError, match="unknown preset 'fast'"):
        get_attack("dlg").from_options("fast")


def test_paper_fvi_kicks_at_every_stagnated_check():
    torch.manual_seed(0)
    clf = FC().eval()
    z = torch.relu(torch.randn(1, 10, 64))
    case = GradientCase(clf, learning.gradients(clf, z, torch.tensor([1])), 1, (10, 64), 10, None, "features")
    # the paper's loop at a 1/100 scale: 200 iterations, a check every 10, a learning rate too small to progress
    attack = get_attack("fvi").from_options("paper", {"iterations": 200, "check_every": 10, "lr": 1e-9})
    result = attack.reconstruct(case)
    assert result.extra["steps"] == 200 and result.extra["stagnation_kicks"] == 20  # one kick per check after the first


@pytest.mark.parametrize("name,options", [("dlg", {"iterations": 2, "restarts": 2}), ("idlg", {"iterations": 2, "restarts": 1}),
                                          ("ig", {"iterations": 3, "restarts": 2}), ("fvi", {"iterations": 5})])
def test_reconstruct_leaves_the_attack_unchanged(lenet, frames, name, options):
    attack = get_attack(name)(**options)
    before = dict(attack.__dict__)
    if name == "fvi":
        clf = FC().eval()
        case = GradientCase(clf, learning.gradients(clf, torch.rand(1, 10, 64), torch.tensor([1])), 1, (10, 64), 10)
    else:
        case = image_case(lenet, frames[:1], torch.tensor([2]))
    first = attack.reconstruct(case)
    assert attack.__dict__ == before and all(attack.__dict__[k] is v for k, v in before.items())
    again = attack.reconstruct(case)  # and the same object gives the same answer twice
    assert torch.equal(first.inputs, again.inputs) and torch.equal(first.loss, again.loss)
    described = attack.describe()
    assert described["iterations"] == options["iterations"] and described["restarts"] == attack.config.restarts


# ---- the recording runner ------------------------------------------------------------------

def frame_meta(model, seq: int, stream: str = "cam0") -> dict:
    return {"stream_id": stream, "seq": str(seq), "capture_ts": 0.0, "model_id": model.name,
            "split_point": model.split, "weights": model.weights, "input_size": model.size,
            "num_classes": model.num_classes}


def update_meta(model, seq: int, batch: int, names: list[str], mode: str = "fedsgd", round_: int = 0,
                local_steps: int = 1) -> dict:
    return {"frame": frame_meta(model, seq), "mode": mode, "round": round_, "batch_size": batch,
            "learning_rate": 0.1, "local_steps": local_steps, "param_names": names, "codec": {"name": "fp32"}}


def write_recording(tmp: Path, x: torch.Tensor, labels: list[int], split: str = "none", mode: str = "fedsgd",
                    tamper=None, local_steps: int = 1) -> tuple[Path, Path]:
    """One round-1 state (weights unlike the seed:0 tag, so ignoring it would fail) and one update."""
    model = build_split_model("lenet", split, size=SIZE)
    trained = build_split_model("lenet", split, size=SIZE, weights="seed:1").tail
    rec, truth = tmp / "rec", tmp / "truth"
    for i, xi in enumerate(x):
        save_png(truth / frame_name("cam0", 10 + i), xi.numpy())
    with torch.no_grad():
        z = model.head(x)
    grads = learning.gradients(trained, z, torch.tensor(labels))
    tensors = {k: v.numpy() for k, v in grads.items()}
    tensors["labels"] = np.asarray(labels, np.int64)
    if tamper:
        tamper(tensors)
    state_meta = {"round": 1, "model_id": "lenet", "split_point": split, "weights": "seed:0", "input_size": SIZE,
                  "num_classes": 10}
    with RecordingWriter(rec, {}) as writer:
        writer.append("state", state_meta, {k: v.numpy() for k, v in learning.state(trained).items()})
        writer.append("update", update_meta(model, 10, len(x), list(grads), mode, round_=1,
                                                local_steps=local_steps), tensors)
    return rec, truth


def test_runner_images_end_to_end(frames, tmp_path):
    rec, truth = write_recording(tmp_path, frames[:1], [4])
    out = tmp_path / "out"
    metrics = run_attack(str(rec), "idlg", str(out), truth=str(truth), iterations=6, progress=False,
                         options={"restarts": 1, "init": "uniform"})
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["summary"] == metrics["summary"] and set(saved) == {"frames", "summary", "config"}
    (row,) = saved["frames"]
    assert (row["stream"], row["seq"], row["label"], row["label_true"], row["state"]) == ("cam0", 10, 4, 4, "recorded")
    assert row["psnr_native"] > 12.0 and row["psnr"] is not None and 0 < row["ssim"] <= 1
    summary = saved["summary"]
    for key in ("mean_psnr", "mean_ssim", "success_rate", "seconds", "label_accuracy", "success_rate_loss"):
        assert key in summary
    assert summary["label_accuracy"] == 1.0
    assert "gradient loss over the tapped gradient's squared norm < 1e-08" in saved["config"]["success_criterion"]
    assert (out / frame_name("cam0", 10)).is_file() and (out / "config.json").is_file()
    assert psnr(load_png(out / frame_name("cam0", 10)), load_png(truth / frame_name("cam0", 10))) == pytest.approx(
        row["psnr_native"], abs=1e-6)


@pytest.mark.slow
def test_runner_features_end_to_end(frames, tmp_path):
    rec, truth = write_recording(tmp_path, frames[:1], [2], split="conv3")
    out = tmp_path / "out"
    metrics = run_gradient_attack(str(rec), "fvi", str(out), truth=str(truth), iterations=60, progress=False,
                                  options={"optimizer": "lbfgs"})
    (row,) = metrics["frames"]
    assert row["feature_cosine"] > 0.9 and row["psnr"] is None and row["label"] == 2
    saved = load_file(str(out / features_name("cam0", 10)))
    assert saved["features"].shape == (1, 12, 8, 8) and saved["labels"].tolist() == [2]
    assert metrics["summary"]["mean_feature_cosine"] == pytest.approx(row["feature_cosine"])


def _rename(tensors):
    tensors["classifier.1.weights"] = tensors.pop("classifier.1.weight")


def _reshape(tensors):
    tensors["classifier.1.weight"] = tensors["classifier.1.weight"][:, :100].copy()


@pytest.mark.parametrize("tamper,mode,local_steps,message", [
    (_rename, "fedsgd", 1, "param_names and tensors differ"),
    (_reshape, "fedsgd", 1, r"has shape \[10, 100\]"),
    (None, "fedavg", 101, "a fedavg update needs 1..100 local steps"),
    (None, "split", 1, "split updates are not attacked"),
])
def test_runner_refuses_bad_updates(frames, tmp_path, tamper, mode, local_steps, message):
    rec, truth = write_recording(tmp_path, frames[:1], [1], mode=mode, tamper=tamper, local_steps=local_steps)
    with pytest.raises(SplitleakError, match=message) as err:
        run_gradient_attack(str(rec), "dlg", str(tmp_path / "out"), iterations=1, progress=False)
    assert "\n" not in str(err.value)


def test_runner_refuses_gradient_of_another_model(frames, tmp_path):
    def other(tensors):
        tensors["fc.weight"] = tensors.pop("classifier.1.weight")

    rec, _ = write_recording(tmp_path, frames[:1], [1], tamper=other)
    meta_file = rec / "items.jsonl"
    lines = [json.loads(line) for line in meta_file.read_text().splitlines()]
    lines[1]["meta"]["param_names"] = [n if n != "classifier.1.weight" else "fc.weight" for n in lines[1]["meta"]["param_names"]]
    meta_file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(SplitleakError, match="no parameter 'fc.weight'"):
        run_gradient_attack(str(rec), "idlg", str(tmp_path / "out"), iterations=1, progress=False)


def test_runner_refuses_feature_recording_without_updates(tmp_path):
    model = build_split_model("lenet", "conv1", size=SIZE)
    with RecordingWriter(tmp_path / "rec", {}) as writer:
        writer.append("frame", frame_meta(model, 0), {"features": np.zeros((1, 12, 16, 16), np.float32)})
    with pytest.raises(SplitleakError, match="no gradient updates"):
        run_gradient_attack(str(tmp_path / "rec"), "dlg", str(tmp_path / "out"), progress=False)


def test_one_step_fedavg_delta_is_attacked_as_its_gradient(frames, tmp_path):
    """A FedAvg delta of one SGD step is -lr x the gradient: the attack is handed that gradient."""
    from adversary.runner.updates import plan_recording, wire_gradients
    from splitleak.recording import RecordingReader

    def as_delta(tensors):
        for name in list(tensors):
            if name != "labels":
                tensors[name] = (-0.1 * tensors[name]).astype(np.float32)

    handed = {}
    for mode, tamper in (("fedsgd", None), ("fedavg", as_delta)):
        rec, _ = write_recording(tmp_path / mode, frames[:1], [1], mode=mode, tamper=tamper)
        update = plan_recording(str(rec), None).updates[0]
        item = RecordingReader(rec).items()[update.index]
        handed[mode] = wire_gradients(update, build_split_model("lenet", "none", size=SIZE).tail, item)
    for name, grad in handed["fedsgd"].items():
        assert torch.allclose(handed["fedavg"][name], grad, rtol=1e-5, atol=1e-9), name
