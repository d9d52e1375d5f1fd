"""Count host synchronisations: the calls that read a tensor's value back to Python.

On a GPU each such read (`.item()`, `float(t)`, `bool(t)` in an `if`, `.tolist()`, `.cpu()`,
`.numpy()`) stalls the host until the device has finished, so an iteration loop that makes one
per step runs at the latency of a round trip, not at the device's speed. The CPU has no such
stall, but the calls are the same, so counting them on the CPU measures what a GPU would pay.

`count_host_syncs(fn)` runs `fn` and returns how many such calls it made; `counting_host_syncs()`
is the same as a context manager with a per-kind breakdown. The count wraps `torch.Tensor`'s
methods for the duration (calls from other threads are not counted; calls made from C++ inside
torch are not seen). On CUDA it also turns on `torch.cuda.set_sync_debug_mode("warn")` and counts
the synchronising operations the driver reports (`cuda_syncs`), which catches the rest.
"""

from __future__ import annotations

import threading
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

# The Tensor methods whose call reads a value back to the host.
SYNC_METHODS = ("__bool__", "__float__", "__int__", "__index__", "item", "tolist", "cpu", "numpy")

_CUDA_SYNC_WARNING = "called a synchronizing CUDA operation"
_lock = threading.Lock()  # one counter at a time: the wrapping is global to the process


@dataclass
class HostSyncCount:
    """What a counted block did: `total` Python-level reads, `by_kind` per method, `cuda_syncs`."""

    by_kind: Counter = field(default_factory=Counter)
    cuda_syncs: int = 0

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


def _wrap(name: str, original: Callable, count: HostSyncCount, owner: int, state: threading.local):
    def wrapper(self, *args, **kwargs):
        # Count the outermost call only (numpy() under __array__ is one read, not two).
        if threading.get_ident() == owner and not getattr(state, "inside", False):
            count.by_kind[name] += 1
            state.inside = True
            try:
                return original(self, *args, **kwargs)
            finally:
                state.inside = False
        return original(self, *args, **kwargs)

    wrapper.__name__ = name
    return wrapper


@contextmanager
def counting_host_syncs(cuda: bool | None = None) -> Iterator[HostSyncCount]:
    """Count host syncs made by this thread inside the block.

    `cuda`: also count the driver's synchronising operations (default: when CUDA is available).
    """
    count = HostSyncCount()
    state = threading.local()
    cuda = torch.cuda.is_available() if cuda is None else cuda
    with _lock:
        originals = {name: getattr(torch.Tensor, name) for name in SYNC_METHODS}
        for name, original in originals.items():
            setattr(torch.Tensor, name, _wrap(name, original, count, threading.get_ident(), state))
        try:
            if cuda:
                with _cuda_sync_warnings(count):
                    yield count
            else:
                yield count
        finally:
            for name in SYNC_METHODS:
                delattr(torch.Tensor, name)  # back to the inherited C methods


@contextmanager
def _cuda_sync_warnings(count: HostSyncCount) -> Iterator[None]:
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    count.cuda_syncs = sum(_CUDA_SYNC_WARNING in str(w.message) for w in caught)
    for w in caught:  # hand back the warnings that were not ours
        if _CUDA_SYNC_WARNING not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def count_host_syncs(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Run `fn(*args, **kwargs)` and return how many host syncs it made (Python-level reads)."""
    with counting_host_syncs() as count:
        fn(*args, **kwargs)
    return count.total
