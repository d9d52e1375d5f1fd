"""The survey's cells: every (model, footage, attack, batch), each with its budget or the reason it is not run."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from benchmarks.survey.footage import FOOTAGE
from splitleak.errors import SplitleakError

MODELS = ("lenet", "cnn6", "simple", "moderate", "resnet18", "resnet50", "mobilenet_v3_small", "vit_b_16")
ATTACKS = ("dlg", "idlg", "ig", "rgap")
BATCHES = (1, 4)
SMALL = ("lenet", "cnn6", "simple", "moderate")
SIZE = 32

# Per model and attack: (iterations, options); None / () keep the CLI default (dlg/idlg 300 L-BFGS steps of
# up to 20 evaluations x 10 restarts, ig 2,000 Adam steps, rgap closed form). Sized from
# benchmarks.survey.probe (seconds per evaluation, 1 thread): see the package docstring.
Budget = tuple[int | None, tuple[tuple[str, Any], ...]]
SMALL_BUDGET: dict[str, Budget] = {"dlg": (100, (("restarts", 1),)), "idlg": (100, (("restarts", 1),)),
                                   "ig": (None, ()), "rgap": (None, ())}
# large models: about 40 s of attack per update (~100 evaluations at resnet18's 0.34 s)
LARGE_BUDGET: dict[str, dict[str, Budget]] = {
    "resnet18": {"dlg": (5, (("restarts", 1),)), "idlg": (5, (("restarts", 1),)), "ig": (100, ())},
    "resnet50": {"dlg": (4, (("restarts", 1),)), "idlg": (4, (("restarts", 1),)), "ig": (80, ())},
    "mobilenet_v3_small": {"dlg": (15, (("restarts", 1),)), "idlg": (15, (("restarts", 1),)), "ig": (300, ())},
    # vit_b_16: ~1.1 s per evaluation; 1 L-BFGS step (~21.5 evaluations) keeps the matrix under 3 h
    "vit_b_16": {"dlg": (1, (("restarts", 1),)), "idlg": (1, (("restarts", 1),)), "ig": (30, ())},
}
QUICK_SMALL: dict[str, Budget] = {"dlg": (30, (("restarts", 1),)), "idlg": (30, (("restarts", 1),)),
                                  "ig": (300, ()), "rgap": (None, ())}
QUICK_LARGE: dict[str, Budget] = {"dlg": (1, (("restarts", 1),)), "idlg": (1, (("restarts", 1),)), "ig": (20, ())}


@dataclass(frozen=True)
class Cell:
    """One cell of the matrix: measured with `iterations` / `options` on `frames` frames, or `reason` why not."""

    model: str
    footage: str
    attack: str
    batch: int
    frames: int
    iterations: int | None = None
    options: tuple[tuple[str, Any], ...] = ()
    reason: str | None = None

    @property
    def runs(self) -> bool:
        return self.reason is None

    @property
    def recording(self) -> tuple[str, str, int, int]:
        """Cells with the same key share one recorded stream."""
        return self.model, self.footage, self.batch, self.frames


def budget(model: str, attack: str, quick: bool) -> Budget:
    if model in SMALL:
        return (QUICK_SMALL if quick else SMALL_BUDGET).get(attack, (None, ()))
    return (QUICK_LARGE if quick else LARGE_BUDGET.get(model, {})).get(attack, (None, ()))


@lru_cache(maxsize=None)
def _module(model: str, size: int) -> tuple[torch.nn.Module, tuple[int, ...], int]:
    from splitleak.models import build_split_model

    with torch.device("meta"):  # shapes only: no weights are initialised (vit_b_16 has 86 M)
        m = build_split_model(model, "none", size=size, weights="seed:0", device="meta")
    return m.tail, tuple(m.input_shape), m.num_classes


def message_mb(model: str, size: int = SIZE) -> int:
    """The wire limit (MiB) a FedSGD stream of `model` needs: the default 256, or more where the cloud's answer
    (the whole fp32 state, uncoded, edge/trainer.py) and the update (the full gradient) are larger, as vit_b_16's
    330 MiB are. The survey raises it on its own cloud and edge (--max-message-mb), the operator's choice."""
    from splitleak.wire.channel import MAX_MESSAGE_BYTES

    module = _module(model, size)[0]
    state = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    return max(MAX_MESSAGE_BYTES, state + (16 << 20)) >> 20  # 16 MiB for metadata and labels, generously


def model_refusal(model: str, size: int = SIZE) -> str | None:
    """Why no FedSGD stream of `model` can be recorded over the wire even at its largest limit, or None."""
    from splitleak.wire.channel import MAX_MESSAGE_MB_CEILING

    needed = message_mb(model, size)
    if needed > MAX_MESSAGE_MB_CEILING:
        return (f"fedsgd: a message needs {needed} MiB, over the wire's largest limit of "
                f"{MAX_MESSAGE_MB_CEILING} MiB")
    return None


def attack_refusal(model: str, attack: str, batch: int, size: int = SIZE) -> str | None:
    """The attack's own refusal of `model` at `batch`, from its code, without optimising; None if it fits.
    Only rgap has preconditions (batch 1; a chain of Conv2d / Linear with invertible activations)."""
    if attack != "rgap":
        return None
    from adversary.gradient.base import GradientCase
    from adversary.gradient.rgap import RGAP, unreadable

    module, shape, classes = _module(model, size)
    try:
        if batch != 1:  # rgap checks the batch before it reads any gradient
            RGAP().reconstruct(GradientCase(module, {}, batch, shape, classes))
    except SplitleakError as err:
        return f"rgap: {err}"
    why = unreadable(module, shape)
    return f"rgap: {why}" if why else None


def plan(quick: bool, models: tuple[str, ...] = MODELS, footage: tuple[str, ...] | None = None,
         attacks: tuple[str, ...] = ATTACKS, batches: tuple[int, ...] = BATCHES, frames: int | None = None,
         iterations: int | None = None, size: int = SIZE) -> list[Cell]:
    """Every (model, footage, attack, batch) cell. Frames per cell: `frames` (at batch 1; whole updates
    at batch > 1), else 1 (quick) or 2 at batch 1 and one update at batch > 1. `iterations` overrides every
    budget. Quick: footage bikes only and the QUICK budgets."""
    footage = footage or (("bikes",) if quick else FOOTAGE)
    for name in models:
        if name not in MODELS:
            raise SplitleakError(f"unknown model {name!r}; the survey's are: {', '.join(MODELS)}")
    cells = []
    for model in models:
        refused = model_refusal(model, size)
        for clip in footage:
            for batch in batches:
                n = frames or (1 if quick else 2)
                n = batch * max(1, -(-n // batch)) if batch > 1 else n  # whole updates
                for attack in attacks:
                    steps, options = budget(model, attack, quick)
                    steps = iterations if iterations is not None and attack != "rgap" else steps
                    reason = refused or attack_refusal(model, attack, batch, size)
                    cells.append(Cell(model, clip, attack, batch, n, steps, options, reason))
    return cells
