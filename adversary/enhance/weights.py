"""Pretrained super-resolution weights through spandrel, read without pickle.

spandrel (`ModelLoader().load_from_file`) detects the architecture from a state dict's keys (ESRGAN /
Real-ESRGAN RRDBNet, SwinIR, HAT, Real-CUGAN, ... ~40 families). Its own file reader is not used:
for .pth/.ckpt it calls torch.load with a restricted unpickler (a whitelist, not weights_only), and
for .pt it tries torch.jit.load first, which runs TorchScript code from the file. Here the file is
read with `torch.load(weights_only=True)` or safetensors, and only the state dict goes to spandrel
(`load_from_state_dict`). A folder written by `splitleak train-sr` (model.safetensors + config.json)
holds a compact RRDBNet with Real-ESRGAN's key names, which spandrel loads as ESRGAN: one path for both.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from adversary.enhance.training import WEIGHTS_FILE, read_config, read_state_dict
from splitleak.errors import SplitleakError

PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


def read_weights(path: str | Path) -> dict[str, Any]:
    """The raw state dict of a weight file (.safetensors, or .pth/.pt/.ckpt/.bin read weights_only)
    or of a train-sr folder; SplitleakError for a missing, corrupt or unsupported file."""
    path = Path(path)
    if path.is_dir():
        read_config(path)  # a train-sr folder: its config must be readable JSON
        return read_state_dict(path / WEIGHTS_FILE)
    if not path.is_file():
        raise SplitleakError(f"weights not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return read_state_dict(path)
    if suffix not in PICKLE_SUFFIXES:
        raise SplitleakError(f"unsupported weights file {path.name}: expected .safetensors, "
                             f"{', '.join(PICKLE_SUFFIXES)} or a train-sr folder")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SplitleakError(f"cannot read weights {path} (a state dict saved with torch.save is expected; "
                             f"TorchScript and pickled modules are refused): {first}") from None
    if not isinstance(state, dict):
        raise SplitleakError(f"weights {path} hold a {type(state).__name__}, not a state dict")
    return state


def load_descriptor(path: str | Path, device: str | torch.device = "cpu") -> Any:
    """A spandrel ImageModelDescriptor (RGB in, RGB out) for a weight file or train-sr folder, in eval mode."""
    import spandrel

    state = spandrel.canonicalize_state_dict(read_weights(path))
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SplitleakError(f"weights {path} are not a flat state dict of tensors")
    try:
        desc = spandrel.ModelLoader(device).load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise SplitleakError(f"spandrel recognises no super-resolution architecture in {path}") from None
    except (KeyError, RuntimeError, ValueError, IndexError, TypeError, AttributeError) as err:
        raise SplitleakError(f"weights {path} look like a known architecture but do not load: "
                             f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    if not isinstance(desc, spandrel.ImageModelDescriptor) or desc.input_channels != 3 or desc.output_channels != 3:
        raise SplitleakError(f"weights {path} are a {desc.architecture.name} model, not an RGB image-to-image one")
    return desc.eval()
