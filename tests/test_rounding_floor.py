"""A FedAvg delta's float32 rounding floor: the truth's own loss, which the success rule must not ask to beat.

The edge computes w <- w - lr g in float32, so the recorded delta carries rounding the true frame cannot
reproduce; a success threshold below it makes every start fail and every restart run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import adversary.gradient  # noqa: F401  (registers the attacks)
from adversary.attacks import build_attack
from adversary.gradient import GradientCase, gradient_distance_l2
from adversary.gradient.base import FLOOR_MARGIN
from adversary.gradient.batched import BatchedGradientCase
from adversary.gradient.local import rounding_floor, unrolled_gradients
from adversary.runner.updates import update_floor
from splitleak.errors import SplitleakError
from tests.test_fedavg_attacks import SIZE, fedavg_case

pytestmark = pytest.mark.usefixtures("one_thread")


def floor_of(case: GradientCase) -> float:
    params = dict(case.module.named_parameters())
    lr = case.local.lr if case.local is not None else LR_ONE_STEP
    return rounding_floor({n: params[n] for n in case.names}, case.gradients, case.local_steps, lr)


LR_ONE_STEP = 1e-3  # the lr of the one-step cases below (their case.local is None: the fast path)


@pytest.mark.parametrize("steps,lr", [(1, 1e-3), (2, 1e-3), (2, 1e-4)])
def test_the_floor_predicts_the_true_frames_own_loss(steps, lr):
    case, x = fedavg_case(steps, lr=lr)
    params = dict(case.module.named_parameters())
    floor = rounding_floor({n: params[n] for n in case.names}, case.gradients, steps, lr)
    replay = unrolled_gradients(case.module, x, case.labels, case.names, case.local, create_graph=False)
    own = float(gradient_distance_l2(replay, case.gradients) / case.gradient_norm2())
    # measured: the truth's loss over the floor is 1.00-1.48 at these settings (up to ~E where a step is
    # below the weights' spacing and the roundings correlate: the margin covers that)
    assert floor > 0 and 0.5 < own / floor < 3


def test_the_success_rule_sits_over_the_floor_where_the_floor_is_higher():
    case, _ = fedavg_case(2, lr=1e-4)
    floor = floor_of(case)
    assert FLOOR_MARGIN * floor > 1e-8  # this update's truth could not meet the 1e-8 rule
    raised = GradientCase(case.module, case.gradients, 1, case.input_shape, 10, case.labels, local=case.local,
                          rounding_floor=floor)
    relative = build_attack("idlg-batched")
    assert float(relative.success_thresholds(raised)[0]) == pytest.approx(FLOOR_MARGIN * floor)
    assert float(relative.success_thresholds(case)[0]) == pytest.approx(1e-8)  # no floor: the plain rule
    absolute = build_attack("idlg", preset="paper")  # L2 loss: the floor in the update's units
    expected = max(1e-5, FLOOR_MARGIN * floor * float(raised.gradient_norm2()))
    assert float(absolute.success_thresholds(raised)[0]) == pytest.approx(expected, rel=1e-5)
    assert build_attack("ig").success_thresholds(raised) is None  # cosine: no absolute rule


def test_a_frame_held_to_its_floor_stops_restarting():
    case, _ = fedavg_case(2, lr=1e-4)
    attack = build_attack("idlg-batched", iterations=10,
                          options={"restarts": 2, "stop.threshold": 0.0})  # only the floor can end a frame
    held = BatchedGradientCase.from_cases([GradientCase(case.module, case.gradients, 1, case.input_shape, 10,
                                                        case.labels, local=case.local, rounding_floor=floor_of(case))])
    result = attack.reconstruct(held)  # measured: ~5e-7 after 200 iterations, the best start ends at ~1.4 floors
    assert bool(result.success[0]) and result.extra["restarts_used"] == [1]
    unheld = attack.reconstruct(BatchedGradientCase.from_cases([case]))
    assert not bool(unheld.success[0]) and unheld.extra["restarts_used"] == [2]


def test_the_runner_floors_fedavg_updates_only_and_refuses_weights_at_float32s_limit():
    case, _ = fedavg_case(2, lr=1e-4)
    fedavg = SimpleNamespace(index=7, mode="fedavg", lr=1e-4, local_steps=2)
    assert update_floor(fedavg, case.module, case.gradients) == pytest.approx(floor_of(case))
    assert update_floor(SimpleNamespace(index=7, mode="fedsgd"), case.module, case.gradients) == 0.0
    with torch.no_grad():  # a hostile recording's round state: finite, but its spacing is not
        next(iter(case.module.parameters())).view(-1)[0] = torch.finfo(torch.float32).max
    with pytest.raises(SplitleakError, match="recording item 7: .*float32's limit"):
        update_floor(fedavg, case.module, case.gradients)


@pytest.mark.parametrize("floor", [-1.0, float("nan"), float("inf"), True])
def test_a_bad_floor_is_one_line(floor):
    case, _ = fedavg_case(1)
    with pytest.raises(SplitleakError, match="rounding floor"):
        GradientCase(case.module, case.gradients, 1, (3, SIZE, SIZE), 10, case.labels, rounding_floor=floor)
