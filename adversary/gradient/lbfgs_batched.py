"""A batched L-BFGS: N independent minimisations run as one vectorised loop.

Row i of z (N, D) is its own problem with its own curvature history, step size, line search,
convergence and restarts; only the row's own loss and gradient ever touch it. The objective is
called on the rows still running (`objective(z_rows, rows) -> (loss (k,), grad (k, D))`), so a
row that reached `threshold` is frozen and costs nothing, and a row that diverges (non-finite)
or stagnates restarts from `init(rows, start)` while the others go on undisturbed.

Why not one L-BFGS over the summed loss: the sum shares one step size and one curvature model
across frames whose losses differ by orders of magnitude, so well-conditioned frames dictate the
steps and the rest stall (about 22 dB vs 32-37 dB for the per-frame loop on DLG / LeNet).

Per row this is torch.optim.LBFGS's algorithm (H0 = s'y / y'y, pairs kept only when
s'y > 1e-10, first step min(1, 1/|g|_1) * lr; -H g by the compact representation, equal to
the two-loop recursion), with a per-row line search, each trial of which rides in the next
batched call: `strong_wolfe` is torch's (wolfe_batched.py), so a row takes the steps torch's
L-BFGS takes on it alone; `armijo` backtracks (quadratic interpolation, clamped to [0.1, 0.5]
of the step) until f(z + t d) <= f(z) + c1 t g'd; `fixed` takes torch's fixed step (no line
search) as in the original DLG code, a non-finite loss then restarting the row. Where torch's
L-BFGS would stop (a search that ends where it began, an uphill direction), a row forgets its
history and goes on by steepest descent.

No host synchronisation inside the loop: every per-row decision (line search, convergence,
restarts due, best so far, stagnation) is a tensor mask, and a row that finishes or whose start
ends goes idle (masked out of every update and count) until the next read-back. Every
`check_every` iterations the loop reads back once: idle rows restart from their next seed or are
dropped, and frames still queued (`max_rows`) take the freed rows. On a GPU the host therefore
waits for the device once per `check_every` iterations, not several times per iteration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from adversary.configs import require
from adversary.gradient.wolfe_batched import WolfeRows

Objective = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Init = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (rows (k,), start number (k,)) -> z (k, D)
LINE_SEARCHES = ("strong_wolfe", "armijo", "fixed")
CUDA_CHECK_EVERY = 20  # read-backs on CUDA: one per dlg step of 20 iterations


@dataclass(frozen=True)
class LBFGSOptions:
    """Per-row settings; every row gets the same ones but runs them on its own.

    max_iter: L-BFGS iterations per start; restarts: extra starts a row may use after the first;
    threshold: a start that ends below it is a success (no more restarts); stop: a row whose loss
    falls below it is frozen at once (None: the threshold; 0: never, polish to the end of the
    start); stop_every: None tests `stop` after every iteration; k tests it every k iterations of
    a start, on the loss k iterations earlier, as a loop of k-iteration L-BFGS steps that stops
    once a step started below `stop` does (dlg's loop: 20); patience: a start whose loss has not
    dropped by the fraction `min_progress` over this many iterations ends early (None: never);
    slow_patience: a start whose best loss has not fallen to `slow_drop` times its value at the
    last such fall (or at the start) within this many iterations ends early (None: never; dlg's
    rule "not halved over 50 steps" is 1000 iterations and 0.5): a start that slow would not
    reach the threshold in its budget, and a fresh seed does better.
    check_every: iterations between read-backs to the host (restarts, finished rows, refills, progress);
    a row idles for up to check_every - 1 iterations after its start ended (results do not change).
    None: CUDA_CHECK_EVERY on CUDA, 1 on the CPU (where a read-back costs nothing and idling does).
    max_rows: at most this many problems are optimised at once; the rest wait and take the rows of
    problems that finished (None: all at once).
    sync_free: the line search runs every phase on every row under its mask, never asking the host
    whether a phase has rows (None: on CUDA, where such a question stalls the device; on the CPU
    it costs nothing and skipping empty phases saves ~10%). The loop's other decisions are masks
    either way.
    """

    max_iter: int = 300
    restarts: int = 10
    threshold: float = 1e-5
    stop: float | None = None
    stop_every: int | None = None
    history: int = 100
    lr: float = 1.0
    line_search: str = "strong_wolfe"
    max_backtracks: int = 10
    c1: float = 1e-4
    c2: float = 0.9
    max_ls: int = 25
    patience: int | None = None
    min_progress: float = 1e-3
    slow_patience: int | None = None
    slow_drop: float = 0.5
    tolerance_change: float = 1e-9
    check_every: int | None = None
    max_rows: int | None = None
    sync_free: bool | None = None
    row_thresholds: torch.Tensor | None = None  # per problem (N,): its own threshold, in place of `threshold`

    def __post_init__(self) -> None:
        require(self.line_search in LINE_SEARCHES,
                f"line_search must be one of {', '.join(LINE_SEARCHES)}, got {self.line_search!r}")
        require(self.max_iter >= 1 and self.restarts >= 0 and self.history >= 1 and self.max_backtracks >= 0
                and self.max_ls >= 1, "max_iter, history and max_ls must be >= 1, restarts and max_backtracks >= 0")
        require(0 < self.c1 < self.c2 < 1, f"need 0 < c1 < c2 < 1, got c1 {self.c1} and c2 {self.c2}")
        require((self.slow_patience is None or self.slow_patience >= 1) and 0 < self.slow_drop < 1,
                f"slow_patience must be None or >= 1 and slow_drop in (0, 1), got {self.slow_patience} and "
                f"{self.slow_drop}")
        require(self.stop_every is None or self.stop_every >= 1,
                f"stop_every must be None or >= 1, got {self.stop_every}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require((self.check_every is None or self.check_every >= 1) and (self.max_rows is None or self.max_rows >= 1),
                f"check_every must be >= 1 and max_rows None or >= 1, got {self.check_every} and {self.max_rows}")

    @property
    def stop_below(self) -> float:
        return self.threshold if self.stop is None else self.stop

    def reached(self, best: torch.Tensor, problems: torch.Tensor | None = None) -> torch.Tensor:
        """Whether each problem's best loss (`best`, of `problems`; None: all) is below its threshold."""
        if self.row_thresholds is None:
            return best < self.threshold
        limit = self.row_thresholds.to(best.device, best.dtype)
        return best < (limit if problems is None else limit[problems])


@dataclass
class LBFGSResult:
    """Per row: the best point over all starts, its loss, whether it reached the threshold, and
    the work spent (iterations, objective evaluations of that row, starts used)."""

    z: torch.Tensor
    loss: torch.Tensor
    converged: torch.Tensor
    iterations: torch.Tensor
    evaluations: torch.Tensor
    starts: torch.Tensor
    calls: int  # batched objective calls, whatever the number of rows in each


class _Frames:
    """Per-problem results, indexed by problem id: best point over all starts and work spent."""

    def __init__(self, n: int, z: torch.Tensor) -> None:
        long = dict(device=z.device, dtype=torch.long)
        self.best_f = torch.full((n,), float("inf"), device=z.device, dtype=z.dtype)
        self.best_z = z.new_zeros(n, z.shape[1])  # a problem's start until it has a finite loss
        self.iters = torch.zeros(n, **long)
        self.evals = torch.zeros(n, **long)
        self.starts = torch.ones(n, **long)
        self.done = torch.zeros(n, device=z.device, dtype=torch.bool)
        self.calls = 0


class _Live:
    """The problems still running, one storage row each; rows are dropped as problems finish, so
    every iteration works on whole tensors (no gathers).

    Curvature pairs live in a ring of `history` slots per row: a row that keeps a pair writes it at
    its own `head` slot and moves its head on, so, as in torch, a row remembers its last `history`
    pairs whatever the others do and however many line-search trials its iterations took.
    -H g comes from the compact representation (Byrd, Nocedal & Schnabel 1994), equal to the
    two-loop recursion but made of a few batched products instead of ~6 x history small ones:
    with S, Y the pairs oldest first, R = triu(S'Y), D = diag(S'Y), gamma = s'y / y'y of the
    newest pair,
        H g = gamma g + S p - gamma Y u,  u = R^-1 S'g,  p = R^-T ((D + gamma Y'Y) u - gamma Y'g).
    R and Y'Y (float64) are kept in each row's chronological order, oldest first: a row that keeps
    a pair rolls them by one, and direction() fills in the newest pair's column. A slot with no
    pair (rho 0) may hold a forgotten pair in S and Y: its products are zeroed by mask before use
    (and R has a unit diagonal there), so forgetting a history never rewrites S and Y.
    `idle` rows (start ended, or finished) wait for the next read-back: nothing they compute is kept.
    """

    PER_ROW = ("frame", "z", "f", "g", "S", "Y", "rho", "h_diag", "R", "YY", "iters", "start_best",
               "start_best_iter", "slow_ref", "slow_ref_iter", "trial", "tries", "t", "d", "gtd", "mark", "head",
               "idle")

    def __init__(self, z: torch.Tensor, history: int, frames: torch.Tensor | None = None,
                 sync_free: bool | None = None) -> None:
        k, dim = z.shape
        dev, dt = z.device, z.dtype
        self.frame = torch.arange(k, device=dev) if frames is None else frames.to(dev)
        self.z = z.clone()
        self.f = torch.full((k,), float("inf"), device=dev, dtype=dt)
        self.g = torch.zeros(k, dim, device=dev, dtype=dt)
        self.S = torch.zeros(k, history, dim, device=dev, dtype=dt)  # ring slots
        self.Y = torch.zeros(k, history, dim, device=dev, dtype=dt)
        self.rho = torch.zeros(k, history, device=dev, dtype=dt)  # 1 / s'y, 0: no pair in this slot
        self.h_diag = torch.ones(k, device=dev, dtype=dt)
        self.R = torch.eye(history, device=dev, dtype=torch.float64).repeat(k, 1, 1)  # oldest first
        self.YY = torch.zeros(k, history, history, device=dev, dtype=torch.float64)
        self.iters = torch.zeros(k, device=dev, dtype=torch.long)  # iterations of the current start
        self.start_best = torch.full((k,), float("inf"), device=dev, dtype=dt)
        self.start_best_iter = torch.zeros(k, device=dev, dtype=torch.long)
        self.slow_ref = torch.full((k,), float("inf"), device=dev, dtype=dt)  # best loss at its last big fall
        self.slow_ref_iter = torch.zeros(k, device=dev, dtype=torch.long)
        self.trial = torch.zeros(k, device=dev, dtype=torch.bool)  # in a line search along d
        self.tries = torch.zeros(k, device=dev, dtype=torch.long)
        self.t = torch.zeros(k, device=dev, dtype=dt)
        self.d = torch.zeros(k, dim, device=dev, dtype=dt)
        self.gtd = torch.zeros(k, device=dev, dtype=dt)
        self.mark = torch.full((k,), float("inf"), device=dev, dtype=dt)  # loss at the last stop test
        self.head = torch.zeros(k, device=dev, dtype=torch.long)  # per row: the next slot, its oldest
        self.idle = torch.zeros(k, device=dev, dtype=torch.bool)
        sync_free = dev.type == "cuda" if sync_free is None else sync_free
        self.wolfe = WolfeRows(k, dim, dev, dt, sync_free)  # strong-Wolfe search state (unused by the others)

    @property
    def k(self) -> int:
        return int(self.frame.shape[0])

    def keep(self, mask: torch.Tensor) -> None:
        """Drop the rows where mask is False (a read-back: it synchronises)."""
        if bool(mask.all()):
            return
        idx = mask.nonzero().flatten()
        for name in self.PER_ROW:
            setattr(self, name, getattr(self, name).index_select(0, idx))
        self.wolfe.keep(idx)

    def extend(self, other: "_Live") -> None:
        """Append the rows of `other` (same history length and dimension)."""
        for name in self.PER_ROW:
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name)]))
        self.wolfe.extend(other.wolfe)

    def clear(self, mask: torch.Tensor) -> None:
        """Forget the curvature history of the rows where mask is True (masked: no sync)."""
        self.rho.masked_fill_(mask[:, None], 0.0)
        self.YY.masked_fill_(mask[:, None, None], 0.0)
        eye = torch.eye(self.R.shape[1], device=self.R.device, dtype=self.R.dtype)
        self.R = torch.where(mask[:, None, None], eye, self.R)
        self.h_diag.masked_fill_(mask, 1.0)

    def has_history(self) -> torch.Tensor:
        return (self.rho != 0).any(1)

    def push(self, mask: torch.Tensor, s: torch.Tensor, y: torch.Tensor) -> None:
        """Store (s, y) at the head of the rows in mask where s'y > 1e-10, as torch's L-BFGS (a
        non-finite s'y is not stored). Masked writes: no sync."""
        ys = torch.linalg.vecdot(s, y)
        keep = mask & (ys > 1e-10) & torch.isfinite(ys)
        rows, slot = torch.arange(self.head.shape[0], device=s.device), self.head
        self.S[rows, slot] = torch.where(keep[:, None], s, self.S[rows, slot])
        self.Y[rows, slot] = torch.where(keep[:, None], y, self.Y[rows, slot])
        self.rho[rows, slot] = torch.where(keep, 1.0 / ys, self.rho[rows, slot])
        self.h_diag = torch.where(keep, ys / torch.linalg.vecdot(y, y), self.h_diag)
        self.head = torch.where(keep, (slot + 1) % self.S.shape[1], slot)
        # one place older for every pair of these rows; the newest's row and column (wrapped round
        # here) are filled in by direction(), which runs before anything reads them
        for name in ("R", "YY"):
            mat = getattr(self, name)
            setattr(self, name, torch.where(keep[:, None, None], mat.roll((-1, -1), (1, 2)), mat))

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        """-H g per row, from each row's own pairs."""
        k, m = self.rho.shape
        rows = torch.arange(k, device=g.device)
        new = (self.head - 1) % m  # per row, the slot of the newest pair
        order = (self.head[:, None] + torch.arange(m, device=g.device)) % m  # slots, oldest first
        pair = torch.stack([g, self.Y[rows, new]], 1)
        by_age = order[:, None, :].expand(-1, 2, -1)
        valid = (self.rho != 0).gather(1, order)  # slots holding a pair, oldest first
        zero = torch.zeros((), device=g.device, dtype=torch.float64)
        # s_i'g, s_i'y_new and y_i'g, y_i'y_new; a forgotten pair's products are zero
        sp = torch.where(valid[:, None], torch.bmm(pair, self.S.transpose(1, 2)).double().gather(2, by_age), zero)
        yp = torch.where(valid[:, None], torch.bmm(pair, self.Y.transpose(1, 2)).double().gather(2, by_age), zero)
        newest_kept = self.rho[rows, new] != 0
        self.R[:, :, -1] = sp[:, 1]
        self.R[:, -1, :-1] = 0.0
        self.R[:, -1, -1] = torch.where(newest_kept, sp[:, 1, -1], 1.0)
        self.YY[:, :, -1] = yp[:, 1]
        self.YY[:, -1, :] = yp[:, 1]
        d = torch.diagonal(self.R, dim1=1, dim2=2) * valid.double()
        gamma = self.h_diag.double()[:, None]
        u = torch.linalg.solve_triangular(self.R, sp[:, 0, :, None], upper=True)[..., 0]
        w = d * u + gamma * torch.bmm(self.YY, u[..., None])[..., 0] - gamma * yp[:, 0]
        p = torch.linalg.solve_triangular(self.R.mT, w[..., None], upper=False)[..., 0]
        p, u = (torch.empty_like(v).scatter_(1, order, v).to(g.dtype) for v in (p, u))  # back to slots
        hg = self.h_diag[:, None] * (g - torch.bmm(u[:, None], self.Y)[:, 0]) + torch.bmm(p[:, None], self.S)[:, 0]
        return -hg


