"""Live attacks on a real loopback cloud's tap, Ctrl-C, and the trained victim (train-victim)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from adversary.runner.live import LiveAttack, LiveConfig
from adversary.victim import VictimConfig, accuracy, load_frames
from edge.streamer import EdgeConfig, EdgeStreamer
from live_helpers import run_while_edge, wait_for
from splitleak.cli.main import main
from splitleak.errors import SplitleakError
from splitleak.models import build_split_model
from splitleak.recording import RecordingReader

EDGE = dict(source="synthetic:48x40", model="lenet", split="conv2", size=32, progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")


def stream(port: int, truth: Path, frames: int) -> dict:
    return EdgeStreamer(EdgeConfig(cloud=f"127.0.0.1:{port}", frames=frames, truth=str(truth), **EDGE)).run()


@pytest.mark.parametrize("attack,options", [("do", {}), ("bb-do", {"query_source": "synthetic:48x40",
                                                                    "query_frames": 8, "width": 8, "flip": 0,
                                                                    "batch": 4, "progress": 0})])
def test_live_attack_reconstructs_a_stream(start_cloud, tmp_path: Path, attack: str, options: dict):
    cloud = start_cloud(tap_token="t")
    out, truth = tmp_path / "out", tmp_path / "truth"
    config = LiveConfig(cloud=f"127.0.0.1:{cloud.port}", attack=attack, out=str(out), truth=str(truth), batch=4,
                        batch_timeout=0.2, max_frames=5, iterations=20, token="t", progress=False,
                        options={**options, "cache_dir": str(tmp_path / "cache")} if attack == "bb-do" else options)
    live, result = LiveAttack(config), {}
    thread = threading.Thread(target=lambda: result.update(live.run()))
    thread.start()
    wait_for(lambda: cloud.bus.active)
    assert stream(cloud.port, truth, frames=5)["acked"] == 5
    thread.join(60)
    assert not thread.is_alive()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result))
    assert [(f["stream"], f["seq"]) for f in metrics["frames"]] == [("edge0", s) for s in range(5)]
    assert all(f["psnr"] is not None and f["ssim"] is not None for f in metrics["frames"])
    assert {"mean_psnr", "mean_ssim", "success_rate", "seconds"} <= set(metrics["summary"])
    assert metrics["config"]["mode"] == "live" and metrics["config"]["tapped_frames"] == 5
    assert sorted(p.name for p in out.glob("edge0_*.png")) == [f"edge0_{s:06d}.png" for s in range(5)]
    assert len(RecordingReader(out / "tap").items()) == 5  # what was tapped, for offline attacks later


def test_ctrl_c_stops_with_what_it_has(start_cloud, tmp_path: Path):
    cloud = start_cloud()
    out, truth = tmp_path / "out", tmp_path / "truth"
    live = LiveAttack(LiveConfig(cloud=f"127.0.0.1:{cloud.port}", attack="do", out=str(out), truth=str(truth),
                                 batch=8, batch_timeout=0.1, iterations=5, progress=False))
    metrics, _ = run_while_edge(cloud, live.run, lambda: stream(cloud.port, truth, frames=3),  # no frame limit:
                                ctrl_c_when=lambda: len(list(out.glob("edge0_*.png"))) == 3)  # Ctrl-C ends it
    assert metrics["config"]["interrupted"] and metrics["config"]["frames"] == 3
    assert len(metrics["frames"]) == 3 and metrics["summary"]["mean_psnr"] is not None
    assert (out / "metrics.json").is_file() and (out / "tap" / "summary.json").is_file()


def test_bad_live_input_fails_with_a_reason(tmp_path: Path):
    with pytest.raises(SplitleakError, match="unreachable"):
        LiveAttack(LiveConfig(cloud="127.0.0.1:1", attack="do", out=str(tmp_path / "a"), progress=False,
                              connect_timeout=0.3)).run()
    with pytest.raises(SplitleakError, match="takes no prior"):
        LiveAttack(LiveConfig(cloud="127.0.0.1:1", attack="do", out=str(tmp_path / "b"), prior=str(tmp_path)))
    with pytest.raises(SplitleakError, match="needs a diffusion prior"):
        LiveAttack(LiveConfig(cloud="127.0.0.1:1", attack="bb-dmb", out=str(tmp_path / "c")))
    with pytest.raises(SplitleakError, match="unknown attack"):
        LiveAttack(LiveConfig(cloud="127.0.0.1:1", attack="nope", out=str(tmp_path / "d")))


def test_train_victim_writes_a_loadable_state_dict(tmp_path: Path, capsys):
    out = tmp_path / "victim.pt"
    code = main(["train-victim", "--out", str(out), "--model", "lenet", "--size", "32", "--epochs", "1",
                 "--frames", "10", "--batch", "8", "--quiet", "--device", "cpu"])
    assert code == 0 and "held-out accuracy" in capsys.readouterr().out
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["train_frames"] == 21 and report["held_out_frames"] == 9 and len(report["classes"]) == 3
    model = build_split_model("lenet", "conv2", size=32, weights=str(out))  # weights_only=True load
    assert model.weights == report["weights_tag"]
    # the reported accuracy is the saved weights' on the held-out frames, recomputed through the split model
    held_out = load_frames(VictimConfig(out=str(out), model="lenet", size=32, frames=10))[1]
    assert len(held_out.labels) == 9
    recomputed = accuracy(model, held_out, classes=3, device="cpu")
    assert recomputed == (report["held_out_accuracy"], report["held_out_accuracy_per_class"])
    trained = torch.load(out, weights_only=True)
    assert all(torch.equal(trained[k], v) for k, v in model.network.state_dict().items())
    assert main(["train-victim", "--out", str(tmp_path), "--model", "lenet", "--epochs", "1", "--quiet"]) == 2
