"""Reference-based super-resolution (ref1 / refs): the texture search, the fusion, its weights."""
import pytest
import torch
import torch.nn.functional as F

from adversary.enhance.degrade import DegradeConfig
from adversary.enhance.methods import get_method
from adversary.enhance.ref_model import (RefConfig, degrade, find_texture, hard_soft_attention, match_embedding,
                                         transfer, upsample)
from adversary.enhance.reference import RefPicking, fit_reference
from adversary.enhance.training import TrainSpec
from splitleak.errors import SplitleakError

PLAIN = DegradeConfig(plain_prob=1.0, inversion_prob=0.0)  # area downscale only: the tests' recovered frames

SCALE, HIGH = 4, 64  # tiny frames: 16 -> 64


def scene(seed: int, size: int = HIGH) -> torch.Tensor:
    """A textured frame (1, 3, size, size): smooth colour blobs plus fine detail bicubic cannot recover."""
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=size, mode="bilinear", align_corners=False)
    fine = torch.rand(1, 3, size, size, generator=g)
    return (0.6 * coarse + 0.4 * fine).clamp(0, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / F.mse_loss(a, b)))


def test_hard_attention_finds_the_shifted_patch_in_the_right_reference():
    a, b = scene(1), scene(2)
    target = torch.roll(b, shifts=(2 * SCALE, 3 * SCALE), dims=(2, 3))  # b moved by (2, 3) grid cells
    low = degrade(target, SCALE)
    refs = torch.cat([a, b])
    query = match_embedding(upsample(low, SCALE), SCALE, 3)
    keys = match_embedding(upsample(degrade(refs, SCALE), SCALE), SCALE, 3)
    index, best = hard_soft_attention(query, keys)
    side = HIGH // SCALE
    ref, pos = index[0] // side**2, index[0] % side**2
    y, x = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    inner = ((y >= 3) & (y < side - 1) & (x >= 4) & (x < side - 1)).flatten()  # away from the roll's seam
    assert (ref[inner] == 1).all()
    assert torch.equal(pos[inner], ((y - 2) * side + (x - 3)).flatten()[inner])
    assert best[0, inner].min() > 0.99


def test_transfer_with_identity_index_rebuilds_the_reference():
    ref = scene(3)
    side = HIGH // SCALE
    out = transfer(ref, torch.arange(side * side)[None], SCALE, 3)
    assert torch.allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("method", ["ref1", "refs"])
def test_a_reference_equal_to_the_truth_beats_bicubic(method):
    truth = scene(4)
    low = degrade(truth, SCALE)
    out = get_method(method)(scale=SCALE).enhance(low, truth)
    bicubic = get_method("bicubic")(scale=SCALE).enhance(low)
    assert psnr(out, truth) > psnr(bicubic, truth) + 10


def test_refs_searches_every_reference_ref1_only_the_first():
    a, b = scene(5), scene(6)
    truth = torch.cat([a[..., :HIGH // 2], b[..., HIGH // 2:]], dim=3)  # left half from a, right from b
    low = degrade(truth, SCALE)
    refs = torch.cat([a, b])
    one = get_method("ref1")(scale=SCALE).enhance(low, refs)
    many = get_method("refs")(scale=SCALE).enhance(low, refs)
    right = (..., slice(HIGH // 2 + 8, None))
    assert psnr(many[right], truth[right]) > psnr(one[right], truth[right]) + 5


def clip(seed: int, frames: int = 4) -> torch.Tensor:
    """A panning shot: one wide textured scene seen through a moving window."""
    wide = scene(seed, size=HIGH + 4 * frames)
    return torch.cat([wide[..., :HIGH, 4 * i:4 * i + HIGH] for i in range(frames)])


def tiny_spec(out, steps: int = 6) -> TrainSpec:
    return TrainSpec(source="clips", out=str(out), scale=SCALE, patch=None, steps=steps, batch=2, lr=5e-4,
                     progress=False)


def test_after_a_few_training_steps_the_trained_fusion_beats_bicubic(tmp_path):
    weights = tmp_path / "ref"
    config = fit_reference([clip(7), clip(8)], tiny_spec(weights), RefConfig(channels=8, blocks=1),
                           RefPicking(max_refs=2, min_gap=1), PLAIN)
    assert (weights / "model.safetensors").is_file() and config["training"]["steps"] == 6
    assert config["method"] == "ref" and config["net"]["channels"] == 8
    truth = clip(9)
    low = degrade(truth, SCALE)
    method = get_method("refs")(scale=SCALE, weights=str(weights))
    out = method.enhance(low[1:2], truth[[0, 2]])  # neighbours of the frame, never the frame itself
    bicubic = get_method("bicubic")(scale=SCALE).enhance(low[1:2])
    assert out.shape == (1, 3, HIGH, HIGH)
    assert psnr(out, truth[1:2]) > psnr(bicubic, truth[1:2]) + 1


def test_find_texture_confidence_is_the_best_relevance():
    truth = scene(10)
    t = find_texture(degrade(truth, SCALE), truth, SCALE, 3)
    assert t.confidence.shape == (1, 1, HIGH, HIGH) and t.confidence.max() <= 1 + 1e-5
    assert t.confidence.mean() > 0.95


def test_bad_inputs_are_one_line_errors(tmp_path):
    low = torch.rand(2, 3, 16, 16)
    with pytest.raises(SplitleakError, match="needs reference frames"):
        get_method("refs")(scale=SCALE).enhance(low)
    with pytest.raises(SplitleakError, match="needs 64x64"):
        get_method("ref1")(scale=SCALE).enhance(low, torch.rand(1, 3, 32, 32))
    good = tmp_path / "good"
    fit_reference([clip(7)], tiny_spec(good, steps=1), RefConfig(channels=8, blocks=1), RefPicking(1, 1), PLAIN)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text((good / "config.json").read_text())
    (corrupt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "config.json").write_text((good / "config.json").read_text().replace('"channels": 8', '"channels": 9'))
    (wrong / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes())
    cases = [(corrupt, "cannot read weights"), (tmp_path / "missing", "is not found"),
             (good / "model.safetensors", "must be a train-sr folder"), (wrong, "do not fit the model")]
    for path, message in cases:
        with pytest.raises(SplitleakError, match=message) as err:
            get_method("refs")(weights=str(path))
        assert "\n" not in str(err.value)
