"""The multi-frame `video` method: alignment, the neighbours it uses, training and weights."""
import dataclasses

import pytest
import torch

from adversary.enhance.methods import get_method
from adversary.enhance.ref_model import degrade
from adversary.enhance.video import VideoConfig, aligned_window, fit_video, flow, grey, warp
from splitleak.errors import SplitleakError
from tests.test_enhance_ref import PLAIN, SCALE, clip, psnr, scene, tiny_spec


def test_zero_flow_warp_is_the_identity_and_flow_finds_a_shift():
    x = scene(1)
    assert torch.allclose(warp(x, torch.zeros(1, 64, 64, 2)), x, atol=1e-5)
    smooth = torch.nn.functional.avg_pool2d(scene(2, 72), 5, 1, 2)
    a, b = smooth[..., 4:68, 4:68], smooth[..., 4:68, 6:70]  # b = a moved 2 px left
    f = flow(grey(a)[0], grey(b)[0])
    assert abs(float(f[16:48, 16:48, 0].mean()) + 2) < 0.5 and abs(float(f[16:48, 16:48, 1].mean())) < 0.5


def test_aligned_window_puts_the_centre_in_the_middle_and_clamps_the_ends():
    up = torch.rand(3, 3, 32, 32)
    w = aligned_window(up, 1)
    assert w.shape == (3, 3, 3, 32, 32)
    assert torch.equal(w[0, 1], up[0]) and torch.equal(w[0, 0], up[0])  # before the first frame: itself


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "video"
    config = fit_video([clip(3, 6), clip(4, 6)], tiny_spec(path, steps=4), VideoConfig(radius=1, channels=8, blocks=1),
                       PLAIN)
    assert config["training"]["steps"] == 4 and config["method"] == "video"
    return str(path)


def test_video_output_depends_on_neighbours_within_its_radius(weights):
    method = get_method("video")(scale=SCALE, weights=weights)
    assert method.temporal and method.radius == 1
    low = degrade(clip(5, 5), SCALE)
    base = method.enhance(low)
    near = low.clone()
    near[3] = (near[3] + 0.05 * torch.randn_like(near[3])).clamp(0, 1)  # neighbour of frame 2
    far = low.clone()
    far[4] = (far[4] + 0.05 * torch.randn_like(far[4])).clamp(0, 1)  # two frames from frame 2
    assert not torch.allclose(method.enhance(near)[2], base[2], atol=1e-4)
    assert torch.equal(method.enhance(far)[2], base[2])


def test_untrained_video_averages_agreeing_neighbours():
    truth = clip(6, 1).repeat(5, 1, 1, 1)  # a static shot
    g = torch.Generator().manual_seed(0)
    low = (degrade(truth, SCALE) + 0.03 * torch.randn(5, 3, 16, 16, generator=g)).clamp(0, 1)
    out = get_method("video")(scale=SCALE).enhance(low)
    single = get_method("bicubic")(scale=SCALE).enhance(low)
    clean = degrade(truth[2:3], SCALE)  # the inversion noise is what averaging removes: compare at low res
    assert psnr(degrade(out[2:3], SCALE), clean) > psnr(degrade(single[2:3], SCALE), clean) + 2


def test_a_reference_model_folder_is_not_a_video_model(tmp_path):
    from adversary.enhance.ref_model import RefSR
    from adversary.enhance.training import save_model

    save_model(tmp_path / "ref", RefSR(), {"method": "ref", "net": {}})
    with pytest.raises(SplitleakError, match="holds a 'ref' model, not a 'video' one"):
        get_method("video")(weights=str(tmp_path / "ref"))


def test_trained_video_starts_from_the_analytic_fusion(tmp_path):
    low = degrade(clip(5, 5), SCALE)
    fit_video([clip(3, 6)], tiny_spec(tmp_path / "v", steps=1), VideoConfig(radius=1, channels=8, blocks=1), PLAIN)
    trained = get_method("video")(scale=SCALE, weights=str(tmp_path / "v")).enhance(low)
    video = get_method("video")(scale=SCALE)
    video.radius = video.context = 1
    untrained = video.enhance(low)
    assert (trained - untrained).abs().mean() < 0.02  # one step moves it a little, from the analytic start