def minimize(objective: Objective, init: Init, n: int, options: LBFGSOptions,
             progress: Callable[[int, int], None] | None = None) -> LBFGSResult:
    """Minimise N independent problems; `progress(done, n)` is called at every read-back."""
    first = min(n, options.max_rows or n)
    z0 = init(torch.arange(first), torch.zeros(first, dtype=torch.long)).detach()
    out = _Frames(n, z0)
    live = _admit(None, out, objective, z0, torch.arange(first, device=z0.device), options)
    queued, iteration = first, 0
    every = options.check_every or (CUDA_CHECK_EVERY if z0.device.type == "cuda" else 1)
    while True:
        if iteration % every == 0:
            live, queued = _read_back(live, out, objective, init, n, queued, options)
            if progress is not None:
                progress(int(out.done.sum()), n)
            if not live.k:
                break
        _iterate(live, out, objective, options)
        iteration += 1
    converged = options.reached(out.best_f)
    return LBFGSResult(out.best_z, out.best_f, converged, out.iters, out.evals, out.starts, out.calls)


def _read_back(live: _Live, out: _Frames, objective: Objective, init: Init, n: int, queued: int,
               options: LBFGSOptions) -> tuple[_Live, int]:
    """The loop's one synchronisation: rows whose start ended restart or finish, finished rows are
    dropped, and queued problems take the free rows. Returns the live rows and the next queued id."""
    idle = live.idle | out.done[live.frame]
    if bool(idle.any()):
        ended = idle & ~out.done[live.frame]
        if bool(ended.any()):
            _restart_or_finish(live, out, objective, init, ended, options)
        live.keep(~out.done[live.frame])
    free = (options.max_rows or n) - live.k
    if free > 0 and queued < n:
        frames = torch.arange(queued, min(n, queued + free))
        z = init(frames, torch.zeros_like(frames)).to(live.z.device, live.z.dtype).detach()
        live = _admit(live, out, objective, z, frames.to(live.z.device), options)
        queued += frames.numel()
    return live, queued


