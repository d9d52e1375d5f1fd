"""The batched gradient-inversion engine: vmapped per-frame gradients, the per-row L-BFGS, the attacks."""

import pytest
import torch

import adversary.gradient  # noqa: F401  (registers the attacks)
from adversary.gradient.base import LOSS_UNIT, GradientCase, dummy_gradients, gradient_distance_l2
from adversary.gradient.batched import BatchedGradientCase, FrameMatching, frame_gradients
from adversary.gradient.lbfgs_batched import LBFGSOptions, minimize
from adversary.metrics import psnr
from adversary.registry import attack_names, get_attack
from splitleak import learning
from splitleak.errors import SplitleakError
from splitleak.models import build_split_model


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny problems: a second intra-op thread only adds contention on a shared machine."""


def lenet(size=16, seed=0):
    return build_split_model("lenet", "none", size=size, weights=f"seed:{seed}").tail


def stacked_case(module, inputs, labels, **kwargs):
    grads = [learning.gradients(module, inputs[i:i + 1], labels[i:i + 1]) for i in range(len(inputs))]
    return BatchedGradientCase(module, {n: torch.stack([g[n] for g in grads]) for n in grads[0]}, 1,
                               tuple(inputs.shape[1:]), 10, labels=labels, **kwargs)


# ---------------------------------------------------------------- per-frame gradients (vmap)

def test_vmapped_frame_gradients_equal_the_loop():
    torch.manual_seed(0)
    module, x, y = lenet(), torch.rand(4, 3, 16, 16), torch.tensor([3, 1, 4, 1])
    batched = frame_gradients(module, x, y)
    soft = torch.softmax(torch.randn(4, 10), -1)
    batched_soft = frame_gradients(module, x, soft)
    for i in range(4):
        loop = learning.gradients(module, x[i:i + 1], y[i:i + 1])
        loop_soft = learning.gradients(module, x[i:i + 1], soft[i:i + 1])
        for name in loop:
            assert torch.allclose(batched[name][i], loop[name], atol=1e-6, rtol=1e-5)
            assert torch.allclose(batched_soft[name][i], loop_soft[name], atol=1e-6, rtol=1e-5)


def test_vmapped_frame_gradients_with_per_frame_weights():
    torch.manual_seed(1)
    modules = [lenet(seed=s) for s in range(3)]
    names = learning.parameter_names(modules[0])
    params = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in modules]) for n in names}
    x, y = torch.rand(3, 3, 16, 16), torch.tensor([0, 5, 9])
    batched = frame_gradients(modules[0], x, y, frame_params=params)
    for i, m in enumerate(modules):
        loop = learning.gradients(m, x[i:i + 1], y[i:i + 1])
        assert all(torch.allclose(batched[n][i], loop[n], atol=1e-6, rtol=1e-5) for n in names)


@pytest.mark.parametrize("joint", [True, False])
def test_matching_objective_equals_the_sequential_loss_and_its_gradient(joint):
    torch.manual_seed(2)
    module, x, y = lenet(), torch.rand(3, 3, 16, 16), torch.tensor([2, 7, 7])
    case = stacked_case(module, x, y)
    objective = FrameMatching(case, None if joint else y)
    z = torch.randn(3, objective.dim)
    rows = torch.tensor([2, 0])  # a subset, out of order
    f, g = objective(z[:2], rows)
    for k, i in enumerate(rows.tolist()):
        frame = case.frame(i)
        zi = z[k].clone().requires_grad_(True)
        xi = zi[:768].view(1, 3, 16, 16)
        label = torch.softmax(zi[768:], -1)[None] if joint else frame.labels
        loss = gradient_distance_l2(dummy_gradients(frame, xi, label), [frame.gradients[n] for n in frame.names])
        (grad,) = torch.autograd.grad(loss, zi)
        assert torch.allclose(f[k], loss.detach(), rtol=1e-4, atol=1e-7)
        assert torch.allclose(g[k], grad, rtol=1e-3, atol=1e-6)


def test_objective_with_per_frame_weights_and_single_frame_calls():
    torch.manual_seed(3)
    x, y = torch.rand(3, 3, 16, 16), torch.tensor([1, 4, 8])
    cases = []
    for i, m in enumerate([lenet(seed=0), lenet(seed=1), lenet(seed=2)]):
        cases.append(GradientCase(m, learning.gradients(m, x[i:i + 1], y[i:i + 1]), 1, (3, 16, 16), 10, y[i:i + 1]))
    case = BatchedGradientCase.from_cases(cases)
    objective = FrameMatching(case, y)
    z = torch.randn(3, objective.dim)
    f, g = objective(z, torch.arange(3))  # vmapped, per-frame weights
    for i in range(3):
        f1, g1 = objective(z[i:i + 1], torch.tensor([i]))  # one frame: plain autograd
        xi = z[i].clone().view(1, 3, 16, 16).requires_grad_(True)
        loss = gradient_distance_l2(dummy_gradients(cases[i], xi, y[i:i + 1]), cases[i].gradients)
        (grad,) = torch.autograd.grad(loss, xi)
        for value, gradient in ((f[i], g[i]), (f1[0], g1[0])):
            assert torch.allclose(value, loss.detach(), rtol=1e-4)
            assert torch.allclose(gradient, grad.flatten(), rtol=1e-3, atol=1e-6)


# ---------------------------------------------------------------- the per-row L-BFGS

SCALES = torch.tensor([1.0, 4.0, 10.0, 0.5])
MARK = 1e6  # a start that carries this value evaluates to NaN


def rosenbrock(z, rows):
    """Per-row scaled Rosenbrock; NaN wherever the start carried MARK."""
    z = z.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        f = (SCALES[rows][:, None] * (z[:, 1:] - z[:, :-1] ** 2) ** 2 + (1 - z[:, :-1]) ** 2).sum(1)
        (g,) = torch.autograd.grad(f.sum(), z)
    bad = (z.detach() == MARK).any(1)
    return torch.where(bad, torch.nan, f.detach()), g


def seeded_init(rows, starts, nan_rows=(), solved_rows=()):
    out = []
    for r, k in zip(rows.tolist(), starts.tolist()):
        z = torch.randn(6, generator=torch.Generator().manual_seed(100 * r + k))
        if r in solved_rows:
            z = torch.ones(6)
        if r in nan_rows and k == 0:
            z[0] = MARK
        out.append(z)
    return torch.stack(out)


class Recorder:
    """Wraps an objective and records which rows every call evaluated, and at which points."""

    def __init__(self, objective):
        self.objective, self.calls, self.points = objective, [], {}

    def __call__(self, z, rows):
        self.calls.append(rows.tolist())
        for zi, r in zip(z, rows.tolist()):
            self.points.setdefault(r, []).append(zi.clone())
        return self.objective(z, rows)


def test_fixed_step_follows_torch_lbfgs_row_by_row():
    rec = Recorder(rosenbrock)
    minimize(rec, seeded_init, 4, LBFGSOptions(max_iter=15, restarts=0, threshold=0.0, stop=0.0, history=5,
                                               line_search="fixed"))
    for row in range(4):
        z = seeded_init(torch.tensor([row]), torch.tensor([0]))[0].clone().requires_grad_(True)
        opt = torch.optim.LBFGS([z], lr=1, max_iter=15, history_size=5, tolerance_grad=0, tolerance_change=0)
        seen = []

        def closure():
            opt.zero_grad()
            seen.append(z.detach().clone())
            f = (SCALES[row] * (z[1:] - z[:-1] ** 2) ** 2 + (1 - z[:-1]) ** 2).sum()
            f.backward()
            return f

        opt.step(closure)
        for ours, theirs in zip(rec.points[row][:10], seen[:10]):
            assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_strong_wolfe_takes_torch_lbfgs_trial_steps_row_by_row():
    """Every evaluation point of every row, line-search trials included, is torch's on that row
    alone, also once the 3-pair history has wrapped round."""
    rec = Recorder(rosenbrock)
    init = lambda r, s: seeded_init(r, s).double()  # noqa: E731  (float64: the paths agree to rounding)
    minimize(rec, init, 4, LBFGSOptions(max_iter=60, restarts=0, threshold=0.0, stop=0.0, history=3,
                                        line_search="strong_wolfe", tolerance_change=1e-12))
    extra_trials = 0
    for row in range(4):
        z = init(torch.tensor([row]), torch.tensor([0]))[0].clone().requires_grad_(True)
        opt = torch.optim.LBFGS([z], lr=1, max_iter=60, max_eval=1000, history_size=3, tolerance_grad=0,
                                tolerance_change=1e-12, line_search_fn="strong_wolfe")
        seen = []

        def closure():
            opt.zero_grad()
            seen.append(z.detach().clone())
            f = (SCALES[row] * (z[1:] - z[:-1] ** 2) ** 2 + (1 - z[:-1]) ** 2).sum()
            f.backward()
            return f

        opt.step(closure)  # torch stops at its tolerance (loss < 1e-9 here); we go on to max_iter
        assert 20 <= len(seen) <= len(rec.points[row])
        extra_trials += len(seen) - 1 - opt.state[z]["n_iter"]
        for ours, theirs in zip(rec.points[row], seen):
            assert torch.allclose(ours, theirs, rtol=1e-9, atol=1e-10)
    assert extra_trials >= 10  # bracketing and zoom trials were compared, not just first steps


@pytest.mark.parametrize("line_search", ["strong_wolfe", "armijo", "fixed"])
def test_rows_converge_independently(line_search):
    options = LBFGSOptions(max_iter=400, restarts=2, threshold=1e-10, history=10, line_search=line_search)
    rec = Recorder(rosenbrock)
    out = minimize(rec, lambda r, s: seeded_init(r, s, nan_rows=(1,), solved_rows=(3,)), 4, options)
    assert out.converged.all()
    assert out.loss.max() < 1e-10
    # row 3 started at the minimum: evaluated once, then frozen
    assert out.evaluations[3] == 1 and out.iterations[3] == 0
    assert all(3 not in rows for rows in rec.calls[1:])
    # row 1's first start was NaN: it restarted
    assert out.starts[1] >= 2 and out.starts[3] == 1
    # the others ran exactly as they run without row 1 in the batch
    alone = Recorder(rosenbrock)
    ref = minimize(alone, lambda r, s: seeded_init(r, s, solved_rows=(3,)), 4, options)
    for row in (0, 2):
        assert out.iterations[row] == ref.iterations[row] and out.starts[row] == ref.starts[row]
        assert torch.allclose(out.z[row], ref.z[row], rtol=1e-5, atol=1e-6)
        assert len(rec.points[row]) == len(alone.points[row])
    assert (out.iterations != out.iterations[0]).any()  # rows stop at their own time


def test_stop_tested_every_k_iterations_as_dlg_steps():
    """stop_every=k: a row runs the k-iteration step that starts below the threshold."""
    options = LBFGSOptions(max_iter=400, restarts=0, threshold=1e-5, stop_every=5, history=10)
    out = minimize(rosenbrock, seeded_init, 3, options)
    immediate = minimize(rosenbrock, seeded_init, 3, LBFGSOptions(max_iter=400, restarts=0, threshold=1e-5,
                                                                   history=10))
    assert out.converged.all() and immediate.converged.all()
    # past the first test below the threshold, at most one more 5-iteration step (less if the
    # gradient vanishes first)
    assert (out.iterations > immediate.iterations).all()
    assert (out.iterations <= (immediate.iterations // 5 + 2) * 5).all()
    assert (out.loss < immediate.loss).all()


def crawling_quadratic(z, rows):
    """sum(z^2): with a fixed step of 1e-4 of L-BFGS's (Newton) step the loss falls ~2e-4 per iteration."""
    return (z ** 2).sum(1), 2 * z


