"""Host syncs: the counter counts every read of a tensor back to Python, and the batched engine's
iteration loop makes none between its read-backs (every `check_every` iterations)."""
import numpy as np
import pytest
import torch

import adversary.gradient  # noqa: F401  (registers the attacks)
from adversary.gradient import lbfgs_batched
from adversary.gradient.lbfgs_batched import LBFGSOptions, minimize
from adversary.registry import get_attack
from adversary.sync_count import READ_BACKS, count_host_syncs, counting_host_syncs
from splitleak import learning
from splitleak.models import build_split_model


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny problems: a second intra-op thread only adds contention on a shared machine."""


def test_every_kind_of_read_back_is_counted_once():
    t = torch.arange(3.0)

    def reads():
        t.sum().item(), float(t[0]), int(t[1]), bool(t[2] > 0), t.tolist(), t.cpu(), np.asarray(t), t.numpy()
        if t[0] < 1:
            [0, 1][t[1].long()]

    with counting_host_syncs(cuda=False) as count:
        reads()
        (t * 2 + 1).sum()  # device work, no read
    assert count.total == 10
    assert count.by_kind == {"item": 1, "__float__": 1, "__int__": 1, "__bool__": 2, "tolist": 1, "cpu": 1,
                             "__array__": 1, "numpy": 1, "__index__": 1}
    assert count_host_syncs(lambda: (t * 2).exp())[1] == 0 and count_host_syncs(lambda: t.sum().item())[1] == 1
    originals = {name: torch.Tensor.__dict__.get(name) for name in READ_BACKS}
    with counting_host_syncs(cuda=False):
        pass
    assert {name: torch.Tensor.__dict__.get(name) for name in READ_BACKS} == originals  # the wrappers are gone


def rosenbrock(z, rows):
    z = z.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        f = (100 * (z[:, 1:] - z[:, :-1] ** 2) ** 2 + (1 - z[:, :-1]) ** 2).sum(1)
        (g,) = torch.autograd.grad(f.sum(), z)
    return f.detach(), g


def seeded(rows, starts):
    return torch.stack([torch.randn(6, generator=torch.Generator().manual_seed(100 * r + k))
                        for r, k in zip(rows.tolist(), starts.tolist())])


def syncs_inside_iterations(monkeypatch, run):
    """(host syncs made inside each loop iteration, read-backs, total syncs) of `run()`."""
    per_iteration, read_backs = [], []
    iterate, read_back = lbfgs_batched._iterate, lbfgs_batched._read_back

    def counted_iterate(*args):
        before = count.total
        iterate(*args)
        per_iteration.append(count.total - before)

    def counted_read_back(*args):
        read_backs.append(1)
        return read_back(*args)

    monkeypatch.setattr(lbfgs_batched, "_iterate", counted_iterate)
    monkeypatch.setattr(lbfgs_batched, "_read_back", counted_read_back)
    with counting_host_syncs(cuda=False) as count:
        run()
    return per_iteration, len(read_backs), count.total


def test_on_the_cpu_the_line_search_may_ask_the_host(monkeypatch):
    """sync_free=False (the CPU's default) skips empty line-search phases: the only reads in the loop."""
    options = LBFGSOptions(max_iter=30, restarts=0, threshold=0.0, history=5, check_every=10)
    per_iteration, _, _ = syncs_inside_iterations(monkeypatch, lambda: minimize(rosenbrock, seeded, 3, options))
    assert 0 < max(per_iteration) <= 5


@pytest.mark.parametrize("line_search", ["strong_wolfe", "armijo", "fixed"])
def test_the_engine_loop_makes_no_host_sync_between_read_backs(monkeypatch, line_search):
    options = LBFGSOptions(max_iter=60, restarts=2, threshold=1e-8, history=5, line_search=line_search,
                           check_every=7, max_rows=3, patience=10, sync_free=True)
    per_iteration, read_backs, total = syncs_inside_iterations(
        monkeypatch, lambda: minimize(rosenbrock, seeded, 5, options))
    assert len(per_iteration) >= 60 and sum(per_iteration) == 0
    assert read_backs == len(per_iteration) // 7 + 1  # one every 7 iterations, and the last
    assert total > 0  # the read-backs themselves do read


def test_reading_back_less_often_gives_the_same_result():
    every = dict(max_iter=80, restarts=2, threshold=1e-10, history=5, patience=15)
    one = minimize(rosenbrock, seeded, 5, LBFGSOptions(**every, check_every=1, sync_free=False))
    seven = minimize(rosenbrock, seeded, 5, LBFGSOptions(**every, check_every=7, max_rows=2, sync_free=True))
    assert torch.equal(one.iterations, seven.iterations) and torch.equal(one.starts, seven.starts)
    assert torch.equal(one.evaluations, seven.evaluations)
    assert torch.allclose(one.z, seven.z, rtol=1e-5, atol=1e-6) and torch.equal(one.converged, seven.converged)
    assert seven.calls > one.calls  # idle rows ride along until the read-back; two rows at a time


CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                        reason="needs a CUDA GPU")])


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("name,frames", [("dlg-batched", 3), ("idlg-batched", 1)])
def test_the_batched_attack_makes_no_host_sync_between_read_backs(monkeypatch, name, frames, device):
    """The real objective (vmapped per-frame gradients; one frame: plain autograd) included."""
    model = build_split_model("lenet", "none", size=8, weights="seed:0", device=device)
    torch.manual_seed(0)
    x, y = torch.rand(frames, 3, 8, 8, device=device), torch.arange(frames, device=device)
    cases = [adversary.gradient.GradientCase(model.tail, learning.gradients(model.tail, x[i:i + 1], y[i:i + 1]), 1,
                                             (3, 8, 8), 10, y[i:i + 1], device=device, seed=i)
             for i in range(frames)]
    attack = get_attack(name)(iterations=2, restarts=2, check_every=5, rows=2, sync_free=True)
    per_iteration, read_backs, _ = syncs_inside_iterations(monkeypatch, lambda: attack.reconstruct_many(cases))
    assert len(per_iteration) >= 20 and sum(per_iteration) == 0
    assert read_backs == len(per_iteration) // 5 + 1
