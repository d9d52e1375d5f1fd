"""Clip models in learning modes: the edge trains on clips over a real loopback cloud, the
recording holds clip updates, and the gradient attacks recover each clip's feature matrix."""
import json

import numpy as np
import pytest
import torch

from adversary.runner.run import run_attack
from edge.session import EdgeConfig
from edge.trainer import EdgeTrainer
from splitleak import learning
from splitleak.cli.main import main
from splitleak.errors import SplitleakError
from splitleak.models import build_split_model
from splitleak.recording import RecordingReader

CLIP = dict(source="synthetic:40x40", size=16, progress=False, lr=0.01)
FEATURE_COSINE_BAR = 0.99  # what fvi must reach on an unsaturated clip classifier's gradient


def train(port, tmp_path, **kwargs):
    config = EdgeConfig(cloud=f"127.0.0.1:{port}", truth=str(tmp_path / "truth"), **{**CLIP, **kwargs})
    trainer = EdgeTrainer(config)
    return trainer.run(), trainer


@pytest.fixture(scope="module")
def clip_recording(tmp_path_factory):
    """clipnet at 16 px, fedsgd, two 20-frame clips (45 frames: 5 left over) with labels 2 and 7."""
    from cloud.server import CloudConfig, CloudServer

    tmp = tmp_path_factory.mktemp("clips")
    (tmp / "labels.csv").write_text("0,20,2\n20,40,7\n")
    cloud = CloudServer(CloudConfig(listen="127.0.0.1:0", record=str(tmp / "rec")))
    try:
        summary, trainer = train(cloud.port, tmp, model="clipnet", split="pool", mode="fedsgd", frames=45,
                                 labels=str(tmp / "labels.csv"))
    finally:
        cloud.stop(1)
    return tmp, summary, trainer


def test_fedsgd_on_clips_records_clip_updates(clip_recording, one_thread):
    tmp, summary, trainer = clip_recording
    assert summary["sent"] == summary["acked"] == 2 and summary["skipped"] == 5
    updates = [it for it in RecordingReader(tmp / "rec") if it.kind == "update"]
    assert [int(u.meta["frame"]["seq"]) for u in updates] == [0, 20]
    assert updates[0].meta["param_names"] == learning.parameter_names(trainer.module)
    assert all(name.startswith("classifier.") for name in updates[0].meta["param_names"])  # extractor frozen
    assert len(list((tmp / "truth").glob("*.png"))) == 40  # every frame of every clip trained on


def test_rgap_recovers_every_clip_matrix(clip_recording, tmp_path, one_thread):
    tmp, _, _ = clip_recording
    metrics = run_attack(str(tmp / "rec"), "rgap", str(tmp_path / "out"), truth=str(tmp / "truth"), progress=False)
    rows = metrics["frames"]
    assert [r["seq"] for r in rows] == [0, 20]  # one row per clip, named by its first frame
    assert [r["label"] for r in rows] == [2, 7]  # each clip trained on its own label (read off its gradient)
    assert all(r["feature_cosine"] > 0.9999 and r["feature_rel_error"] < 1e-3 for r in rows)
    saved = sorted(p.name for p in (tmp_path / "out").glob("*.features.safetensors"))
    assert len(saved) == 2


def test_fvi_recovers_the_feature_matrix(clip_recording, tmp_path, one_thread):
    tmp, _, _ = clip_recording
    metrics = run_attack(str(tmp / "rec"), "fvi", str(tmp_path / "out"), truth=str(tmp / "truth"),
                         max_frames=1, preset="clip", options={"restarts": 1, "iterations": 100}, progress=False)
    (row,) = metrics["frames"]
    assert row["feature_cosine"] > FEATURE_COSINE_BAR
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["summary"]["mean_feature_rel_error"] == pytest.approx(row["feature_rel_error"])


def test_split_learning_and_fedavg_take_clips(start_cloud, tmp_path, one_thread):
    cloud = start_cloud()
    summary, _ = train(cloud.port, tmp_path, model="frameavg", split="mean", mode="split", frames=16, label=1)
    assert summary["acked"] == 2
    summary, trainer = train(cloud.port, tmp_path, model="frameavg", split="mean", mode="fedavg", frames=16,
                             batch=2, local_steps=2, label=1)
    assert summary["acked"] == 1
    initial = learning.state(build_split_model("frameavg", "mean", size=16).tail)
    assert any(not torch.equal(v, initial[k]) for k, v in learning.state(trainer.module).items())


@pytest.fixture(scope="module")
def raw_clip_recording(tmp_path_factory):
    """frameavg trained on raw frames (split none) at 16 px: one fedsgd update of one 8-frame clip, label 3."""
    from cloud.server import CloudConfig, CloudServer

    tmp = tmp_path_factory.mktemp("rawclips")
    cloud = CloudServer(CloudConfig(listen="127.0.0.1:0", record=str(tmp / "rec")))
    try:
        train(cloud.port, tmp, model="frameavg", split="none", mode="fedsgd", frames=8, label=3)
    finally:
        cloud.stop(1)
    return tmp


