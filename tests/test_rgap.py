"""R-GAP: closed-form recovery through cnn6 on a real frame, and the rank report that says where
recovery cannot be unique."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adversary.gradient.base import GradientCase
from adversary.gradient.rgap import RGAP, chain, format_rank_report, label_from_rank_one, rank_report, solve_normal
from adversary.metrics import psnr
from adversary.registry import get_attack
from splitleak import learning
from splitleak.errors import SplitleakError
from splitleak.models import build_split_model
from splitleak.video import open_source, to_model_input


@pytest.fixture(scope="module")
def frame() -> torch.Tensor:
    with open_source("sample:bikes", frames=1) as source:
        image = next(iter(source)).image
    return torch.from_numpy(to_model_input(image, 32)).unsqueeze(0)


def _case(module: nn.Module, x: torch.Tensor, label: int, labels: bool = True, num_classes: int = 10) -> GradientCase:
    y = torch.tensor([label])
    grads = learning.gradients(module, x, y)
    return GradientCase(module, grads, 1, tuple(x.shape[1:]), num_classes, labels=y if labels else None)


@pytest.mark.slow
def test_rgap_recovers_a_real_frame_through_cnn6(frame):
    model = build_split_model("cnn6", "none", weights="seed:0")
    result = get_attack("rgap")().reconstruct(_case(model.tail, frame, 3, labels=False))
    assert result.labels.tolist() == [3]  # the label from the rank-1 last-layer gradient
    assert result.inputs.shape == (1, 3, 32, 32)
    assert psnr(result.inputs[0].numpy(), frame[0].numpy()) >= 40.0
    assert bool(result.success[0]) and float(result.loss[0]) < 1e-5
    report = result.extra["rank_report"]
    assert [r["layer"] for r in report] == [f"conv{i}.0" for i in range(1, 7)] + ["classifier.1"]
    assert all(r["unique"] and r["rank"] == r["unknowns"] for r in report)
    assert report[0]["unknowns"] == 3 * 32 * 32 and report[0]["equations"] == 12 * 48 + 12 * 17 * 17


def _narrow(seed: int = 0) -> nn.Sequential:
    """A first layer with too few equations: 2 output channels at stride 2 for 3x8x8 = 192 unknowns."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 2, 3, stride=2, padding=1, bias=False), nn.LeakyReLU(0.2),
                         nn.Flatten(1), nn.Linear(2 * 4 * 4, 10, bias=False)).eval()


def test_rank_report_flags_an_under_determined_layer():
    report = rank_report(_narrow(), (3, 8, 8))
    conv, fc = report
    assert conv["unknowns"] == 192 and conv["equations"] == 2 * 27 + 2 * 16
    assert conv["rank"] <= conv["equations"] < conv["unknowns"] and not conv["unique"]
    assert fc["unique"] and fc["unknowns"] == 32
    assert "NO" in format_rank_report(report).splitlines()[1]
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    result = RGAP().reconstruct(_case(_narrow(), x, 4))
    assert not bool(result.success[0]) and not result.extra["unique"]


def test_rgap_through_biased_sigmoid_layers():
    """lenet-style layers with biases and sigmoids: the bias gradients make the last layers exact."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 12, 5, stride=2, padding=2), nn.Sigmoid(),
                           nn.Flatten(1), nn.Linear(12 * 8 * 8, 32), nn.Sigmoid(), nn.Linear(32, 10)).eval()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    result = RGAP().reconstruct(_case(module, x, 7, labels=False))
    assert result.labels.tolist() == [7] and all(r["unique"] for r in result.extra["rank_report"])
    assert psnr(result.inputs[0].numpy(), x[0].numpy()) >= 40.0


def test_solve_normal_rank_and_solution():
    a = torch.randn(40, 25, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = torch.randn(25, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    solution, rank = solve_normal(a.T @ a, a.T @ (a @ x))
    assert rank == 25 and torch.allclose(solution, x, atol=1e-9)
    low = a[:10]
    solution, rank = solve_normal(low.T @ low, low.T @ (low @ x))
    assert rank == 10 and torch.allclose(low @ solution, low @ x, atol=1e-9)


def test_label_from_rank_one_gradient():
    h = torch.randn(50, dtype=torch.float64)  # signs mixed, as after a leaky ReLU
    g = torch.softmax(torch.randn(10, dtype=torch.float64), 0) - torch.nn.functional.one_hot(torch.tensor(6), 10)
    assert label_from_rank_one(torch.outer(g, h)) == 6


def test_bad_inputs():
    with pytest.raises(SplitleakError, match="cannot invert"):
        chain(nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), nn.Flatten(1), nn.Linear(4 * 3 * 3, 10)), (3, 8, 8))
    with pytest.raises(SplitleakError, match="ends in a Linear"):
        chain(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sigmoid()), (3, 8, 8))
    module = _narrow()
    x = torch.rand(2, 3, 8, 8)
    case = GradientCase(module, learning.gradients(module, x, torch.tensor([1, 2])), 2, (3, 8, 8), 10)
    with pytest.raises(SplitleakError, match="batch size 1"):
        RGAP().reconstruct(case)


def test_rgap_config_presets_and_no_run_state():
    for options, message in (({"iterations": 5}, "unknown option 'iterations'"),
                             ({"rcond": "tiny"}, r"option rcond='tiny': expected a number"),
                             ({"rcond": 0.0}, r"rcond must be in \(0, 1\)")):
        with pytest.raises(SplitleakError, match=message) as err:
            RGAP(**options)
        assert "\n" not in str(err.value)
    assert RGAP.from_options("paper").config == RGAP().config  # a closed form: nothing to tune
    assert RGAP(threshold=1e-3).loss_threshold == 1e-3 and RGAP().describe() == {"rcond": 1e-10, "threshold": 1e-5}
    attack, module = RGAP(), _narrow()
    before = dict(attack.__dict__)
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    attack.reconstruct(_case(module, x, 4))
    assert attack.__dict__ == before and attack.__dict__["config"] is before["config"]
