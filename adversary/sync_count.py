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
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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


# ---- per kind, per thread, with CUDA's own count: for tests and per-iteration figures ----

_CUDA_SYNC_WARNING = "called a synchronizing CUDA operation"
_exclusive = threading.Lock()  # one counting_host_syncs at a time: the wrapping is global


@dataclass
class HostSyncCount:
    """What a counted block read back: `by_kind` per method, `total`, and on CUDA `cuda_syncs` (the
    synchronising operations torch.cuda.set_sync_debug_mode("warn") reported, which sees the rest)."""

    by_kind: Counter = field(default_factory=Counter)
    cuda_syncs: int = 0

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


@contextlib.contextmanager
def counting_host_syncs(cuda: bool | None = None) -> Iterator[HostSyncCount]:
    """Count, per kind, the read-backs this thread makes inside the block (outside torch's own code,
    the outermost call only: `np.asarray(t)` is one `__array__`). Other threads (a gRPC server in
    the same process) are not counted. `cuda`: also count CUDA's synchronising operations
    (default: when CUDA is available)."""
    count, owner, state = HostSyncCount(), threading.get_ident(), threading.local()

    def wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != owner or getattr(state, "inside", False) or _from_torch():
                return original(tensor, *args, **kwargs)
            count.by_kind[name] += 1
            state.inside = True
            try:
                return original(tensor, *args, **kwargs)
            finally:
                state.inside = False

        return counted

    cuda = torch.cuda.is_available() if cuda is None else cuda
    with _exclusive:
        saved = {name: torch.Tensor.__dict__.get(name) for name in READ_BACKS}
        for name in READ_BACKS:
            setattr(torch.Tensor, name, wrap(name, getattr(torch.Tensor, name)))
        try:
            with _cuda_sync_warnings(count) if cuda else contextlib.nullcontext():
                yield count
        finally:
            for name, original in saved.items():
                if original is None:
                    delattr(torch.Tensor, name)  # back to the inherited C method
                else:
                    setattr(torch.Tensor, name, original)


@contextlib.contextmanager
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