def _admit(live: _Live | None, out: _Frames, objective: Objective, z: torch.Tensor, frames: torch.Tensor,
           options: LBFGSOptions) -> _Live:
    """Start problems `frames` at z in new rows appended to `live` (or in a new _Live)."""
    fresh = _Live(z, options.history, frames, options.sync_free)
    out.best_z[frames] = z
    _start(fresh, out, objective, torch.ones(frames.numel(), dtype=torch.bool, device=z.device), z, options)
    if live is None:
        return fresh
    live.extend(fresh)
    return live


def _evaluate(out: _Frames, objective: Objective, z: torch.Tensor, frames: torch.Tensor,
              active: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, grad) of the problems `frames` at z; a non-finite loss or gradient reads as NaN.
    Evaluations are counted for the `active` rows (default: all)."""
    f, g = objective(z, frames)
    out.calls += 1
    out.evals[frames] += 1 if active is None else active.long()
    f, g = f.detach(), g.detach()
    bad = ~(torch.isfinite(f) & torch.isfinite(g).all(1))
    return torch.where(bad, torch.full_like(f, float("nan")), f), torch.where(bad[:, None], torch.zeros_like(g), g)


def _start(live: _Live, out: _Frames, objective: Objective, mask: torch.Tensor, z: torch.Tensor,
           options: LBFGSOptions) -> None:
    """(Re)start the rows in mask at z (one row of z per such row): fresh history, one evaluation.
    Runs at read-backs only (it synchronises)."""
    idx = mask.nonzero().flatten()
    frames = live.frame[idx]
    f, g = _evaluate(out, objective, z, frames)
    live.z[idx], live.f[idx], live.g[idx] = z, f, g
    live.clear(mask)
    live.iters[idx] = 0
    live.trial[idx] = False
    live.tries[idx] = 0
    start_loss = torch.where(torch.isnan(f), torch.full_like(f, float("inf")), f)
    live.mark[idx] = live.start_best[idx] = live.slow_ref[idx] = start_loss
    live.start_best_iter[idx] = live.slow_ref_iter[idx] = 0
    _record(out, frames, f, z)
    solved = f < options.stop_below if options.stop_every is None else torch.zeros_like(f, dtype=torch.bool)
    out.done[frames] |= solved
    live.idle[idx] = solved


def _record(out: _Frames, frames: torch.Tensor, f: torch.Tensor, z: torch.Tensor,
            mask: torch.Tensor | None = None) -> None:
    """Keep each problem's best point over all starts (rows in `mask` only; masked: no sync)."""
    better = f < out.best_f[frames]  # False for NaN
    if mask is not None:
        better &= mask
    out.best_f[frames] = torch.where(better, f, out.best_f[frames])
    out.best_z[frames] = torch.where(better[:, None], z, out.best_z[frames])