@pytest.mark.slow
def test_slow_starts_end_when_their_loss_has_not_halved():
    slow = LBFGSOptions(max_iter=1000, restarts=2, threshold=1e-12, line_search="fixed", lr=1e-4, history=5,
                        slow_patience=50)
    out = minimize(crawling_quadratic, seeded_init, 2, slow)
    assert out.starts.tolist() == [3, 3] and out.iterations.tolist() == [150, 150]
    # without the rule every start runs its whole budget; halving does reset the clock
    full = minimize(crawling_quadratic, seeded_init, 2, LBFGSOptions(**{**slow.__dict__, "slow_patience": None}))
    assert full.iterations.tolist() == [3000, 3000]
    fast = minimize(crawling_quadratic, seeded_init, 2, LBFGSOptions(**{**slow.__dict__, "lr": 0.1, "threshold": 1e-8}))
    assert fast.converged.all() and fast.starts.tolist() == [1, 1] and (fast.iterations > 50).all()


def test_rows_out_of_starts_are_reported_not_converged():
    out = minimize(rosenbrock, seeded_init, 2, LBFGSOptions(max_iter=3, restarts=1, threshold=1e-12))
    assert not out.converged.any()
    assert out.starts.tolist() == [2, 2]
    assert torch.isfinite(out.loss).all()


