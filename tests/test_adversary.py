"""Adversary: DO feature inversion end to end on tiny recordings, evaluation, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from adversary import attack_names, get_attack
from adversary.evaluate import evaluate_folders
from adversary.feature import DirectOptimisation, WhiteBoxCase
from adversary.losses import feature_loss
from adversary.metrics import PSNR_CAP_DB, psnr
from adversary.runner.run import run_attack
from splitleak.errors import SplitleakError
from splitleak.models import build_split_model
from splitleak.recording import RecordingWriter
from splitleak.video import frame_name, load_png, save_png

SIZE, FRAMES = 32, 4
pytestmark = pytest.mark.usefixtures("one_thread")


def scene(k: int, n: int = SIZE) -> np.ndarray:
    """A smooth synthetic frame (3, n, n) in [0, 1]: colour gradients plus a few flat discs."""
    yy, xx = np.mgrid[0:n, 0:n] / n
    rng = np.random.default_rng(k)
    img = np.stack([0.3 + 0.4 * xx, 0.2 + 0.5 * yy, 0.5 + 0.2 * np.sin(6 * xx + k)])
    for _ in range(3):
        cx, cy, r = rng.uniform(0.2, 0.8, 3) * [1, 1, 0.4]
        img[:, (xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2] = rng.uniform(0, 1, 3)[:, None]
    return np.clip(img, 0, 1).astype(np.float32)


def meta(model, seq: int, stream: str = "cam0") -> dict:
    return {"stream_id": stream, "seq": str(seq), "capture_ts": 0.0, "model_id": model.name,
            "split_point": model.split, "weights": model.weights, "input_size": model.size,
            "num_classes": model.num_classes, "codec": {"name": "fp32"}}


def make_recording(tmp: Path, name: str = "lenet", split: str = "conv1", weights: str = "seed:0",
                   frames: int = FRAMES, updates: int = 0) -> tuple[Path, Path]:
    """A recording of head(x) for synthetic frames, and a truth folder of the (uint8-rounded) frames."""
    model = build_split_model(name, split, size=SIZE, weights=weights)
    rec, truth = tmp / "rec", tmp / "truth"
    with RecordingWriter(rec, {}) as writer:
        for _ in range(updates):
            writer.append("update", {"round": 0}, {"conv1.weight": np.zeros((2, 2), np.float32)})
        for seq in range(frames):
            save_png(truth / frame_name("cam0", seq), scene(seq))
            x = torch.from_numpy(load_png(truth / frame_name("cam0", seq)))[None]
            with torch.no_grad():
                writer.append("frame", meta(model, seq), {"features": model.head(x).numpy()})
    return rec, truth


def grey_psnr(truth: Path) -> float:
    return float(np.mean([psnr(np.full((3, SIZE, SIZE), 0.5, np.float32), load_png(p))
                          for p in sorted(truth.glob("*.png"))]))


@pytest.mark.parametrize("name,batch", [("lenet", 8), ("resnet18", 3)])
def test_do_reconstructs_frames(tmp_path: Path, name: str, batch: int) -> None:
    rec, truth = make_recording(tmp_path, name)
    m = run_attack(str(rec), "do", str(tmp_path / "out"), truth=str(truth), iterations=150,
                   batch_size=batch, progress=False)
    assert set(m) == {"frames", "summary", "config"}
    assert {"mean_psnr", "mean_ssim", "success_rate", "seconds"} <= set(m["summary"])
    assert [(f["stream"], f["seq"]) for f in m["frames"]] == [("cam0", s) for s in range(FRAMES)]
    assert all({"stream", "seq", "psnr", "ssim"} <= set(f) for f in m["frames"])
    assert m["summary"]["mean_psnr_native"] > grey_psnr(truth) + 8  # grey is ~14 dB here
    assert m["summary"]["mean_psnr"] > 20 and m["summary"]["mean_ssim"] > 0.6
    assert m["summary"]["success_rate"] == 1.0 and m["summary"]["seconds"] > 0
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("cam0_*.png")) == [frame_name("cam0", s) for s in range(FRAMES)]
    assert (out / "grid.png").is_file()
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(m))
    config = json.loads((out / "config.json").read_text())
    assert (config["attack"], config["model"], config["split"], config["size"]) == ("do", name, "conv1", SIZE)
    assert config["iterations"] == 150 and config["success_threshold_db"] == 20.0


def test_attack_without_truth_has_null_scores(tmp_path: Path) -> None:
    rec, _ = make_recording(tmp_path, frames=2, updates=1)
    m = run_attack(str(rec), "do", str(tmp_path / "out"), iterations=3, progress=False, max_frames=1)
    assert m["config"]["skipped_updates"] == 1
    assert len(m["frames"]) == 1 and m["frames"][0]["psnr"] is None and m["frames"][0]["ssim"] is None
    assert m["summary"]["mean_psnr"] is None and m["summary"]["mean_ssim"] is None
    assert m["summary"]["seconds"] > 0


def test_evaluate_identical_folders(tmp_path: Path) -> None:
    for seq in range(3):
        save_png(tmp_path / "a" / frame_name("s", seq), scene(seq))
    m = evaluate_folders(str(tmp_path / "a"), str(tmp_path / "a"), str(tmp_path / "ev"))
    assert [f["psnr"] for f in m["frames"]] == [PSNR_CAP_DB] * 3
    assert all(f["ssim"] == pytest.approx(1.0) for f in m["frames"])
    assert m["summary"]["success_rate"] == 1.0 and m["config"]["psnr_cap_db"] == PSNR_CAP_DB
    assert (tmp_path / "ev" / "grid.png").is_file() and (tmp_path / "ev" / "metrics.json").is_file()


def test_evaluate_scores_noise_low(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    save_png(tmp_path / "t" / frame_name("s", 1), scene(1))
    save_png(tmp_path / "r" / frame_name("s", 1), rng.uniform(0, 1, (3, SIZE, SIZE)).astype(np.float32))
    m = evaluate_folders(str(tmp_path / "r"), str(tmp_path / "t"), str(tmp_path / "ev"), size=64)
    assert m["frames"][0]["psnr"] < 12 and m["summary"]["success_rate"] == 0.0


def test_do_is_deterministic() -> None:
    model = build_split_model("lenet", "conv1", size=SIZE)
    x = torch.from_numpy(np.stack([scene(0), scene(1)]))
    z = model.head(x).detach()
    case = WhiteBoxCase(model.head, (3, SIZE, SIZE), seed=5)
    a = DirectOptimisation(iterations=20).reconstruct(z, case).images
    b = DirectOptimisation(iterations=20).reconstruct(z, case).images
    assert torch.equal(a, b) and a.shape == x.shape and 0 <= a.min() and a.max() <= 1


def test_feature_loss_ignores_non_finite() -> None:
    z = torch.ones(2, 4)
    z_bad = z.clone()
    z_bad[1, 0] = float("nan")
    mask = torch.isfinite(z_bad)
    loss = feature_loss(torch.ones(2, 4), torch.where(mask, z_bad, 0), mask)
    assert torch.equal(loss, torch.zeros(2))


def test_file_weights_need_the_matching_file(tmp_path: Path) -> None:
    path, other = tmp_path / "w.pt", tmp_path / "other.pt"
    torch.save(build_split_model("lenet", "conv1", size=SIZE, weights="seed:3").state_dict(), path)
    torch.save(build_split_model("lenet", "conv1", size=SIZE, weights="seed:4").state_dict(), other)
    rec, truth = make_recording(tmp_path, weights=str(path), frames=1)
    with pytest.raises(SplitleakError, match="--weights"):
        run_attack(str(rec), "do", str(tmp_path / "o"), iterations=2, progress=False)
    with pytest.raises(SplitleakError, match="file:"):
        run_attack(str(rec), "do", str(tmp_path / "o"), iterations=2, progress=False, weights_path=str(other))
    m = run_attack(str(rec), "do", str(tmp_path / "o"), iterations=2, progress=False, weights_path=str(path))
    assert m["config"]["weights"].startswith("file:")
    seeded, _ = make_recording(tmp_path / "seeded", frames=1)
    with pytest.raises(SplitleakError, match="not a weights file"):
        run_attack(str(seeded), "do", str(tmp_path / "o2"), iterations=2, progress=False, weights_path=str(path))


def test_registry() -> None:
    assert "do" in attack_names() and get_attack("do") is DirectOptimisation
    with pytest.raises(SplitleakError, match="do"):
        get_attack("nope")


def _bad_model_recording(folder: Path) -> None:
    model = build_split_model("lenet", "conv1", size=SIZE)
    with RecordingWriter(folder, {}) as w:
        w.append("frame", {**meta(model, 0), "model_id": "alexnet"},
                 {"features": np.zeros((1, 12, 16, 16), np.float32)})


def _recording_with(folder: Path, updates: int) -> None:
    with RecordingWriter(folder, {}) as w:
        for _ in range(updates):
            w.append("update", {"round": 0}, {"g": np.zeros(3, np.float32)})


@pytest.mark.parametrize("case,match", [
    ("unknown_attack", "unknown attack"), ("missing", "not found"), ("empty", "no feature frames"),
    ("updates", "gradient"), ("no_truth_match", "no truth frame"), ("truth_missing", "truth folder"),
    ("unknown_model", "unknown model"), ("out_is_truth", "truth folder"), ("bad_shape", "do not fit"),
])
def test_bad_input(tmp_path: Path, case: str, match: str) -> None:
    rec, truth = make_recording(tmp_path, frames=1)
    kwargs: dict = {"iterations": 2, "progress": False}
    attack, recording, out = "do", str(rec), str(tmp_path / "out")
    if case == "unknown_attack":
        attack = "nope"
    elif case == "missing":
        recording = str(tmp_path / "absent")
    elif case in ("empty", "updates"):
        recording = str(tmp_path / case)
        _recording_with(tmp_path / case, 2 if case == "updates" else 0)
    elif case == "no_truth_match":
        (tmp_path / "other").mkdir()
        save_png(tmp_path / "other" / frame_name("camX", 9), scene(0))
        kwargs["truth"] = str(tmp_path / "other")
    elif case == "truth_missing":
        kwargs["truth"] = str(tmp_path / "absent_truth")
    elif case == "unknown_model":
        recording = str(tmp_path / "bad")
        _bad_model_recording(tmp_path / "bad")
    elif case == "out_is_truth":
        kwargs["truth"], out = str(truth), str(truth)
    elif case == "bad_shape":
        recording = str(tmp_path / "shape")
        model = build_split_model("lenet", "conv1", size=SIZE)
        with RecordingWriter(tmp_path / "shape", {}) as w:
            w.append("frame", meta(model, 0), {"features": np.zeros((1, 5), np.float32)})
    with pytest.raises(SplitleakError, match=match):
        run_attack(recording, attack, out, **kwargs)


def test_evaluate_bad_input(tmp_path: Path) -> None:
    save_png(tmp_path / "r" / frame_name("a", 1), scene(0))
    save_png(tmp_path / "t" / frame_name("b", 1), scene(0))
    with pytest.raises(SplitleakError, match="no frames"):
        evaluate_folders(str(tmp_path / "r"), str(tmp_path / "t"), str(tmp_path / "e"))
    with pytest.raises(SplitleakError, match="truth folder"):
        evaluate_folders(str(tmp_path / "r"), str(tmp_path / "nope"), str(tmp_path / "e"))
    with pytest.raises(SplitleakError, match="size"):
        evaluate_folders(str(tmp_path / "r"), str(tmp_path / "r"), str(tmp_path / "e"), size=0)