def _stop(live: _Live, out: _Frames, complete: torch.Tensor, options: LBFGSOptions) -> None:
    """Finish the active rows that passed the stop test (see LBFGSOptions.stop_every)."""
    if options.stop_every is None:
        hit = complete & (live.f < options.stop_below)
    else:
        test = complete & (live.iters % options.stop_every == 0)
        hit = test & (live.mark < options.stop_below)
        live.mark = torch.where(test, live.f, live.mark)
    hit &= ~live.idle
    out.done[live.frame] |= hit
    live.idle |= hit


def _iterate(live: _Live, out: _Frames, objective: Objective, options: LBFGSOptions) -> None:
    """One objective call for every live row; rows whose start ended go idle until the read-back.

    A row either tries the first step along a new direction or the next trial of a line search in
    progress along the same one: searching rows ride along in the same call as the others instead
    of costing calls of their own. An iteration (what max_iter counts) is a direction finished: a
    step chosen, or the search given up. No host sync: every decision is a mask.
    """
    z, f, g = live.z, live.f, live.g
    active = ~live.idle
    fresh = ~live.trial
    d = live.direction(g)  # every row: it also brings the newest pair into S'Y and Y'Y
    uphill = fresh & ~(torch.linalg.vecdot(g, d) < -options.tolerance_change)
    live.clear(uphill)  # a stale curvature model: fall back to steepest descent
    d = torch.where(uphill[:, None], -g, d)
    d = torch.where(fresh[:, None], d, live.d)
    gtd = torch.where(fresh, torch.linalg.vecdot(g, d), live.gtd)
    first = ~live.has_history()
    t = torch.where(first, torch.clamp(1.0 / g.abs().sum(1), max=1.0) * options.lr, torch.full_like(f, options.lr))
    t = torch.where(fresh, t, live.t)
    flat = fresh & ~(gtd < -options.tolerance_change)  # zero gradient: nowhere to go from here
    t = torch.where(flat, torch.zeros_like(t), t)
    f_new, g_new = _evaluate(out, objective, z + t[:, None] * d, live.frame, active)
    search = _SEARCHES[options.line_search]
    complete, moved, t_step, f_step, g_step, t_next = search(live, fresh, t, d, gtd, f_new, g_new, options)
    complete, moved = complete | flat, moved & ~flat
    live.trial, live.d, live.gtd, live.t = ~complete, d, gtd, t_next
    s = t_step[:, None] * d
    live.push(moved, s, g_step - g)
    live.clear(complete & ~moved)  # a failed line search leaves the row in place, history forgotten
    live.z = torch.where(moved[:, None], z + s, z)
    live.f = torch.where(moved, f_step, f)
    live.g = torch.where(moved[:, None], g_step, g)
    live.iters += complete.long()
    out.iters[live.frame] += (complete & active).long()
    _record(out, live.frame, f_step, live.z, moved & active)
    _stop(live, out, complete, options)
    live.start_best, live.start_best_iter = _fall(live.f, live.start_best, live.start_best_iter, live.iters,
                                                  1 - options.min_progress)
    ended = (live.iters >= options.max_iter) | flat
    if options.line_search == "fixed":
        ended |= torch.isnan(f_new)  # diverged
    if options.patience is not None:
        ended |= live.iters - live.start_best_iter >= options.patience
    live.slow_ref, live.slow_ref_iter = _fall(live.start_best, live.slow_ref, live.slow_ref_iter, live.iters,
                                              options.slow_drop)
    if options.slow_patience is not None:
        ended |= live.iters - live.slow_ref_iter >= options.slow_patience
    live.idle |= ended & complete


