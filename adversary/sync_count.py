"""Count host synchronisations: calls that read a tensor's value back into Python.

On CUDA each of `.item()`, `.tolist()`, `float()`, `int()`, `bool()`, `.cpu()` and `.numpy()` on a
device tensor blocks the host until the GPU catches up (torch.cuda.set_sync_debug_mode reports
them there). On the CPU nothing blocks, so the same calls are counted instead: a CPU proxy for
the syncs the code would make on a GPU. Calls made from inside torch itself (e.g. a non-capturable
optimiser reading its CPU step counter) are not counted: they touch host bookkeeping, not device
values, on either device.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch

T = TypeVar("T")
READ_BACKS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "__array__", "cpu", "numpy")
_TORCH_DIR = str(Path(torch.__file__).parent)


def _from_torch(depth: int = 2) -> bool:
    """Whether the caller `depth` frames up lives inside the torch package."""
    return sys._getframe(depth).f_code.co_filename.startswith(_TORCH_DIR)


class SyncCounter:
    """Counts read-backs while `counting()` is active; `count` is the total."""

    def __init__(self) -> None:
        self.count = 0

    @contextlib.contextmanager
    def counting(self) -> Iterator["SyncCounter"]:
        saved = {name: getattr(torch.Tensor, name) for name in READ_BACKS}
        for name, original in saved.items():
            setattr(torch.Tensor, name, self._wrap(original))
        try:
            yield self
        finally:
            for name, original in saved.items():
                setattr(torch.Tensor, name, original)

    def _wrap(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if not _from_torch():
                self.count += 1
            return original(tensor, *args, **kwargs)

        return counted


def count_host_syncs(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, int]:
    """(fn(*args, **kwargs), how many tensor read-backs it made outside torch's own code)."""
    counter = SyncCounter()
    with counter.counting():
        result = fn(*args, **kwargs)
    return result, counter.count
