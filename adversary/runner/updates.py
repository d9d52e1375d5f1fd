"""The gradient path's reading of a recording: which updates to attack (FedSGD gradients, FedAvg deltas),
each round's state, and each update's gradients and labels checked against the model they claim.
A FedAvg delta is handed to the attacks as its pseudo-gradient -delta / lr with its local training
(`local_training`): one step is its gradient; several are simulated by the attack."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from adversary.gradient.local import MAX_LOCAL_STEPS, LocalTraining, rounding_floor
from adversary.gradient.second_order import twice_differentiable
from adversary.runner.heads import build_head
from adversary.runner.meta import HeadKey, ItemMeta, item_meta
from splitleak.errors import SplitleakError
from splitleak.learning import LABELS
from splitleak.models import SplitModel
from splitleak.recording import RecordedItem, RecordingReader


@dataclass
class Plan:
    """What the first pass found: the updates to attack and the state item of each round."""

    updates: list[ItemMeta] = field(default_factory=list)
    states: dict[tuple[HeadKey, int], int] = field(default_factory=dict)  # (model, round) -> item index
    skipped_frames: int = 0
    stopped: bool = False  # reading stopped once max_frames were found (the rest, if any, unread)
    broken: str | None = None

    def state_of(self, update: ItemMeta) -> int | None:
        return self.states.get((update.head, update.round))


def plan_recording(folder: str, max_frames: int | None) -> Plan:
    """First pass, tensors unread: FedSGD / FedAvg updates to attack (whole updates, until max_frames frames;
    reading stops there) and the state of each round (recorded before the round's updates)."""
    if max_frames is not None and max_frames < 1:
        raise SplitleakError(f"max_frames must be >= 1, got {max_frames}")
    reader, plan, frames = RecordingReader(folder), Plan(), 0
    for item in reader:
        if item.kind == "frame":
            plan.skipped_frames += 1
            continue
        meta = item_meta(item)
        if item.kind == "state":
            plan.states.setdefault((meta.head, meta.round), item.index)
            continue
        check_attackable(meta)
        plan.updates.append(meta)
        frames += meta.batch
        if max_frames is not None and frames >= max_frames:
            plan.stopped = True
            break
    plan.broken = reader.broken
    if not plan.updates:
        broken = f" (reading stopped at {reader.broken})" if reader.broken else ""
        raise SplitleakError(f"recording {folder} has no gradient updates to invert: it holds "
                             f"{plan.skipped_frames} feature frame(s){broken}; use a feature attack for those")
    return plan


def check_attackable(update: ItemMeta) -> None:
    """SplitleakError unless the update is a gradient, or a FedAvg delta of 1..MAX_LOCAL_STEPS local SGD
    steps at a learning rate > 0 (the attack simulates those steps from the round's weights)."""
    where = f"recording item {update.index}"
    if update.mode == "fedavg":
        if not 1 <= update.local_steps <= MAX_LOCAL_STEPS or not update.lr:
            raise SplitleakError(f"{where}: a fedavg update needs 1..{MAX_LOCAL_STEPS} local steps and a learning "
                                 f"rate > 0 to be simulated, got {update.local_steps} steps at lr {update.lr}")
        return
    if update.mode != "fedsgd":
        raise SplitleakError(f"{where}: {update.mode or 'unknown-mode'} updates are not attacked; "
                             f"gradient attacks invert fedsgd gradients and fedavg deltas")


def local_training(update: ItemMeta) -> LocalTraining | None:
    """The local training an attack must simulate: None for a gradient (fedsgd, or one fedavg step)."""
    if update.mode != "fedavg" or update.local_steps == 1:
        return None
    assert update.lr is not None, "check_attackable refuses a fedavg update without a learning rate"
    return LocalTraining(update.local_steps, update.lr)


def update_floor(update: ItemMeta, module: torch.nn.Module, pseudo: dict[str, torch.Tensor]) -> float:
    """The relative loss a FedAvg delta's float32 rounding leaves at the truth (local.rounding_floor) from the
    round's weights in `module` and the update's pseudo-gradient; 0 for a gradient (fedsgd)."""
    if update.mode != "fedavg":
        return 0.0
    assert update.lr is not None, "check_attackable refuses a fedavg update without a learning rate"
    weights = dict(module.named_parameters())
    floor = rounding_floor({n: weights[n] for n in pseudo}, pseudo, update.local_steps, update.lr)
    if not math.isfinite(floor):  # weights at float32's limit: an untrusted recording's, not an edge's
        raise SplitleakError(f"recording item {update.index}: the round's weights reach float32's limit, so its "
                             f"fedavg delta's rounding is unbounded")
    return floor


def check_state(update: ItemMeta, module: torch.nn.Module, state: RecordedItem) -> None:
    """SplitleakError unless the state item holds exactly the module's tensors, shapes included."""
    expected = module.state_dict()
    shapes = state.shapes
    where = f"state item {state.index} (round {update.round}) does not fit {update.head.model}/{update.head.split}"
    for name, value in expected.items():
        if name not in shapes:
            raise SplitleakError(f"{where}: missing {name!r}")
        if tuple(shapes[name]) != tuple(value.shape):
            raise SplitleakError(f"{where}: {name!r} has shape {list(shapes[name])}, expected {list(value.shape)}")
    extra = sorted(set(shapes) - set(expected))
    if extra:
        raise SplitleakError(f"{where}: unexpected {extra[0]!r}")


def wire_gradients(update: ItemMeta, module: torch.nn.Module, item: RecordedItem) -> dict[str, torch.Tensor]:
    """The update's gradients in the module's parameter order, checked against its names and shapes."""
    k = update.head
    where = f"recording item {update.index}: the gradient does not match {k.model}/{k.split} at {k.size}px"
    shapes = {n: s for n, s in item.shapes.items() if n != LABELS}
    declared = list(update.param_names)
    if declared and sorted(declared) != sorted(shapes):
        odd = sorted(set(declared) ^ set(shapes))
        raise SplitleakError(f"{where}: param_names and tensors differ (e.g. {odd[0]!r})")
    params = dict(module.named_parameters())
    for name, shape in shapes.items():
        if name not in params:
            raise SplitleakError(f"{where}: it has no parameter {name!r}")
        if tuple(shape) != tuple(params[name].shape):
            raise SplitleakError(f"{where}: {name!r} has shape {list(shape)}, "
                                 f"the parameter has {list(params[name].shape)}")
    if not shapes:
        raise SplitleakError(f"recording item {update.index}: the update carries no gradient tensors")
    grads = {n: np.asarray(item.tensors[n], dtype=np.float32) for n in params if n in shapes}
    if update.mode == "fedavg":  # the pseudo-gradient -delta / lr: one SGD step's is its gradient
        grads = {n: d / np.float32(-update.lr) for n, d in grads.items()}
    for name, g in grads.items():
        if not np.isfinite(g).all():
            raise SplitleakError(f"recording item {update.index}: gradient {name!r} is not finite")
    return {n: torch.from_numpy(g) for n, g in grads.items()}


def wire_labels(update: ItemMeta, item: RecordedItem, num_classes: int) -> torch.Tensor | None:
    """The update's class ids (B,), when it carried them."""
    if LABELS not in item.shapes:
        return None
    y = np.asarray(item.tensors[LABELS])
    if y.shape != (update.batch,) or y.dtype.kind not in "iu" or (y.size and (y.min() < 0 or y.max() >= num_classes)):
        raise SplitleakError(f"recording item {update.index}: labels must be {update.batch} class ids "
                             f"in [0, {num_classes})")
    return torch.from_numpy(y.astype(np.int64))


class Models:
    """Builds each model once and hands out its trained module with a round's weights loaded."""

    def __init__(self, device: str, weights_path: str | None) -> None:
        self.device, self.weights_path = device, weights_path
        self.built: dict[HeadKey, tuple[SplitModel, dict[str, torch.Tensor]]] = {}

    def model(self, key: HeadKey) -> SplitModel:
        """The split model of `key`, its trained part made twice differentiable (every attack needs it)."""
        if key not in self.built:
            model = build_head(key, self.device, self.weights_path)
            twice_differentiable(model.tail)  # the attacker's copy only: same values, a double backward
            self.built[key] = (model, {k: v.clone() for k, v in model.tail.state_dict().items()})
        return self.built[key][0]

    def module(self, update: ItemMeta, state: RecordedItem | None) -> torch.nn.Module:
        """The model's trained part with the round's recorded state (its initial weights without one)."""
        module = self.model(update.head).tail
        if state is None:
            module.load_state_dict(self.built[update.head][1])
        else:
            check_state(update, module, state)
            module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.tensors.items()})
        return module.eval()