Step = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _armijo(live: _Live, fresh: torch.Tensor, t: torch.Tensor, d: torch.Tensor, gtd: torch.Tensor,
            f_new: torch.Tensor, g_new: torch.Tensor, options: LBFGSOptions) -> Step:
    """Backtracking: accept the trial when f(z + t d) <= f(z) + c1 t g'd, else a shorter one.
    Returns (search over, row moves, step, its loss, its gradient, next trial step)."""
    f = live.f
    ok = torch.isfinite(f_new) & (f_new <= f + options.c1 * t * gtd)
    retry = ~ok & (live.tries < options.max_backtracks)
    live.tries = torch.where(retry, live.tries + 1, torch.zeros_like(live.tries))
    return ~retry, ok & (f_new < f), t, f_new, g_new, torch.where(retry, _shorter(t, f, f_new, gtd), t)


def _fixed(live: _Live, fresh: torch.Tensor, t: torch.Tensor, d: torch.Tensor, gtd: torch.Tensor,
           f_new: torch.Tensor, g_new: torch.Tensor, options: LBFGSOptions) -> Step:
    """No line search: torch's fixed step, taken wherever the loss is finite."""
    return torch.ones_like(fresh), torch.isfinite(f_new), t, f_new, g_new, t


def _strong_wolfe(live: _Live, fresh: torch.Tensor, t: torch.Tensor, d: torch.Tensor, gtd: torch.Tensor,
                  f_new: torch.Tensor, g_new: torch.Tensor, options: LBFGSOptions) -> Step:
    """torch's strong-Wolfe search per row (wolfe_batched); the step it ends on is never worse than
    staying, and counts as a move where it lowers the loss."""
    live.wolfe.begin(fresh, live.f, live.g, gtd, d)
    done, t_step, f_step, g_step, t_next = live.wolfe.step(
        t, live.f, live.g, gtd, f_new, g_new, torch.linalg.vecdot(g_new, d), options.c1, options.c2,
        options.tolerance_change, options.max_ls)
    return done, done & (t_step != 0) & (f_step < live.f), t_step, f_step, g_step, t_next


