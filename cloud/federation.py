"""A global model trained by the edges that name it: FedSGD, FedAvg and split learning.

Updates of one round are averaged once `round_size` edges have sent theirs, or once the
round has waited `round_timeout` seconds with fewer (a straggler must not stall the rest).
The global state only ever holds finite values: an update that would make any parameter
non-finite is refused on arrival, and a round whose average would is refused as a whole,
the last good state kept.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import torch

from splitleak import learning
from splitleak.errors import SplitleakError
from splitleak.models import SplitModel, feature_shape
from splitleak.tensors import host_copy, module_device, on_device

ACTIVATIONS, GRAD = "activations", "grad"


class Federation:
    def __init__(self, model: SplitModel, round_size: int = 1, round_timeout: float = 10.0,
                 on_state: Callable[["Federation", int, dict[str, torch.Tensor]], None] = lambda *a: None,
                 key: Any = None):
        self.model, self.key = model, key
        self.on_state = on_state
        self.module = learning.trained_module(model)
        self.names = learning.parameter_names(self.module)
        self.shapes = {n: tuple(p.shape) for n, p in self.module.named_parameters()}
        self.device = module_device(self.module)  # updates arrive on the host; the model may be on a GPU
        self.round_size, self.round_timeout = round_size, round_timeout
        self.round = 0
        self._pending: list[dict[str, torch.Tensor]] = []
        self._opened: float | None = None
        self._closes = 0  # rounds closed, applied or refused
        self._refused: dict[int, str] = {}  # close number -> why that round's average was refused
        self._lr = 0.0
        self._cond = threading.Condition()

    def check(self, mode: str, tensors: dict[str, torch.Tensor], names: list[str]) -> None:
        """Refuse an update that does not cover exactly the trained parameters with their shapes."""
        if mode == "split":
            return
        if sorted(tensors) != sorted(self.names) or (names and sorted(names) != sorted(self.names)):
            missing = sorted(set(self.names) - set(tensors))
            extra = sorted(set(tensors) - set(self.names))
            raise SplitleakError(f"update must cover the trained parameters of {self.model.name}/{self.model.split}: "
                                 f"missing {missing[:3]}, unexpected {extra[:3]}")
        for name, t in tensors.items():
            if tuple(t.shape) != self.shapes[name]:
                raise SplitleakError(f"{name}: shape {list(t.shape)} != expected {list(self.shapes[name])}")

    def submit(self, mode: str, tensors: dict[str, torch.Tensor], lr: float,
               on_accept: Callable[[], None] = lambda: None) -> int:
        """Add a gradient (fedsgd) or a delta (fedavg) to the open round; return the round it closed.

        SplitleakError if the update alone, or the round's average, would make a parameter non-finite.
        `on_accept` runs once the update joins the round, before the state it leads to is published.
        """
        tensors = on_device(tensors, self.device)
        with self._cond:
            self._stepped(mode, tensors, lr)  # this update alone must keep the model finite
            on_accept()
            ticket = self._closes
            self._pending.append({"mode": mode, **tensors})
            self._lr = lr
            self._opened = self._opened or time.monotonic()
            if len(self._pending) >= self.round_size:
                self._close()
            deadline = self._opened + self.round_timeout if self._opened else time.monotonic()
            while self._closes == ticket:
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    self._close()
            if ticket + 1 in self._refused:
                raise SplitleakError(self._refused[ticket + 1])
            return self.round

    def _close(self) -> None:
        """Average the round's updates into the global model (caller holds the lock)."""
        if not self._pending:
            return
        n, mode = len(self._pending), self._pending[0]["mode"]
        mean = {name: sum(u[name] / n for u in self._pending) for name in self.names}  # /n first: no overflow
        self._pending, self._opened = [], None
        self._closes += 1
        try:
            stepped = self._stepped(mode, mean, self._lr)
        except SplitleakError as err:
            self._refused[self._closes] = f"round {self.round}'s average refused, the global state kept: {err}"
            self._refused.pop(self._closes - 64, None)
        else:
            with torch.no_grad():
                params = dict(self.module.named_parameters())
                for name, value in stepped.items():
                    params[name].copy_(value)
            self.round += 1
            self.on_state(self, self.round, self._state())
        self._cond.notify_all()

    def _stepped(self, mode: str, update: dict[str, torch.Tensor], lr: float) -> dict[str, torch.Tensor]:
        """The parameters after applying `update`; SplitleakError if any would be non-finite."""
        params = dict(self.module.named_parameters())
        with torch.no_grad():
            stepped = {name: params[name] - lr * update[name] if mode == "fedsgd" else params[name] + update[name]
                       for name in self.names}
        bad = [name for name, value in stepped.items() if not torch.isfinite(value).all()]
        if bad:
            raise SplitleakError(f"the update would make {bad[0]} (and {len(bad) - 1} more) non-finite")
        return stepped

    def announce(self) -> None:
        """Publish the starting state, so round 0's updates can be replayed against it."""
        with self._cond:
            self.on_state(self, self.round, self._state())

    def split_step(self, activations: torch.Tensor, labels: torch.Tensor, lr: float,
                   on_accept: Callable[[], None] = lambda: None) -> torch.Tensor:
        """Split learning: one SGD step of the tail on the edge's activations; return dL/dz (on the host)."""
        m = self.model
        expected = feature_shape(m.name, m.split, size=m.size, num_classes=m.num_classes, clip_len=m.clip_len)
        if tuple(activations.shape[1:]) != expected or activations.shape[0] != labels.shape[0]:
            raise SplitleakError(f"activations {list(activations.shape)} with {labels.shape[0]} labels do not fit "
                                 f"{m.name}/{m.split}: expected [B, {', '.join(map(str, expected))}]")
        z = activations.to(self.device, copy=True).requires_grad_(True)
        labels = labels.to(self.device)
        with self._cond, torch.enable_grad():
            params = dict(self.module.named_parameters())
            value = learning.loss(self.module(z), labels)
            *grads, dz = torch.autograd.grad(value, [params[n] for n in self.names] + [z])
            if not torch.isfinite(dz).all():
                raise SplitleakError("the activations drive the loss's gradient to non-finite values")
            stepped = self._stepped("fedsgd", dict(zip(self.names, grads)), lr)
            on_accept()
            with torch.no_grad():
                for name, new in stepped.items():
                    params[name].copy_(new)
            self.round += 1
            self.on_state(self, self.round, self._state())
        return dz.detach().cpu()

    def state(self) -> dict[str, torch.Tensor]:
        with self._cond:
            return self._state()

    def _state(self) -> dict[str, torch.Tensor]:
        """The global state as host copies: for the wire and the tap, whatever device trains it."""
        return host_copy(learning.state(self.module))