def test_options_are_checked():
    with pytest.raises(SplitleakError):
        LBFGSOptions(line_search="wolfe")
    with pytest.raises(SplitleakError):
        LBFGSOptions(max_iter=0)
    with pytest.raises(SplitleakError):
        LBFGSOptions(slow_drop=1.0)


# ---------------------------------------------------------------- the case and the attacks

def test_batched_case_checks_shapes_and_round_trips_frames():
    module, x, y = lenet(), torch.rand(2, 3, 16, 16), torch.tensor([1, 2])
    case = stacked_case(module, x, y, seed=5)
    assert case.frames == 2 and case.frame(1).seed == 1005
    frame = case.frame(1)
    assert torch.equal(frame.labels, y[1:])
    again = BatchedGradientCase.from_cases([case.frame(0), case.frame(1)])
    assert again.frame_seeds == (5, 1005) and again.frame_params is None
    assert all(torch.equal(again.gradients[n], case.gradients[n]) for n in case.names)
    with pytest.raises(SplitleakError, match="frames first"):
        BatchedGradientCase(module, {n: g[0] for n, g in case.gradients.items()}, 1, (3, 16, 16), 10)
    with pytest.raises(SplitleakError, match="labels"):
        BatchedGradientCase(module, case.gradients, 1, (3, 16, 16), 10, labels=torch.tensor([1, 2, 3]))
    with pytest.raises(SplitleakError, match="batch-1"):
        BatchedGradientCase(module, case.gradients, 2, (3, 16, 16), 10)


