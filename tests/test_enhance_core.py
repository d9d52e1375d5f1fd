"""Super-resolution core: degradation, training pairs and loop, the compact RRDBNet through spandrel,
`splitleak enhance` / `train-sr` / `evaluate --low`, the comparison video, `attack --enhance`, bad input."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from adversary.enhance.base import Enhancer
from adversary.enhance.degrade import DegradeConfig, degrade, preset
from adversary.enhance.pairs import PairSampler, load_footage
from adversary.enhance.registry import register
from adversary.enhance.rrdb import RRDBConfig, RRDBNet, init_as_upsampler
from adversary.enhance.training import read_config, save_model, train_model
from adversary.enhance.weights import load_descriptor
from adversary.evaluate import evaluate_folders
from adversary.metrics import PSNR_CAP_DB
from splitleak.cli.main import main
from splitleak.errors import SplitleakError
from splitleak.video import frame_name, load_png, save_png
from splitleak.video.mp4 import Column, write_comparison_video, write_contact_sheet

LOW, SCALE = 16, 4
HIGH = LOW * SCALE
TINY = RRDBConfig(num_feat=8, num_block=1, scale=SCALE)
pytestmark = pytest.mark.usefixtures("one_thread")


def scene(k: int, n: int = HIGH) -> np.ndarray:
    """A smooth frame (3, n, n) in [0, 1] that drifts with k: gradients and a moving disc."""
    yy, xx = np.mgrid[0:n, 0:n] / n
    img = np.stack([0.2 + 0.6 * xx, 0.3 + 0.4 * yy, 0.5 + 0.3 * np.sin(5 * xx + 0.3 * k)])
    img[:, (xx - 0.3 - 0.02 * k) ** 2 + (yy - 0.5) ** 2 < 0.04] = np.array([0.9, 0.1, 0.2])[:, None]
    return img.astype(np.float32)


def write_frames(folder: Path, frames: int = 3, size: int = LOW, stream: str = "cam0") -> Path:
    """Frames of `scene` at `size` named STREAM_SEQ.png."""
    import cv2

    for seq in range(frames):
        img = cv2.resize(scene(seq).transpose(1, 2, 0), (size, size), interpolation=cv2.INTER_AREA)
        save_png(folder / frame_name(stream, seq), img.transpose(2, 0, 1))
    return folder


def run(argv: list[str], capsys) -> tuple[int, str]:
    """(exit code, stderr) of the command; its stdout stays in capsys.run_out."""
    code = main(argv)
    captured = capsys.readouterr()
    capsys.run_out = captured.out
    return code, captured.err


# --- degradation and pairs ---

def test_degrade_is_seeded_quantised_and_the_right_size() -> None:
    high = torch.from_numpy(np.stack([scene(k) for k in range(4)]))
    a = degrade(high, SCALE, np.random.default_rng(3))
    b = degrade(high, SCALE, np.random.default_rng(3))
    assert torch.equal(a, b) and a.shape == (4, 3, LOW, LOW)
    assert a.min() >= 0 and a.max() <= 1 and torch.allclose(a * 255, (a * 255).round(), atol=1e-4)
    assert not torch.equal(a, degrade(high, SCALE, np.random.default_rng(4)))


def test_plain_degradation_is_the_edges_area_downscale() -> None:
    import cv2

    high = torch.from_numpy(scene(0))[None]
    low = degrade(high, SCALE, np.random.default_rng(0), DegradeConfig(plain_prob=1.0, inversion_prob=0.0))
    area = cv2.resize(scene(0).transpose(1, 2, 0), (LOW, LOW), interpolation=cv2.INTER_AREA)
    assert np.abs(low[0].numpy().transpose(1, 2, 0) - area).max() <= 0.5 / 255 + 1e-6


def test_inversion_noise_moves_the_frame() -> None:
    high = torch.from_numpy(scene(0))[None]
    clean = degrade(high, SCALE, np.random.default_rng(0), DegradeConfig(plain_prob=1.0, inversion_prob=0.0))
    noisy = degrade(high, SCALE, np.random.default_rng(0), DegradeConfig(plain_prob=1.0, inversion_prob=1.0))
    assert (noisy - clean).abs().mean() > 2 / 255


def test_recovered_preset_is_light_white_noise_and_heavy_preset_is_blotchy() -> None:
    high = torch.from_numpy(np.stack([scene(k) for k in range(8)]))
    clean = degrade(high, SCALE, np.random.default_rng(0), DegradeConfig(plain_prob=1.0, inversion_prob=0.0))
    light = degrade(high, SCALE, np.random.default_rng(0), preset("recovered")) - clean
    heavy = degrade(high, SCALE, np.random.default_rng(0), preset("recovered-heavy")) - clean
    assert light.pow(2).mean().sqrt() < 0.02 < heavy.pow(2).mean().sqrt()  # DLG at an untrained LeNet: ~0.008
    assert light.mean(dim=(2, 3)).abs().max() < 0.01  # no colour shift


def test_pair_sampler_crops_on_the_scale_grid_and_clips_are_consecutive() -> None:
    frames = torch.from_numpy(np.stack([scene(k) for k in range(6)]))
    sampler = PairSampler(frames, SCALE, patch=32, seed=1)
    pairs = sampler.pairs(5)
    assert pairs.low.shape == (5, 3, 8, 8) and pairs.high.shape == (5, 3, 32, 32)
    assert (pairs.box % SCALE == 0).all() and (pairs.box <= HIGH - 32).all()
    clips = sampler.clips(2, 3)
    assert clips.low.shape == (2, 3, 3, 8, 8) and clips.high.shape == (2, 3, 3, 32, 32)
    assert (clips.index <= 6 - 3).all()
    with pytest.raises(SplitleakError, match="patch"):
        PairSampler(frames, SCALE, patch=30)


def test_load_footage_reads_a_source_as_the_edge_preprocesses_it() -> None:
    frames = load_footage("synthetic:40x30", size=HIGH, frames=3, stride=2)
    assert frames.shape == (3, 3, HIGH, HIGH) and frames.dtype == torch.float32


# --- the net, training, saving, spandrel ---

def test_rrdbnet_round_trips_through_spandrel(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = RRDBNet(TINY).eval()
    save_model(tmp_path / "m", net, {"method": "noref"})
    desc = load_descriptor(tmp_path / "m")
    x = torch.rand(2, 3, LOW, LOW)
    with torch.no_grad():
        assert desc.architecture.id == "ESRGAN" and desc.scale == SCALE
        assert torch.allclose(desc(x), net(x).clamp(0, 1), atol=1e-6)


def test_upsampler_init_starts_near_a_smooth_upscale() -> None:
    import torch.nn.functional as F

    torch.manual_seed(0)
    low = torch.from_numpy(np.stack([scene(0, LOW)]))
    with torch.no_grad():
        out = init_as_upsampler(RRDBNet(TINY), noise=0.0)(low)
        random = RRDBNet(TINY)(low)
    bilinear = F.interpolate(low, scale_factor=SCALE, mode="bilinear")
    inner = (..., slice(8, -8), slice(8, -8))  # zero padding darkens the rim until training fixes it
    assert (out - bilinear)[inner].abs().mean() < 0.02 < (random - bilinear)[inner].abs().mean()


def test_train_model_lowers_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    frames = torch.from_numpy(np.stack([scene(k) for k in range(4)]))
    pairs = PairSampler(frames, SCALE, patch=32, seed=0).pairs(4)
    log = train_model(RRDBNet(TINY), lambda step: ((pairs.low,), pairs.high), steps=25, lr=2e-3, progress=False)
    assert len(log.losses) == 25 and np.mean(log.losses[-5:]) < 0.7 * np.mean(log.losses[:5])


def test_train_sr_then_enhance_with_its_folder(tmp_path: Path, capsys) -> None:
    model = tmp_path / "sr"
    code, err = run(["train-sr", "--source", "synthetic:64x64", "--out", str(model), "--size", str(HIGH),
                     "--patch", "32", "--steps", "2", "--batch", "2", "--frames", "4", "--device", "cpu"], capsys)
    assert code == 0, err
    config = read_config(model, "noref")
    assert config["training"]["steps"] == 2 and config["scale"] == SCALE and (model / "model.safetensors").is_file()
    low = write_frames(tmp_path / "low")
    code, err = run(["enhance", "--in", str(low), "--method", "noref", "--weights", str(model),
                     "--out", str(tmp_path / "up"), "--device", "cpu"], capsys)
    assert code == 0, err
    assert load_png(tmp_path / "up" / frame_name("cam0", 2)).shape == (3, HIGH, HIGH)
    written = json.loads((tmp_path / "up" / "config.json").read_text())
    assert written["architecture"] == "ESRGAN" and written["frames"] == 3 and written["weights"] == str(model)


# --- enhance, evaluate, video ---

def test_enhance_scores_table1_and_writes_a_video(tmp_path: Path, capsys) -> None:
    import av

    low, truth = write_frames(tmp_path / "low", 4), tmp_path / "truth"
    for seq in range(4):
        save_png(truth / frame_name("cam0", seq), scene(seq))
    video = tmp_path / "v" / "cmp.mp4"
    code, err = run(["enhance", "--in", str(low), "--method", "bicubic", "--out", str(tmp_path / "up"),
                     "--truth", str(truth), "--video", str(video), "--size", str(HIGH), "--batch", "3"], capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "up" / "metrics.json").read_text())
    table = metrics["summary"]["table1"]
    assert set(table) == {"high_vs_low", "enhanced_vs_high", "enhanced_vs_low"}
    assert table["enhanced_vs_high"]["ssim"] > 0.8 and table["enhanced_vs_low"]["psnr"] > 30
    with av.open(str(video)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 4 and frames[0].width % 2 == 0 and frames[0].width > 3 * HIGH
    assert video.with_suffix(".png").is_file()


def test_mp4_writer_round_trip(tmp_path: Path) -> None:
    import av

    columns = [Column("a", [scene(k, 16) for k in range(5)]), Column("b", [scene(k, 32) for k in range(5)])]
    codec = write_comparison_video(tmp_path / "x.mp4", columns, fps=10, cell=32)
    with av.open(str(tmp_path / "x.mp4")) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.codec_context.name in ("h264", "mpeg4") and float(stream.average_rate) == 10
    assert codec in ("libx264", "mpeg4") and len(frames) == 5
    assert frames[0].shape[:2] == (32 + 18, 2 * 32 + 4)  # label strip over each cell, 4 px gap
    sheet = write_contact_sheet(tmp_path / "x.png", columns, max_frames=3, cell=32)
    assert load_png(sheet).shape[1:] == (2 * (32 + 18), 3 * 32 + 2 * 4)
    with pytest.raises(SplitleakError, match="frame counts"):
        write_comparison_video(tmp_path / "y.mp4", [columns[0], Column("c", columns[1].frames[:2])])


def test_evaluate_has_no_uint8_wrap_around(tmp_path: Path) -> None:
    black = np.zeros((3, 32, 32), np.float32)
    save_png(tmp_path / "t" / frame_name("s", 0), black)
    save_png(tmp_path / "r" / frame_name("s", 0), black + 1 / 255)  # uint8 0 - 1 would wrap to 255
    save_png(tmp_path / "t" / frame_name("s", 1), black + 0.5)
    save_png(tmp_path / "r" / frame_name("s", 1), black + 0.5)
    save_png(tmp_path / "t" / frame_name("s", 2), black + 0.5)
    save_png(tmp_path / "r" / frame_name("s", 2), np.random.default_rng(0).uniform(0, 1, black.shape))
    frames = evaluate_folders(str(tmp_path / "r"), str(tmp_path / "t"), str(tmp_path / "e"), size=32)["frames"]
    assert frames[0]["psnr"] == pytest.approx(20 * np.log10(255), abs=0.01)  # 48.13 dB, not ~0
    assert frames[1]["psnr"] == PSNR_CAP_DB and frames[2]["psnr"] < 12


def test_evaluate_low_gives_table1_and_plain_folders_pair_by_name(tmp_path: Path, capsys) -> None:
    import cv2

    for name in ("a", "b"):
        high = np.random.default_rng(ord(name)).uniform(0, 1, (3, HIGH, HIGH)).astype(np.float32)  # fine detail
        low = cv2.resize(high.transpose(1, 2, 0), (LOW, LOW), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
        save_png(tmp_path / "high" / f"{name}.png", high)
        save_png(tmp_path / "low" / f"{name}.png", low)
        save_png(tmp_path / "enh" / f"{name}.png", high)  # a perfect enhancement
    save_png(tmp_path / "enh" / "c.png", scene(0))  # no truth: left out
    code, err = run(["evaluate", "--recon", str(tmp_path / "enh"), "--truth", str(tmp_path / "high"),
                     "--low", str(tmp_path / "low"), "--out", str(tmp_path / "e"), "--size", str(HIGH)], capsys)
    assert code == 0, err
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert [(f["stream"], f["seq"]) for f in m["frames"]] == [("a", None), ("b", None)]
    assert m["config"]["recon_without_truth"] == 1
    table = m["summary"]["table1"]
    assert table["enhanced_vs_high"]["psnr"] == PSNR_CAP_DB
    assert table["enhanced_vs_low"]["psnr"] == pytest.approx(table["high_vs_low"]["psnr"])
    assert table["high_vs_low"]["psnr"] < 20


# --- attack --enhance ---

@pytest.mark.slow
@pytest.mark.parametrize("enhance", [["--enhance", "bicubic"], []], ids=["enhanced", "video-only"])
def test_attack_enhance_ends_in_a_scored_video(enhance: list[str], tmp_path: Path, capsys) -> None:
    import av
    from test_adversary import make_recording

    rec, truth = make_recording(tmp_path, frames=2)
    video = tmp_path / "attack.mp4"
    code, err = run(["attack", "--recording", str(rec), "--attack", "do", "--out", str(tmp_path / "out"),
                     "--truth", str(truth), "--iterations", "3", *enhance, "--video", str(video),
                     "--device", "cpu"], capsys)
    assert code == 0, err
    assert f"video: {video}" in capsys.run_out
    with av.open(str(video)) as container:
        frame = next(container.decode(video=0))
    columns = 3 if enhance else 2  # original | recovered (| enhanced)
    assert frame.width == columns * 128 + (columns - 1) * 4
    enhanced = tmp_path / "out" / "enhanced"
    assert enhanced.is_dir() == bool(enhance)
    if enhance:
        assert load_png(enhanced / frame_name("cam0", 1)).shape == (3, 128, 128)
        metrics = json.loads((enhanced / "metrics.json").read_text())
        assert metrics["summary"]["table1"]["enhanced_vs_high"]["ssim"] is not None


# --- bad input: one line, exit 2 ---

@register
class TwoRefs(Enhancer):
    """A test method that takes many references and returns bicubic."""

    name = "test-many-refs"
    refs = "many"

    def forward(self, low: torch.Tensor, refs: torch.Tensor | None) -> torch.Tensor:
        return torch.nn.functional.interpolate(low, scale_factor=self.scale, mode="bicubic")


def bad_weights(tmp_path: Path) -> dict[str, Path]:
    """Weight files each loader must refuse."""
    files = {"garbage.pth": b"not a checkpoint at all", "garbage.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{bad"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)

    class Evil:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    torch.save({"w": Evil()}, tmp_path / "evil.pth", _use_new_zipfile_serialization=True, pickle_module=pickle)
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "unknown.pth")
    return {name: tmp_path / name for name in (*files, "evil.pth", "unknown.pth")}


@pytest.mark.parametrize("case, reason", [
    ("empty folder", "no frames named"),
    ("mismatched truth", "no truth frame"),
    ("reference of another size", "needs 64x64"),
    ("references of two sizes", "must share one size"),
    ("references for a no-reference method", "uses no reference"),
    ("garbage.pth", "cannot read weights"),
    ("garbage.safetensors", "cannot read weights"),
    ("evil.pth", "cannot read weights"),
    ("unknown.pth", "recognises no"),
    ("noref without weights", "needs --weights"),
    ("train-sr no source", "no such file"),
    ("unknown method", "unknown enhancement method"),
])
def test_bad_input_gives_one_line_and_exit_2(case: str, reason: str, tmp_path: Path, capsys) -> None:
    low = write_frames(tmp_path / "low")
    (tmp_path / "empty").mkdir()
    write_frames(tmp_path / "other", stream="cam9")
    save_png(tmp_path / "ref32.png", scene(0, 32))
    save_png(tmp_path / "ref64.png", scene(0, 64))
    weights = bad_weights(tmp_path)
    base = ["enhance", "--in", str(low), "--out", str(tmp_path / "out"), "--device", "cpu"]
    argv = {
        "empty folder": ["enhance", "--in", str(tmp_path / "empty"), "--method", "bicubic", "--out", str(tmp_path / "o")],
        "mismatched truth": base + ["--method", "bicubic", "--truth", str(tmp_path / "other")],
        "reference of another size": base + ["--method", "test-many-refs", "--refs", str(tmp_path / "ref32.png")],
        "references of two sizes": base + ["--method", "test-many-refs", "--refs", str(tmp_path / "ref32.png"),
                                           str(tmp_path / "ref64.png")],
        "references for a no-reference method": base + ["--method", "bicubic", "--refs", str(tmp_path / "ref64.png")],
        "noref without weights": base + ["--method", "noref"],
        "train-sr no source": ["train-sr", "--source", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "m"),
                               "--steps", "1", "--device", "cpu"],
        "unknown method": base + ["--method", "esrgan9000"],
    }.get(case, base + ["--method", "noref", "--weights", str(weights.get(case, ""))])
    code, err = run(argv, capsys)
    assert code == 2 and reason in err and len(err.strip().splitlines()) == 1, err
    assert "pickled code ran" not in capsys.run_out
