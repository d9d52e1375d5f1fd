"""Holding the output error over several FedAvg local steps: the wire's last-layer bias pseudo-gradient is
the sum of the steps' output errors (batch 1), and the attacks pin the dummy's steps' errors to it
(local.held_errors), exact at the true frame, as the one-step rule holds the error itself."""

from __future__ import annotations

import pytest
import torch

import adversary.gradient  # noqa: F401  (registers the attacks)
from adversary.gradient import GradientCase
from adversary.gradient.base import error_gradients, gradient_distance_l2, output_error
from adversary.gradient.batched import BatchedGradientCase, FrameMatching
from adversary.gradient.local import LocalTraining, held_errors
from tests.test_fedavg_attacks import LR, SIZE, fedavg_case

pytestmark = pytest.mark.usefixtures("one_thread")


def test_held_errors_sum_to_the_wire_and_leave_a_matching_dummy_alone():
    own = [torch.tensor([-0.3, 0.1, 0.2]), torch.tensor([-0.2, 0.05, 0.15])]
    total = torch.tensor([-0.4, 0.1, 0.3])
    held = held_errors(own, total)
    torch.testing.assert_close(sum(held), total)
    torch.testing.assert_close(held[1] - held[0], own[1] - own[0])  # the dummy's own drift between steps
    assert all(torch.equal(h, o) for h, o in zip(held_errors(own, sum(own)), own))


@pytest.mark.parametrize("steps", [2, 3])
def test_the_output_error_of_several_steps_is_their_sum(steps):
    case, x = fedavg_case(steps=steps)
    error = output_error(case)
    assert error is not None and int(error.argmin()) == int(case.labels[0])
    assert float(error.sum()) == pytest.approx(0.0, abs=1e-5)  # each step's softmax - onehot sums to 0


@pytest.mark.parametrize("steps", [2, 3])
def test_pinned_errors_match_the_wire_exactly_at_the_true_frame(steps):
    case, x = fedavg_case(steps=steps)
    truth = [case.gradients[n] for n in case.names]
    pinned = error_gradients(case, x, output_error(case), create_graph=False, labels=case.labels)
    assert float(gradient_distance_l2(pinned, truth)) < 1e-9 * float(case.gradient_norm2())
    # a wrong frame does not match
    # its own generator: the global one may sit at seed 0 after another test, which would redraw x itself
    other_x = torch.rand(x.shape, generator=torch.Generator().manual_seed(99))
    other = error_gradients(case, other_x, output_error(case), create_graph=False, labels=case.labels)
    assert float(gradient_distance_l2(other, truth)) > 1e-3 * float(case.gradient_norm2())


def test_the_batched_pinned_objective_equals_the_sequential_one():
    cases = [fedavg_case(steps=2, seed=s, weights=s)[0] for s in (0, 1)]
    batched = BatchedGradientCase.from_cases(cases)
    z = torch.rand(2, 3 * SIZE * SIZE, generator=torch.Generator().manual_seed(99))  # not a frame of the cases
    matching = FrameMatching(batched, batched.labels, True, 1.0, output_error(batched))
    assert matching.pinned
    together = matching(z, torch.arange(2))[0]
    alone = torch.cat([matching(z[i:i + 1], torch.tensor([i]))[0] for i in range(2)])  # the one-row path
    expected = []
    for i, case in enumerate(cases):
        dummy = error_gradients(case, z[i].view(1, 3, SIZE, SIZE), output_error(case), create_graph=False,
                                labels=case.labels)
        expected.append(gradient_distance_l2(dummy, case.gradients) / case.gradient_norm2())
    torch.testing.assert_close(together, torch.stack(expected), rtol=1e-4, atol=0)
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=0)


def test_several_steps_hold_their_error_only_with_a_label():
    case, x = fedavg_case(steps=2)
    with pytest.raises(Exception, match="label"):
        error_gradients(case, x, output_error(case))
    assert case.local == LocalTraining(2, LR)


@pytest.fixture(scope="module")
def saturated_two_step():
    """lenet at 16 px trained by 2-step FedAvg updates (lr 0.1) on 15 frames of one label, the edge's default
    stream: p_y 0.999, the update 1/600 of round 0's; returns (the 16th frame's 2-step case, that frame)."""
    from splitleak import learning
    from splitleak.models import build_split_model
    from splitleak.video import open_source, to_model_input
    from adversary.gradient.local import unrolled_gradients

    with open_source("sample:bikes", frames=16) as source:
        frames = [torch.from_numpy(to_model_input(f.image, SIZE))[None] for f in source]
    module, y = build_split_model("lenet", "none", size=SIZE, weights="seed:0").tail, torch.tensor([0])
    names, local = learning.parameter_names(module), LocalTraining(2, 0.1)
    for x in frames[:15]:
        update = unrolled_gradients(module, x, y, names, local, create_graph=False)
        with torch.no_grad():
            for name, p in module.named_parameters():
                p -= local.lr * update[name]
    update = unrolled_gradients(module, frames[15], y, names, local, create_graph=False)
    case = GradientCase(module, update, 1, (3, SIZE, SIZE), 10, y, seed=0, local=local)
    assert float(case.gradient_norm2()) ** 0.5 < 0.05, "the set-up must saturate the model"
    return case, frames[15]


@pytest.mark.slow
def test_a_saturated_models_two_step_update_is_recovered_with_the_held_error(saturated_two_step):
    """The dummy's own errors (the rule before) stall far from the frame; pinned to the wire's sum they reach it
    (measured at 15 iterations: 21.6 dB, loss 8e-6, against 46.1 dB, loss 1e-8)."""
    from adversary.attacks import build_attack
    from tests.test_fedavg_attacks import psnr

    case, x = saturated_two_step
    own = build_attack("idlg-batched", iterations=15, options={"restarts": 1, "known_error": False}).reconstruct(case)
    held = build_attack("idlg-batched", iterations=15, options={"restarts": 1}).reconstruct(case)  # the default
    assert int(held.labels[0]) == 0
    assert psnr(held.inputs, x) >= 40.0 and psnr(own.inputs, x) < 30.0
    assert float(held.loss[0]) < 1e-2 * float(own.loss[0])  # both read as the dummy's own gradient's distance
