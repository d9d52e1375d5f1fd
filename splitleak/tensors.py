"""Moving tensors between the device a model runs on and the host the wire and the disk live on.

Every tensor that leaves a model for numpy (the wire, the tap, a recording, a PNG) goes through
`to_numpy`, which copies it to the host first: on a GPU `.numpy()` alone raises. Every tensor
that arrives from the wire and meets a model's parameters goes through `on_device` first: CUDA
refuses arithmetic between a CPU tensor and a device tensor.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A host numpy array of `t` (detached, copied off the device when it is not on the CPU)."""
    return t.detach().cpu().numpy()


def arrays(tensors: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """`to_numpy` of every value, keys kept."""
    return {name: to_numpy(t) for name, t in tensors.items()}


def on_device(tensors: Mapping[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    """Every value moved to `device` (no copy where it is already there), keys kept."""
    return {name: t.to(device) for name, t in tensors.items()}


def host_copy(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached host copies that share no memory with the originals (a snapshot of a model's state)."""
    return {name: t.detach().to("cpu", copy=True) for name, t in tensors.items()}


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for a module with neither)."""
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")
