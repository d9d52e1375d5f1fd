"""The attacker's copy of a model is made twice differentiable with the same values (hardsigmoid,
fused attention), without touching any other model of the process."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import VisionTransformer

from adversary.gradient.second_order import MathAttention, Relu6Hardsigmoid, twice_differentiable
from adversary.runner.meta import HeadKey
from adversary.runner.updates import Models
from splitleak.models import build_split_model


def double_backward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What every gradient attack does: the gradient of a gradient distance w.r.t. the input."""
    x = x.clone().requires_grad_(True)
    params = [p for p in module.parameters() if p.requires_grad]
    loss = F.cross_entropy(module(x), torch.zeros(len(x), dtype=torch.long))
    grads = torch.autograd.grad(loss, params, create_graph=True)
    (dx,) = torch.autograd.grad(sum(g.pow(2).sum() for g in grads), x)
    return dx


def test_relu6_hardsigmoid_has_hardsigmoids_values_and_a_second_derivative():
    x = torch.cat([torch.linspace(-8, 8, 100_001), torch.randn(10_000) * 5, torch.tensor([-3.0, 3.0, 0.0])])
    assert torch.equal(Relu6Hardsigmoid()(x), F.hardsigmoid(x))
    y = x[:50].clone().requires_grad_(True)
    with pytest.raises(RuntimeError, match="hardsigmoid_backward"):
        (g,) = torch.autograd.grad(F.hardsigmoid(y * y).sum(), y, create_graph=True)
        g.sum().backward()
    (g,) = torch.autograd.grad(Relu6Hardsigmoid()(y * y).sum(), y, create_graph=True)
    g.sum().backward()
    assert torch.isfinite(y.grad).all()


def test_hardswish_needs_no_rewrite():
    y = torch.randn(50, requires_grad=True)
    (g,) = torch.autograd.grad(F.hardswish(y).sum(), y, create_graph=True)
    g.sum().backward()  # torch has hardswish's double backward: mobilenet's Hardswish is kept
    inside = (y.abs() < 3).detach()
    assert torch.allclose(y.grad[inside], torch.full_like(y.grad[inside], 1 / 3))


def test_the_attackers_mobilenet_matches_and_double_backwards(one_thread):
    edge = build_split_model("mobilenet_v3_small", "none", size=32, weights="seed:0").tail.eval()
    key = HeadKey("mobilenet_v3_small", "none", 32, "seed:0", 1000)
    attacker = Models("cpu", None).model(key).tail.eval()
    assert not any(type(m) is nn.Hardsigmoid for m in attacker.modules())
    assert any(type(m) is nn.Hardsigmoid for m in edge.modules())  # another copy keeps its modules
    assert nn.Hardsigmoid.forward is not Relu6Hardsigmoid.forward  # no class is patched
    assert attacker.state_dict().keys() == edge.state_dict().keys()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(attacker(x), edge(x), rtol=0, atol=1e-7)
    with pytest.raises(RuntimeError, match="hardsigmoid_backward"):
        double_backward(edge, x)
    assert torch.isfinite(double_backward(attacker, x)).all()


def tiny_vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16,
                             num_classes=10).eval()


def test_attention_runs_on_the_math_kernel_with_the_same_parameters():
    vit, x = tiny_vit(), torch.rand(2, 3, 32, 32)
    with pytest.raises(RuntimeError, match="is not implemented"):
        double_backward(vit, x)  # CPU's fused (flash) attention kernel has no double backward
    with torch.no_grad():
        before = vit(x)
    params = dict(vit.named_parameters())
    twice_differentiable(vit)
    assert sum(type(m) is MathAttention for m in vit.modules()) == 2
    assert all(p is params[n] for n, p in vit.named_parameters()) and len(params) == len(list(vit.parameters()))
    with torch.no_grad():
        assert torch.allclose(vit(x), before, rtol=0, atol=1e-6)
    assert torch.isfinite(double_backward(vit, x)).all()
    assert type(tiny_vit().encoder.layers[0].self_attention) is nn.MultiheadAttention  # a fresh copy is untouched