_SEARCHES = {"armijo": _armijo, "fixed": _fixed, "strong_wolfe": _strong_wolfe}


def _fall(value: torch.Tensor, ref: torch.Tensor, ref_iter: torch.Tensor, iters: torch.Tensor,
          factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A progress clock per row: (ref, ref_iter) move to (value, iters) where value < factor * ref.
    `patience` and `slow_patience` end a start whose clock has not moved for that many iterations."""
    fell = value < ref * factor
    return torch.where(fell, value, ref), torch.where(fell, iters, ref_iter)


def _shorter(t: torch.Tensor, f: torch.Tensor, f_new: torch.Tensor, gtd: torch.Tensor) -> torch.Tensor:
    """The next backtracking step: the quadratic model's minimiser, clamped to [0.1, 0.5] t."""
    quad = -gtd * t * t / (2 * (f_new - f - gtd * t))
    quad = torch.where(torch.isfinite(quad), quad, 0.25 * t)
    return torch.minimum(torch.maximum(quad, 0.1 * t), 0.5 * t)


def _restart_or_finish(live: _Live, out: _Frames, objective: Objective, init: Init, ended: torch.Tensor,
                       options: LBFGSOptions) -> None:
    """Rows whose start ended (diverged, stalled, out of iterations): finished if they succeeded or
    have no start left, else a new start from `init` (at a read-back: it synchronises)."""
    frames = live.frame[ended]
    left = (out.starts[frames] <= options.restarts) & ~options.reached(out.best_f[frames], frames)
    out.done[frames[~left]] = True
    if not bool(left.any()):
        return
    again = ended.clone()
    again[ended] = left
    frames = frames[left]
    z = init(frames.cpu(), out.starts[frames].cpu()).to(live.z.device, live.z.dtype).detach()
    out.starts[frames] += 1
    _start(live, out, objective, again, z, options)
