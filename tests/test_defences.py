"""Edge defences (edge.defences): parsing, what each does to a tensor or an update, Opacus's epsilon."""
from __future__ import annotations

import pytest
import torch

from edge.defences import ClipNoise, clip_update, parse_defence, prune_top_k
from splitleak.errors import SplitleakError


@pytest.mark.parametrize("text, message", [
    ("blur:sigma=1", "unknown defence 'blur'"),
    ("noise:sigma=-1", "sigma must be >= 0"),
    ("noise:alpha=1", "bad parameter 'alpha=1'"),
    ("noise:sigma=abc", "sigma='abc' is not a number"),
    ("subsample:keep=0", "keep must be an integer >= 1"),
    ("topk:ratio=0", "ratio must be within (0, 1]"),
])
def test_bad_specs_are_one_line_errors_naming_the_parameter(text: str, message: str) -> None:
    with pytest.raises(SplitleakError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_defence(text)


def test_a_defence_refuses_a_mode_it_cannot_serve() -> None:
    with pytest.raises(SplitleakError, match="applies to --mode fedsgd, not infer"):
        parse_defence("clip:norm=1,sigma=1", mode="infer")
    with pytest.raises(SplitleakError, match="applies to --mode infer"):
        parse_defence("subsample:keep=2", mode="fedsgd")


def test_feature_noise_scales_with_the_features_and_is_seeded() -> None:
    z = torch.randn(1, 16, 8, 8) * 5
    a, b = parse_defence("noise:sigma=0.5", seed=3), parse_defence("noise:sigma=0.5", seed=3)
    noisy = a.features(z)
    assert torch.equal(noisy, b.features(z))
    ratio = float((noisy - z).pow(2).mean().sqrt() / z.pow(2).mean().sqrt())
    assert 0.4 < ratio < 0.6
    assert torch.equal(parse_defence("noise:sigma=0").features(z), z)


def test_subsample_keeps_every_nth_frame() -> None:
    keep = parse_defence("subsample:keep=3")
    assert [i for i in range(10) if keep.keep_frame(i)] == [0, 3, 6, 9]
    assert all(parse_defence("none").keep_frame(i) for i in range(5))


def test_top_k_keeps_the_largest_magnitudes() -> None:
    t = torch.tensor([0.1, -5.0, 0.3, 2.0, -0.2, 0.0, 4.0, 1.0])
    assert torch.equal(prune_top_k(t, 0.25), torch.tensor([0, -5.0, 0, 0, 0, 0, 4.0, 0]))
    assert torch.equal(parse_defence("topk:ratio=1").features(t), t)


def test_clip_update_bounds_the_norm_over_all_tensors() -> None:
    update = {"w": torch.full((3,), 4.0), "b": torch.tensor([3.0])}  # norm sqrt(49) = 7
    clipped = clip_update(update, 1.0)
    norm = sum(float(g.pow(2).sum()) for g in clipped.values()) ** 0.5
    assert norm == pytest.approx(1.0)
    assert torch.allclose(clipped["w"] / clipped["b"], update["w"] / update["b"])  # direction kept
    assert clip_update(update, 10.0)["w"].equal(update["w"])


def test_dp_sgd_clips_each_example_adds_noise_and_reports_opacus_epsilon() -> None:
    """Without noise the update is the mean of per-example gradients each clipped to the norm;
    with noise the accountant's epsilon is Opacus's for those steps."""
    from opacus.accountants import RDPAccountant

    grads = {0: {"w": torch.tensor([10.0, 0.0])}, 1: {"w": torch.tensor([0.0, 0.5])}}

    def gradients_of(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return grads[int(x[0])]

    exact = parse_defence("clip:norm=1,sigma=0", mode="fedsgd")
    out = exact.update(torch.tensor([0.0, 1.0]), torch.zeros(2), gradients_of)
    assert torch.allclose(out["w"], torch.tensor([0.5, 0.25]))
    assert exact.epsilon() is None  # no noise, no guarantee

    noisy = parse_defence("clip:norm=1,sigma=1.2,delta=1e-4", mode="fedsgd")
    assert isinstance(noisy, ClipNoise)
    noisy.sample_rate = 0.25
    for _ in range(4):
        noisy.update(torch.tensor([0.0, 1.0]), torch.zeros(2), gradients_of)
    reference = RDPAccountant()
    for _ in range(4):
        reference.step(noise_multiplier=1.2, sample_rate=0.25)
    report = noisy.report()
    assert report["epsilon"] == pytest.approx(reference.get_epsilon(1e-4))
    assert report["delta"] == 1e-4 and report["steps"] == 4 and report["epsilon"] > 0
