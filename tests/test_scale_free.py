"""A trained model's gradients shrink by orders of magnitude; the attacks' success and stopping rules
must not (an absolute loss < 1e-5 passes frames that were never recovered)."""
import pytest
import torch

from adversary.attacks import build_attack
from adversary.gradient import GradientCase
from splitleak import learning
from splitleak.models import build_split_model

SIZE = 16


def saturated_case(scale: float) -> GradientCase:
    """lenet whose classifier is `scale` times as confident: the same frame, a gradient ~1/scale as large."""
    model = build_split_model("lenet", "none", size=SIZE)
    module = model.tail
    torch.manual_seed(0)
    x, y = torch.rand(1, 3, SIZE, SIZE), torch.tensor([3])
    with torch.no_grad():  # push the logit of class 3 up: softmax saturates, the gradient shrinks
        last = module.classifier[-1]
        last.bias[3] += scale
    grads = learning.gradients(module, x, y)
    return GradientCase(module, grads, 1, (3, SIZE, SIZE), 10, y, seed=0)


@pytest.mark.parametrize("name", ["idlg", "idlg-batched"])
def test_the_relative_rule_does_not_pass_an_unrecovered_frame_of_a_saturated_model(name):
    case = saturated_case(16.0)
    norm = float(case.gradient_norm2()) ** 0.5
    assert norm < 1e-3, "the set-up must shrink the gradient"
    absolute = build_attack(name, iterations=1, options={"restarts": 1}).reconstruct(case)
    relative = build_attack(name, iterations=1, options={"restarts": 1, "relative": True}).reconstruct(case)
    assert bool(absolute.success[0]), "an absolute 1e-5 is met by a tiny gradient after one step"
    assert not bool(relative.success[0]), "relative to the gradient's norm one step is far from a match"
    # the relative loss is the absolute one over the gradient's squared norm (same start, same objective up to scale)
    assert float(relative.loss[0]) > float(absolute.loss[0])


def test_relative_loss_is_the_l2_distance_over_the_squared_norm():
    from adversary.gradient.batched import BatchedGradientCase, FrameMatching
    case = BatchedGradientCase.from_cases([saturated_case(0.0), saturated_case(6.0)])
    z = torch.randn(2, 3 * SIZE * SIZE)
    rows = torch.arange(2)
    absolute, _ = FrameMatching(case, case.labels)(z, rows)
    relative, _ = FrameMatching(case, case.labels, relative=True)(z, rows)
    norm2 = torch.stack([sum(g[i].pow(2).sum() for g in case.gradients.values()) for i in range(2)])
    assert torch.allclose(relative, absolute / norm2, rtol=1e-5)