def test_from_cases_keeps_per_round_weights():
    x, y = torch.rand(2, 3, 16, 16), torch.tensor([1, 2])
    cases = []
    for i, m in enumerate([lenet(seed=0), lenet(seed=1)]):
        cases.append(GradientCase(m, learning.gradients(m, x[i:i + 1], y[i:i + 1]), 1, (3, 16, 16), 10, y[i:i + 1]))
    batch = BatchedGradientCase.from_cases(cases)
    assert batch.frame_params is not None
    w = batch.frame(1).module.conv1[0].weight
    assert torch.equal(w, cases[1].module.conv1[0].weight)


def test_batched_attacks_are_registered():
    names = attack_names()
    assert "dlg-batched" in names and "idlg-batched" in names
    assert get_attack("idlg-batched").family == "gradient"


@pytest.mark.parametrize("name", ["dlg-batched", "idlg-batched"])
def test_batched_options_are_checked_one_line(name):
    cls = get_attack(name)
    for options, message in (({"nope": 1}, "unknown option 'nope'"),
                             ({"slow_steps": 1.5}, r"option stop.slow_steps=1.5: expected an integer or none"),
                             ({"progress": "maybe"}, "option progress='maybe': expected true | false"),
                             ({"stop_every": 0}, "stop_every must be >= 1")):
        with pytest.raises(SplitleakError, match=message) as err:
            cls(**options)
        assert "\n" not in str(err.value)