def test_raw_clip_update_is_attacked_frame_by_frame(raw_clip_recording, tmp_path, one_thread):
    tmp = raw_clip_recording
    metrics = run_attack(str(tmp / "rec"), "idlg", str(tmp_path / "out"), truth=str(tmp / "truth"),
                         options={"iterations": 2, "restarts": 1, "lambda_time": 0.01}, progress=False)
    rows = metrics["frames"]
    assert [r["seq"] for r in rows] == list(range(8)) and {r["clip_seq"] for r in rows} == {0}
    assert all(r["psnr"] is not None and r["ssim"] is not None for r in rows)  # every frame scored
    assert sorted(r["recovered_as"] for r in rows) == list(range(8))  # frameavg: frames assigned by best match
    assert all(r["label"] == 3 for r in rows)  # iDLG's label off the last bias (fedsgd carries none)
    (clip,) = metrics["summary"]["clips"]
    assert clip["frames"] == 8 and clip["psnr"] == pytest.approx(np.mean([r["psnr"] for r in rows]))
    assert 0 <= clip["order_kept"] <= 1
    assert len(list((tmp_path / "out").glob("edge0_*.png"))) == 8


def test_raw_clips_need_an_attack_with_the_temporal_prior(raw_clip_recording, tmp_path):
    with pytest.raises(SplitleakError, match="trained on raw clips.*lambda_time"):
        run_attack(str(raw_clip_recording / "rec"), "idlg-batched", str(tmp_path / "out"), progress=False)


@pytest.mark.parametrize("option, reason", [("lambda_time=-1", "lambda_time must be >= 0"),
                                            ("start_spread=2", "start_spread must be in")])
def test_temporal_options_bad_value_one_line(raw_clip_recording, tmp_path, option, reason, capsys):
    argv = ["attack", "--recording", str(raw_clip_recording / "rec"), "--attack", "ig", "--option", option,
            "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and reason in err[0]


def tiny_clip_case(seed=0):
    """A tiny 3D-conv clip classifier's gradient of a random (3, 4, 8, 8) clip, label 1."""
    from adversary.gradient.base import GradientCase

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3, padding=1), torch.nn.Sigmoid(), torch.nn.Flatten(1),
                              torch.nn.Linear(4 * 4 * 8 * 8, 5)).eval()
    clip = torch.rand(1, 3, 4, 8, 8)
    grads = learning.gradients(net, clip, torch.tensor([1]))
    return GradientCase(net, grads, 1, (3, 4, 8, 8), 5)


@pytest.mark.parametrize("attack, options", [("idlg", {"iterations": 5, "restarts": 1}),
                                             ("ig", {"iterations": 30})])
def test_temporal_prior_shrinks_frame_differences(attack, options, one_thread):
    from adversary.attacks import build_attack
    from adversary.gradient.temporal import temporal_variation

    def variation(weight):
        result = build_attack(attack, options={**options, "lambda_time": weight}).reconstruct(tiny_clip_case())
        return float(temporal_variation(result.inputs)[0])

    assert variation(10.0) < 0.5 * variation(0.0)  # ig's signed steps of lr 0.1 leave some jitter


def test_spread_start_pulls_frames_to_one():
    from adversary.gradient.temporal import spread_start, temporal_variation

    x = torch.rand(2, 3, 4, 8, 8)
    assert torch.equal(spread_start(x, 1.0), x)
    assert float(temporal_variation(spread_start(x, 0.0)).max()) < 1e-6
    assert torch.allclose(temporal_variation(spread_start(x, 0.5)), 0.5 * temporal_variation(x))
    assert torch.equal(spread_start(x[:, :, 0], 0.0), x[:, :, 0])  # a frame input is left alone


def test_clip_model_bad_input():
    with pytest.raises(SplitleakError, match="unknown split point"):
        build_split_model("clipnet", "layer2", size=16)
    with pytest.raises(SplitleakError, match="multiple of 10"):
        build_split_model("clipnet", "pool", size=16, clip_len=15)
    with pytest.raises(SplitleakError, match="clips of 20 frames"):
        EdgeTrainer(EdgeConfig(cloud="127.0.0.1:1", model="clipnet", split="pool", mode="fedsgd", frames=5, **CLIP))


@pytest.mark.parametrize("argv, reason", [
    (["--model", "clipnet", "--split", "layer2"], "unknown split point"),
    (["--model", "clipnet", "--split", "pool", "--frames", "7"], "clips of 20 frames"),
])
def test_edge_cli_one_line_errors(argv, reason, capsys):
    base = ["edge", "--cloud", "127.0.0.1:1", "--source", "synthetic:40x40", "--size", "16", "--mode", "fedsgd"]
    assert main(base + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and reason in err[0]


def test_clip_feature_shapes():
    model = build_split_model("clipnet", "pool", size=16)
    z = model.head(torch.rand(2, *model.input_shape))
    assert tuple(z.shape) == (2, 1, 10, 64) and bool((z >= 0).all())
    assert np.prod(build_split_model("frameavg", "mean", size=16).head(torch.rand(1, 3, 8, 16, 16)).shape) == 256


def test_frameavg_gradient_ignores_frame_order_r3d_does_not(one_thread):
    """Why frameavg's recovered frames are assigned by best match: a permuted clip has the same gradient."""
    torch.manual_seed(0)
    clip, label, order = torch.rand(1, 3, 8, 16, 16), torch.tensor([2]), torch.randperm(8)

    def change(model):
        net = build_split_model(model, "none", size=16).tail.eval()
        a, b = learning.gradients(net, clip, label), learning.gradients(net, clip[:, :, order], label)
        return max(float((a[k] - b[k]).norm() / a[k].norm().clamp_min(1e-12)) for k in a)

    assert change("frameavg") < 1e-4
    assert change("r3d_18") > 1e-2