@pytest.mark.parametrize("method, trainer", [("refs", "ref"), ("video", "video")])
def test_train_sr_trains_ref_and_video_into_folders_enhance_loads(method, trainer, tmp_path, capsys):
    from splitleak.cli.main import main
    from splitleak.video import frame_name, save_png

    model = tmp_path / "model"
    assert main(["train-sr", "--method", trainer, "--source", "synthetic:64x64", "--out", str(model), "--size", "64",
                 "--patch", "32", "--steps", "2", "--batch", "2", "--frames", "6", "--device", "cpu"]) == 0
    low = tmp_path / "low"
    for seq, frame in enumerate(degrade(clip(2, 3), SCALE)):
        save_png(low / frame_name("cam0", seq), frame.numpy())
    refs = ["--refs", str(tmp_path / "ref.png")] if trainer == "ref" else []
    save_png(tmp_path / "ref.png", clip(2, 1)[0].numpy())
    capsys.readouterr()
    assert main(["enhance", "--in", str(low), "--method", method, "--weights", str(model), *refs,
                 "--out", str(tmp_path / "up"), "--device", "cpu"]) == 0
    assert (tmp_path / "up" / frame_name("cam0", 2)).is_file()
    other, other_refs = ("video", []) if trainer == "ref" else ("refs", ["--refs", str(tmp_path / "ref.png")])
    assert main(["enhance", "--in", str(low), "--method", other, "--weights", str(model), *other_refs,
                 "--out", str(tmp_path / "up2"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    wanted = "ref" if other == "refs" else "video"
    assert f"holds a '{trainer}' model, not a '{wanted}' one" in err and "\n" not in err


@pytest.fixture(scope="module")
def noref_folder(tmp_path_factory):
    from adversary.enhance.noref import train_noref
    from adversary.enhance.rrdb import RRDBConfig

    path = tmp_path_factory.mktemp("noref") / "noref"
    train_noref(tiny_spec(path, steps=2), RRDBConfig(num_feat=8, num_block=1), PLAIN, frames=clip(7, 6))
    return str(path)


def test_video_over_a_noref_base_starts_from_noref_and_carries_it_inside(noref_folder, tmp_path):
    low = degrade(clip(5, 5), SCALE)
    fit_video([clip(3, 6)], tiny_spec(tmp_path / "v", steps=1), VideoConfig(radius=1, channels=8, blocks=1), PLAIN,
              base=noref_folder)
    noref = get_method("noref")(scale=SCALE, weights=noref_folder).enhance(low)
    video = get_method("video")(scale=SCALE, weights=str(tmp_path / "v")).enhance(low)
    assert (video - noref).abs().mean() < 0.02  # one step from noref's own output (the residual starts at 0)
    bicubic_start = get_method("video")(scale=SCALE)
    bicubic_start.radius = bicubic_start.context = 1
    assert (bicubic_start.enhance(low) - noref).abs().mean() > 2 * (video - noref).abs().mean()


def test_video_base_must_be_a_noref_folder_of_the_same_scale(noref_folder, tmp_path, capsys):
    from splitleak.cli.main import main

    from adversary.enhance.ref_model import RefSR
    from adversary.enhance.training import save_model

    save_model(tmp_path / "ref", RefSR(), {"method": "ref", "net": {}})
    with pytest.raises(SplitleakError, match="holds a 'ref' model, not a 'noref' one"):
        fit_video([clip(3, 6)], tiny_spec(tmp_path / "v", steps=1), VideoConfig(radius=1), PLAIN,
                  base=str(tmp_path / "ref"))
    with pytest.raises(SplitleakError, match="upscales x4, not x2"):
        fit_video([clip(3, 6)], dataclasses.replace(tiny_spec(tmp_path / "v2", steps=1), scale=2), VideoConfig(radius=1), PLAIN,
                  base=noref_folder)
    assert main(["train-sr", "--method", "ref", "--base", noref_folder, "--source", "synthetic:64x64",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--base is for --method video" in capsys.readouterr().err