def test_batched_presets_drive_the_engine():
    paper = get_attack("dlg-batched").from_options("paper").options()  # dlg's paper loop, per frame
    assert (paper.max_iter, paper.restarts, paper.threshold, paper.stop) == (300 * 20, 9, 1e-5, 0.0)
    assert (paper.history, paper.lr, paper.line_search, paper.slow_patience) == (100, 1.0, "fixed", None)
    assert (paper.stop_every, paper.patience) == (20, 40)  # tested per dlg step; two steps without progress
    best = get_attack("idlg-batched")().options()  # today's defaults: polish every frame, as dlg does
    assert (best.stop, best.line_search, best.slow_patience, best.min_progress) == (0.0, "strong_wolfe", 1000, 0.0)
    # success rule kept, on the relative loss, which the engine sees in LOSS_UNITs
    assert (best.threshold, best.check_every, best.max_rows, best.sync_free) == (1e-8 * LOSS_UNIT, None, 256, None)
    assert get_attack("dlg-batched")(rows=0).options().max_rows is None
    custom = get_attack("dlg-batched")(max_iter=5, patience=0, stop_loss=0.0, slow_steps=None).options()
    assert (custom.max_iter, custom.stop_every, custom.patience, custom.stop, custom.slow_patience) == (
        1500, 5, None, 0.0, None)


def real_frames(n, size):
    from splitleak.video import open_source, to_model_input

    with open_source("sample:bikes", frames=n * 20) as source:
        frames = [torch.from_numpy(to_model_input(f.image, size)) for i, f in enumerate(source) if i % 20 == 0]
    return torch.stack(frames[:n])


@pytest.mark.slow
def test_batched_idlg_reaches_the_sequential_quality():
    torch.manual_seed(0)
    x = real_frames(3, 8)
    y = torch.tensor([0, 3, 7])
    module = lenet(size=8)
    case = stacked_case(module, x, y)
    options = dict(iterations=10, restarts=2, stop_loss=1e-8)  # stop at success (the relative threshold)
    batched = get_attack("idlg-batched")(**options).reconstruct(case)
    sequential = [get_attack("idlg")(**options).reconstruct(case.frame(i)) for i in range(3)]
    assert batched.inputs.shape == (3, 3, 8, 8)
    assert batched.labels.tolist() == [0, 3, 7]
    assert batched.extra["label_accuracy"] == 1.0
    seq_psnr = [psnr(r.inputs[0].numpy(), x[i].numpy()) for i, r in enumerate(sequential)]
    bat_psnr = [psnr(batched.inputs[i].numpy(), x[i].numpy()) for i in range(3)]
    # dlg / idlg test stop_loss once per L-BFGS step (20 iterations) and overshoot it; the batched
    # engine freezes a frame at its first iteration below it: compare against a floor, loosely
    assert batched.success.all() and all(bool(r.success) for r in sequential)
    assert sum(bat_psnr) / 3 >= min(sum(seq_psnr) / 3 - 3.0, 30.0)
    assert min(bat_psnr) > 25.0


def test_reconstruct_many_gives_one_result_per_case():
    x, y = real_frames(2, 8), torch.tensor([4, 4])
    module = lenet(size=8)
    cases = stacked_case(module, x, y)
    attack = get_attack("dlg-batched")(iterations=2, restarts=1)
    before = dict(attack.__dict__)
    results = attack.reconstruct_many([cases.frame(0), cases.frame(1)])
    assert attack.__dict__ == before and all(attack.__dict__[k] is v for k, v in before.items())  # no run state
    assert len(results) == 2
    assert all(r.inputs.shape == (1, 3, 8, 8) and r.loss.shape == (1,) for r in results)
    assert all(isinstance(r.extra["restarts_used"], int) for r in results)
    single = get_attack("idlg-batched")(iterations=1, restarts=1).reconstruct(cases.frame(1))  # a plain case
    assert single.inputs.shape == (1, 3, 8, 8) and single.labels.tolist() == [4]
