"""attack-live with gradient attacks: a real loopback cloud, an edge training in fedsgd mode, and the
tap's updates handed to the batched engine (several in one call) or to a single-frame attack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import adversary.gradient  # noqa: F401  (registers the attacks)
from adversary.gradient.batched import BatchedLbfgsAttack
from adversary.gradient.idlg import IDLG
from adversary.runner.live import LiveAttack, LiveConfig
from adversary.runner.run import run_attack
from edge.session import EdgeConfig
from edge.trainer import EdgeTrainer
from live_helpers import run_while_edge
from splitleak.cli.main import main
from splitleak.errors import SplitleakError
from splitleak.recording import RecordingReader
from splitleak.video import frame_name

SIZE = 16
OPTIONS = {"restarts": 1, "check_every": 4}
ROW_FIELDS = {"stream", "seq", "update", "round", "state", "gradient_loss", "gradient_loss_l2",
              "gradient_loss_relative", "gradient_norm", "attack_success", "label", "label_true", "psnr", "ssim",
              "psnr_native", "ssim_native", "success", "label_correct"}

pytestmark = pytest.mark.usefixtures("one_thread")


def train(port: int, truth: Path, frames: int, **kwargs) -> dict:
    """An edge training the whole lenet (split none) on `frames` synthetic frames."""
    config = EdgeConfig(cloud=f"127.0.0.1:{port}", source="synthetic:40x40", model="lenet", split="none", size=SIZE,
                        frames=frames, truth=str(truth), progress=False, **{"mode": "fedsgd", "lr": 0.5, **kwargs})
    return EdgeTrainer(config).run()


def live_while_training(cloud, run, frames: int, truth: Path, **edge) -> dict:
    """The live run's result (run in this thread) with the training edge's summary under "edge"."""
    result, summary = run_while_edge(cloud, run, lambda: train(cloud.port, truth, frames, **edge))
    return {"edge": summary, **result}


def spy(monkeypatch, cls) -> list:
    """Record the cases `cls.reconstruct` is called with."""
    calls: list = []
    reconstruct = cls.reconstruct

    def recording(self, case):
        calls.append(case)
        return reconstruct(self, case)

    monkeypatch.setattr(cls, "reconstruct", recording)
    return calls


def test_batched_attack_takes_the_tapped_updates_in_one_engine_call(start_cloud, tmp_path, monkeypatch):
    cloud = start_cloud(tap_token="t")
    out, truth = tmp_path / "out", tmp_path / "truth"
    calls = spy(monkeypatch, BatchedLbfgsAttack)
    config = LiveConfig(cloud=f"127.0.0.1:{cloud.port}", attack="idlg-batched", out=str(out), truth=str(truth),
                        batch=3, batch_timeout=60, max_frames=3, iterations=2, token="t", progress=False,
                        options=OPTIONS)
    result = live_while_training(cloud, LiveAttack(config).run, 3, truth)
    assert result["edge"]["acked"] == 3
    # the three updates (rounds 0, 1, 2) gathered into one optimisation, each frame with its round's weights
    assert len(calls) == 1 and calls[0].frames == 3 and calls[0].frame_params is not None
    metrics = json.loads((out / "metrics.json").read_text())
    rows = metrics["frames"]
    assert [(r["stream"], r["seq"], r["round"], r["state"]) for r in rows] == \
        [("edge0", s, s, "recorded") for s in range(3)]
    assert all(ROW_FIELDS <= set(r) and r["psnr"] is not None for r in rows)
    assert sorted(p.name for p in out.glob("edge0_*.png")) == [frame_name("edge0", s) for s in range(3)]
    config_json = json.loads((out / "config.json").read_text())
    assert config_json == metrics["config"] and config_json["mode"] == "live"
    assert config_json["family"] == "gradient" and config_json["updates"] == 3 and config_json["rounds"] == [0, 1, 2]
    assert metrics["summary"]["updates"] == 3 and metrics["summary"]["frames"] == 3
    # what was tapped is a recording that `splitleak attack` replays to the same results (same cases, seeds)
    kinds = [it.kind for it in RecordingReader(out / "tap").items()]
    assert kinds.count("update") == 3 and kinds.count("state") == 3
    offline = run_attack(str(out / "tap"), "idlg-batched", str(tmp_path / "offline"), truth=str(truth),
                         iterations=2, progress=False, options=OPTIONS)
    for live_row, row in zip(rows, offline["frames"]):
        assert live_row["gradient_loss"] == pytest.approx(row["gradient_loss"], rel=1e-4, abs=1e-9)
        assert live_row["label"] == row["label"]


def test_single_frame_attack_takes_one_update_at_a_time_through_the_cli(start_cloud, tmp_path, monkeypatch, capsys):
    cloud = start_cloud()
    out, truth = tmp_path / "out", tmp_path / "truth"
    calls = spy(monkeypatch, IDLG)
    argv = ["attack-live", "--cloud", f"127.0.0.1:{cloud.port}", "--attack", "idlg", "--out", str(out),
            "--truth", str(truth), "--max-frames", "2", "--iterations", "1", "--option", "restarts=1",
            "--quiet", "--device", "cpu"]
    result = live_while_training(cloud, lambda: {"code": main(argv)}, 2, truth)
    assert result["code"] == 0 and json.loads(capsys.readouterr().out)["frames"] == 2
    assert [c.batch_size for c in calls] == [1, 1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["seq"] for r in metrics["frames"]] == [0, 1] and metrics["config"]["batch"] == 1
    assert (out / frame_name("edge0", 1)).is_file() and (out / "config.json").is_file()


def test_updates_it_cannot_invert_are_counted_and_the_stream_goes_on(start_cloud, tmp_path):
    cloud = start_cloud()
    out, truth = tmp_path / "out", tmp_path / "truth"
    config = LiveConfig(cloud=f"127.0.0.1:{cloud.port}", attack="idlg-batched", out=str(out), max_frames=2,
                        iterations=1, progress=False, options=OPTIONS)
    result = live_while_training(cloud, LiveAttack(config).run, 2, truth, mode="fedavg",
                                 local_steps=101)  # more local steps than an attack unrolls
    assert result["edge"]["acked"] == 2
    assert result["config"]["skipped"]["not_attackable"] == 2 and result["frames"] == []
    assert result["summary"]["frames"] == 0 and (out / "metrics.json").is_file()


def exit_code(argv: list[str]) -> int:
    """main's exit code, argparse's refusals (SystemExit) included."""
    try:
        return main(argv)
    except SystemExit as exit:
        return int(exit.code)


def test_bad_gradient_live_input_fails_with_one_line(tmp_path, capsys):
    with pytest.raises(SplitleakError, match="takes no prior"):
        LiveAttack(LiveConfig(cloud="127.0.0.1:1", attack="idlg-batched", out=str(tmp_path / "a"),
                              prior=str(tmp_path)))
    with pytest.raises(SplitleakError, match="batch must be >= 1"):
        LiveAttack(LiveConfig(cloud="127.0.0.1:1", attack="dlg", out=str(tmp_path / "b"), batch=0))
    base = ["attack-live", "--cloud", "127.0.0.1:1", "--out", str(tmp_path / "c"), "--quiet"]
    for extra in (["--attack", "idlg-batched", "--option", "engine.rows=-1"],
                  ["--attack", "dlg", "--wait", "-1"], ["--attack", "idlg-batched", "--batch", "0"]):
        capsys.readouterr()
        assert exit_code(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err and "\n" not in err and "Traceback" not in err


def test_ctrl_c_keeps_the_updates_already_attacked(start_cloud, tmp_path):
    cloud = start_cloud()
    out, truth = tmp_path / "out", tmp_path / "truth"
    live = LiveAttack(LiveConfig(cloud=f"127.0.0.1:{cloud.port}", attack="idlg-batched", out=str(out),
                                 truth=str(truth), batch_timeout=0.2, iterations=1, progress=False, options=OPTIONS))

    metrics, _ = run_while_edge(cloud, live.run, lambda: train(cloud.port, truth, 2),  # no frame limit:
                                ctrl_c_when=lambda: len(list(out.glob("edge0_*.png"))) == 2)  # Ctrl-C ends it
    assert metrics["config"]["interrupted"] and [r["seq"] for r in metrics["frames"]] == [0, 1]
    assert metrics["summary"]["mean_psnr"] is not None and (out / "tap" / "summary.json").is_file()
