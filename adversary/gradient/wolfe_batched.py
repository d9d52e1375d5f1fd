"""A per-row strong-Wolfe line search for the batched L-BFGS: torch.optim.LBFGS's `strong_wolfe`
(bracketing by cubic extrapolation, then zoom by cubic interpolation with the 0.1-of-the-bracket
safeguard; c1 1e-4, c2 0.9, at most 25 evaluations) run as a state machine per row, so that every
row's next trial step rides in the next batched objective call whatever phase the row is in.

Per row the sequence of trial steps is torch's; the differences are only where torch's own
arithmetic breaks down: a non-finite loss reads as +inf (it fails the Armijo test, so the bracket
shrinks), and an interpolation that is not finite falls back to the middle of its bounds.
"""

from __future__ import annotations

import torch

FIELDS = ("zoom", "ls_iter", "t_prev", "f_prev", "gtd_prev", "g_prev", "bt", "bf", "bgtd", "bg", "low",
          "insuf", "d_norm")


def cubic_min(x1: torch.Tensor, f1: torch.Tensor, g1: torch.Tensor, x2: torch.Tensor, f2: torch.Tensor,
              g2: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """The minimiser of the cubic through (x1, f1, g1) and (x2, f2, g2), clamped to [lo, hi]; the
    middle of [lo, hi] where the cubic has none (torch's `_cubic_interpolate`, per row)."""
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 * d1 - g1 * g2
    d2 = d2_square.clamp(min=0).sqrt()
    from_2 = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    from_1 = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    pos = torch.minimum(torch.maximum(torch.where(x1 <= x2, from_2, from_1), lo), hi)
    return torch.where((d2_square >= 0) & torch.isfinite(pos), pos, (lo + hi) / 2)


def _pick(pair: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Entry pos (k,) of each row of a (k, 2, ...) pair."""
    index = pos.view(-1, *([1] * (pair.dim() - 1))).expand(-1, 1, *pair.shape[2:])
    return pair.gather(1, index)[:, 0]


def _put(pair: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """pair with entry pos of the rows in mask `rows` replaced by value (k, ...)."""
    slot = (torch.arange(2, device=pos.device) == pos[:, None]) & rows[:, None]
    slot = slot.view(*slot.shape, *([1] * (pair.dim() - 2)))
    return torch.where(slot, value[:, None], pair)


class WolfeRows:
    """The line-search state of every live row (rows are dropped with `keep`)."""

    def __init__(self, k: int, dim: int, device: torch.device, dtype: torch.dtype, sync_free: bool = True) -> None:
        # sync_free: every phase runs on every row under its mask; else a phase no row is in is
        # skipped, which reads a mask back to the host (free on the CPU, where it saves ~10%)
        self.sync_free = sync_free
        vec = dict(device=device, dtype=dtype)
        self.zoom = torch.zeros(k, device=device, dtype=torch.bool)  # False: bracketing phase
        self.ls_iter = torch.zeros(k, device=device, dtype=torch.long)  # torch's ls_iter
        self.t_prev, self.f_prev, self.gtd_prev = (torch.zeros(k, **vec) for _ in range(3))
        self.g_prev = torch.zeros(k, dim, **vec)
        self.bt, self.bf, self.bgtd = (torch.zeros(k, 2, **vec) for _ in range(3))  # the bracket's ends
        self.bg = torch.zeros(k, 2, dim, **vec)
        self.low = torch.zeros(k, device=device, dtype=torch.long)  # the end with the lower loss
        self.insuf = torch.zeros(k, device=device, dtype=torch.bool)
        self.d_norm = torch.zeros(k, **vec)

    def keep(self, idx: torch.Tensor) -> None:
        for name in FIELDS:
            setattr(self, name, getattr(self, name).index_select(0, idx))

    def extend(self, other: "WolfeRows") -> None:
        for name in FIELDS:
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name)]))

    def begin(self, fresh: torch.Tensor, f: torch.Tensor, g: torch.Tensor, gtd: torch.Tensor, d: torch.Tensor) -> None:
        """Rows in `fresh` start a search along d from (f, g): their first trial is in this call."""
        zero = torch.zeros_like(f)
        self.zoom &= ~fresh
        self.insuf &= ~fresh
        self.ls_iter = torch.where(fresh, torch.zeros_like(self.ls_iter), self.ls_iter)
        self.t_prev = torch.where(fresh, zero, self.t_prev)
        self.f_prev = torch.where(fresh, f, self.f_prev)
        self.gtd_prev = torch.where(fresh, gtd, self.gtd_prev)
        self.g_prev = torch.where(fresh[:, None], g, self.g_prev)
        self.d_norm = torch.where(fresh, d.abs().amax(1), self.d_norm)

    def step(self, t: torch.Tensor, f: torch.Tensor, g: torch.Tensor, gtd: torch.Tensor, f_new: torch.Tensor,
             g_new: torch.Tensor, gtd_new: torch.Tensor, c1: float, c2: float, tolerance_change: float,
             max_ls: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Take in every row's trial (t, f_new, g_new) from the search's base (f, g, gtd); returns
        (finished, t, f, g of the step chosen where finished, next trial step where not)."""
        f_new = torch.where(torch.isfinite(f_new), f_new, torch.full_like(f_new, float("inf")))
        armijo_fail = ~(f_new <= f + c1 * t * gtd)
        curvature = gtd_new.abs() <= -c2 * gtd
        trial = (t, f_new, g_new, gtd_new)

        # bracketing phase (torch's first loop)
        bracketing = ~self.zoom
        maxed = bracketing & (self.ls_iter >= max_ls)
        live = bracketing & ~maxed
        to_zoom = live & (armijo_fail | ((self.ls_iter > 1) & (f_new >= self.f_prev)))
        wolfe_now = live & ~to_zoom & curvature
        to_zoom |= live & ~to_zoom & ~wolfe_now & (gtd_new >= 0)
        extrapolate = live & ~to_zoom & ~wolfe_now
        # zoom phase (torch's second loop), for rows that were already zooming
        if self._any(self.zoom):
            wolfe_now |= self._shrink(self.zoom.clone(), trial, armijo_fail, curvature)
        entering = to_zoom | maxed
        if self._any(entering):
            self._bracket(entering, maxed, trial, f, g, gtd)
        self.zoom = (self.zoom | to_zoom) & ~maxed

        tiny = (self.bt[:, 1] - self.bt[:, 0]).abs() * self.d_norm < tolerance_change
        from_bracket = maxed | (self.zoom & (wolfe_now | (self.ls_iter >= max_ls) | tiny))
        finished = from_bracket | (wolfe_now & bracketing)
        t_out, f_out, g_out, t_next = t, f_new, g_new, t  # most rows: the first trial, taken
        if self._any(from_bracket):
            t_out = torch.where(from_bracket, _pick(self.bt, self.low), t)
            f_out = torch.where(from_bracket, _pick(self.bf, self.low), f_new)
            g_out = torch.where(from_bracket[:, None], _pick(self.bg, self.low), g_new)
        if self._any(extrapolate):
            t_next = torch.where(extrapolate, self._extrapolated(trial, extrapolate), t_next)
        searching = self.zoom & ~finished
        if self._any(searching):
            t_next = torch.where(searching, self._zoomed(), t_next)
        self.ls_iter = self.ls_iter + (~finished).long()
        return finished, t_out, f_out, g_out, t_next

    def _any(self, mask: torch.Tensor) -> bool:
        """Whether a phase must run: always when sync-free, else when a row is in it."""
        return self.sync_free or bool(mask.any())

    def _bracket(self, rows: torch.Tensor, maxed: torch.Tensor, trial: tuple, f: torch.Tensor, g: torch.Tensor,
                 gtd: torch.Tensor) -> None:
        """A new bracket for the rows entering the zoom: [previous trial, this trial], or [0, this
        trial] after max_ls extrapolations."""
        first = (torch.where(maxed, torch.zeros_like(f), self.t_prev), torch.where(maxed, f, self.f_prev),
                 torch.where(maxed[:, None], g, self.g_prev), torch.where(maxed, gtd, self.gtd_prev))
        for name, a, b in zip(("bt", "bf", "bg", "bgtd"), first, trial):
            pair = _put(getattr(self, name), rows, torch.zeros_like(self.low), a)
            setattr(self, name, _put(pair, rows, torch.ones_like(self.low), b))
        self.low = torch.where(rows, (self.bf[:, 0] > self.bf[:, 1]).long(), self.low)
        self.insuf &= ~rows

    def _shrink(self, rows: torch.Tensor, trial: tuple, armijo_fail: torch.Tensor,
                curvature: torch.Tensor) -> torch.Tensor:
        """Zoom rows: the trial replaces the high end (no decrease) or the low end (a decrease;
        the old low end becomes the high one when the slope says the minimum lies beyond).
        Returns the rows whose trial meets both Wolfe conditions."""
        low_f, high = _pick(self.bf, self.low), 1 - self.low
        worse = rows & (armijo_fail | (trial[1] >= low_f))
        better = rows & ~worse
        flip = better & ~curvature & (trial[3] * (_pick(self.bt, high) - _pick(self.bt, self.low)) >= 0)
        for name, value in zip(("bt", "bf", "bg", "bgtd"), trial):
            pair = getattr(self, name)
            pair = _put(pair, worse, high, value)
            pair = _put(pair, flip, high, _pick(pair, self.low))
            setattr(self, name, _put(pair, better, self.low, value))
        self.low = torch.where(worse, (self.bf[:, 0] > self.bf[:, 1]).long(), self.low)
        return better & curvature

    def _extrapolated(self, trial: tuple, rows: torch.Tensor) -> torch.Tensor:
        """Bracketing rows with no bracket yet: a longer step, and the trial becomes the previous one."""
        t, f_new, g_new, gtd_new = trial
        nxt = cubic_min(self.t_prev, self.f_prev, self.gtd_prev, t, f_new, gtd_new,
                        t + 0.01 * (t - self.t_prev), t * 10)
        self.t_prev = torch.where(rows, t, self.t_prev)
        self.f_prev = torch.where(rows, f_new, self.f_prev)
        self.gtd_prev = torch.where(rows, gtd_new, self.gtd_prev)
        self.g_prev = torch.where(rows[:, None], g_new, self.g_prev)
        return nxt

    def _zoomed(self) -> torch.Tensor:
        """Zooming rows: the cubic's minimiser in the bracket, kept 0.1 of the bracket from an end
        when the last trial was already close to one (torch's insufficient-progress rule)."""
        (t0, t1), (f0, f1), (g0, g1) = self.bt.unbind(1), self.bf.unbind(1), self.bgtd.unbind(1)
        lo, hi = torch.minimum(t0, t1), torch.maximum(t0, t1)
        t = cubic_min(t0, f0, g0, t1, f1, g1, lo, hi)
        eps = 0.1 * (hi - lo)
        near = torch.minimum(hi - t, t - lo) < eps
        move = near & (self.insuf | (t >= hi) | (t <= lo))
        moved = torch.where((t - hi).abs() < (t - lo).abs(), hi - eps, lo + eps)
        self.insuf = torch.where(self.zoom, near & ~move, self.insuf)
        return torch.where(move, moved, t)
