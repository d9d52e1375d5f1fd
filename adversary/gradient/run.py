"""`splitleak attack` for gradient attacks: invert every FedSGD update of a recording.

A recording holds "update" items (a gradient with its LearningMeta) and "state" items (the
trained module's state_dict each round starts from). Each FedSGD update is replayed against
the state of its round (the model's own weights tag where the recording has no state for the
round), the attack recovers the batch, and the output folder gets one PNG per frame (split
`none`) or one safetensors file of recovered features per update (a split point), then
metrics.json and config.json in the contract's shape.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from adversary.evaluate import base_config, score_pairs, summarise, truth_index, write_grid, write_metrics
from adversary.gradient.base import GradientCase, GradientInversionAttack, GradientResult
from adversary.gradient.features import feature_scores
from adversary.heads import build_head, check_weights_path
from adversary.metrics import psnr, resize_to
from adversary.registry import get_attack
from adversary.tapped import HeadKey
from splitleak.errors import SplitleakError
from splitleak.learning import LABELS
from splitleak.models import SplitModel, feature_shape, get_spec
from splitleak.recording import RecordedItem, RecordingReader, write_json
from splitleak.video import frame_name, index_frames, load_png, save_png

EVAL_SIZE, SUCCESS_DB = 128, 30.0
FEATURES_SUFFIX = ".features.safetensors"


def make_gradient_attack(name: str, iterations: int | None,
                         options: dict[str, Any] | None = None) -> GradientInversionAttack:
    """Instantiate a registered gradient attack with `iterations` and keyword `options` if given."""
    cls = get_attack(name)
    if getattr(cls, "family", None) != "gradient":
        raise SplitleakError(f"attack {name!r} inverts features, not gradients")
    options = dict(options or {})
    known = set(inspect.signature(cls.__init__).parameters) - {"self", "iterations"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise SplitleakError(f"attack {name!r} has no option {unknown[0]!r}; it takes {', '.join(sorted(known)) or 'none'}")
    if iterations is not None and (isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1):
        raise SplitleakError(f"iterations must be a positive integer, got {iterations!r}")
    if iterations is not None:
        options["iterations"] = iterations
    try:
        return cls(**options)
    except TypeError as err:
        raise SplitleakError(f"attack {name!r}: {err}") from None


def features_name(stream: str, seq: int) -> str:
    """File of the features recovered from the update that starts at frame `seq` of `stream`."""
    return frame_name(stream, seq)[: -len(".png")] + FEATURES_SUFFIX


def _int(value: Any, what: str, index: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SplitleakError(f"recording item {index}: bad {what} {value!r}") from None
    if number < 0:
        raise SplitleakError(f"recording item {index}: bad {what} {value!r}")
    return number


@dataclass(frozen=True)
class UpdateRef:
    """One tapped update: where it is, whose frames it covers, which model and round."""

    index: int
    key: HeadKey
    stream: str
    seq: int
    batch: int
    round: int
    mode: str


def model_key(meta: dict[str, Any], index: int) -> HeadKey:
    """The model a frame / state meta names, with size and classes resolved to the model's defaults."""
    model = meta.get("model_id") or ""
    try:
        spec = get_spec(model)
    except SplitleakError as err:
        raise SplitleakError(f"recording item {index}: {err}") from None
    size = _int(meta.get("input_size") or spec.default_size, "input_size", index)
    classes = _int(meta.get("num_classes") or spec.default_classes, "num_classes", index)
    return HeadKey(model, meta.get("split_point") or "none", size, meta.get("weights") or "seed:0", classes)


def _update_ref(item: RecordedItem) -> UpdateRef:
    meta, i = item.meta, item.index
    frame = meta.get("frame") or {}
    batch = _int(meta.get("batch_size", 1), "batch_size", i)
    if batch < 1:
        raise SplitleakError(f"recording item {i}: batch_size must be >= 1")
    return UpdateRef(i, model_key(frame, i), frame.get("stream_id") or "", _int(frame.get("seq", 0), "seq", i), batch,
                     _int(meta.get("round", 0), "round", i), str(meta.get("mode") or ""))


@dataclass
class Plan:
    """What the first pass found: the updates to attack and the state item of each round."""

    updates: list[UpdateRef] = field(default_factory=list)
    states: dict[tuple[HeadKey, int], int] = field(default_factory=dict)  # (model, round) -> item index
    skipped_frames: int = 0
    skipped_updates: int = 0
    broken: str | None = None


def _state_key(item: RecordedItem) -> tuple[HeadKey, int]:
    return model_key(item.meta, item.index), _int(item.meta.get("round", 0), "round", item.index)


def plan_recording(folder: str, max_frames: int | None) -> Plan:
    """First pass: FedSGD updates to attack (whole updates, until max_frames frames), states by round."""
    if max_frames is not None and max_frames < 1:
        raise SplitleakError(f"max_frames must be >= 1, got {max_frames}")
    reader, plan, frames = RecordingReader(folder), Plan(), 0
    for item in reader:
        if item.kind == "frame":
            plan.skipped_frames += 1
        elif item.kind == "state":
            plan.states.setdefault(_state_key(item), item.index)
        elif item.kind == "update":
            ref = _update_ref(item)
            if ref.mode != "fedsgd":
                raise SplitleakError(f"recording item {item.index}: {ref.mode or 'unknown-mode'} updates are not "
                                     f"attacked yet; gradient attacks invert fedsgd gradients only")
            if max_frames is not None and frames >= max_frames:
                plan.skipped_updates += 1
                continue
            plan.updates.append(ref)
            frames += ref.batch
    plan.broken = reader.broken
    if not plan.updates:
        broken = f" (reading stopped at {reader.broken})" if reader.broken else ""
        raise SplitleakError(f"recording {folder} has no gradient updates to invert: it holds "
                             f"{plan.skipped_frames} feature frame(s){broken}; use a feature attack for those")
    return plan


def _check_state(ref: UpdateRef, module: torch.nn.Module, state: dict[str, np.ndarray], index: int) -> None:
    expected = module.state_dict()
    where = f"state item {index} (round {ref.round}) does not fit {ref.key.model}/{ref.key.split}"
    for name, value in expected.items():
        if name not in state:
            raise SplitleakError(f"{where}: missing {name!r}")
        if tuple(state[name].shape) != tuple(value.shape):
            raise SplitleakError(f"{where}: {name!r} has shape {list(state[name].shape)}, expected {list(value.shape)}")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise SplitleakError(f"{where}: unexpected {extra[0]!r}")


def wire_gradients(ref: UpdateRef, module: torch.nn.Module, item: RecordedItem) -> dict[str, torch.Tensor]:
    """The update's gradients in the module's parameter order, checked against its names and shapes."""
    where = f"recording item {ref.index}: the gradient does not match {ref.key.model}/{ref.key.split} at {ref.key.size}px"
    grads = {k: v for k, v in item.tensors.items() if k != LABELS}
    declared = [str(n) for n in item.meta.get("param_names") or []]
    if declared and sorted(declared) != sorted(grads):
        odd = sorted(set(declared) ^ set(grads))
        raise SplitleakError(f"{where}: param_names and tensors differ (e.g. {odd[0]!r})")
    params = dict(module.named_parameters())
    for name, g in grads.items():
        if name not in params:
            raise SplitleakError(f"{where}: it has no parameter {name!r}")
        if tuple(g.shape) != tuple(params[name].shape):
            raise SplitleakError(f"{where}: {name!r} has shape {list(g.shape)}, "
                                 f"the parameter has {list(params[name].shape)}")
        if not np.isfinite(g).all():
            raise SplitleakError(f"recording item {ref.index}: gradient {name!r} is not finite")
    if not grads:
        raise SplitleakError(f"recording item {ref.index}: the update carries no gradient tensors")
    return {n: torch.from_numpy(np.asarray(grads[n], dtype=np.float32)) for n in params if n in grads}


def wire_labels(ref: UpdateRef, item: RecordedItem, num_classes: int) -> torch.Tensor | None:
    """The update's class ids (B,), when it carried them."""
    if LABELS not in item.tensors:
        return None
    y = np.asarray(item.tensors[LABELS])
    if y.shape != (ref.batch,) or y.dtype.kind not in "iu" or (y.size and (y.min() < 0 or y.max() >= num_classes)):
        raise SplitleakError(f"recording item {ref.index}: labels must be {ref.batch} class ids in [0, {num_classes})")
    return torch.from_numpy(y.astype(np.int64))


class _Models:
    """Builds each model once and hands out its trained module with a round's weights loaded."""

    def __init__(self, device: str, weights_path: str | None) -> None:
        self.device, self.weights_path = device, weights_path
        self.built: dict[HeadKey, tuple[SplitModel, dict[str, torch.Tensor]]] = {}

    def model(self, key: HeadKey) -> SplitModel:
        if key not in self.built:
            spec = get_spec(key.model)
            if spec.input_kind != "image":
                raise SplitleakError(f"{key.model} takes clips; gradient attacks invert images or features only")
            model = build_head(key, self.device, self.weights_path)
            self.built[key] = (model, {k: v.clone() for k, v in model.tail.state_dict().items()})
        return self.built[key][0]

    def module(self, ref: UpdateRef, state: dict[str, np.ndarray] | None, state_index: int) -> torch.nn.Module:
        model = self.model(ref.key)
        module = model.tail
        if state is None:
            module.load_state_dict(self.built[ref.key][1])
        else:
            _check_state(ref, module, state, state_index)
            module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
        return module.eval()


@dataclass
class Outcome:
    """One attacked update: its rows (one per frame) and, for feature recordings, the features."""

    ref: UpdateRef
    result: GradientResult
    rows: list[dict[str, Any]]
    seconds: float


def _order_by_truth(result: GradientResult, truths: list[np.ndarray | None], image: bool) -> list[int]:
    """The permutation of the batch's reconstructions that best matches the truth (Hungarian on PSNR
    for images, cosine for features); identity where any truth is missing or the batch is 1."""
    b = len(truths)
    if b == 1 or any(t is None for t in truths):
        return list(range(b))
    rec = result.inputs.detach().float().cpu().numpy()
    score = np.zeros((b, b))
    for i, t in enumerate(truths):
        for j in range(b):
            if image:
                score[i, j] = psnr(resize_to(rec[j], t.shape[1:]), t)  # type: ignore[union-attr]
            else:
                score[i, j] = float(feature_scores(torch.from_numpy(rec[j][None]), torch.from_numpy(t[None]))[1])
    _, cols = linear_sum_assignment(-score)
    return [int(c) for c in cols]


class _Truth:
    """Ground truth the evaluation (never the attack) reads: frame PNGs and, for features, feature files."""

    def __init__(self, folder: str | None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.frames = truth_index(folder) if folder is not None else {}

    def image(self, stream: str, seq: int) -> np.ndarray | None:
        path = self.frames.get((stream, seq))
        return None if path is None else load_png(path)

    def features(self, ref: UpdateRef, model: SplitModel) -> list[np.ndarray | None]:
        """True features per frame: a `features` tensor in truth/<update>.features.safetensors, else
        the head run on the truth PNGs (white-box evaluation; PNG rounding makes this approximate)."""
        if self.folder is None:
            return [None] * ref.batch
        path = self.folder / features_name(ref.stream, ref.seq)
        if path.is_file():
            z = load_file(str(path))["features"].astype(np.float32)
            return [z[i] for i in range(ref.batch)] if len(z) == ref.batch else [None] * ref.batch
        out: list[np.ndarray | None] = []
        for i in range(ref.batch):
            x = self.image(ref.stream, ref.seq + i)
            if x is None or x.shape[1:] != (ref.key.size, ref.key.size):
                out.append(None)
                continue
            with torch.no_grad():
                z = model.head(torch.from_numpy(x)[None].to(next(iter(model.tail.parameters())).device))
            out.append(z[0].float().cpu().numpy())
        return out


class _Runner:
    def __init__(self, attack: GradientInversionAttack, out: Path, device: str, seed: int,
                 weights_path: str | None, truth: _Truth, bar: tqdm) -> None:
        self.attack, self.out, self.device, self.seed = attack, out, device, seed
        self.models, self.truth, self.bar = _Models(device, weights_path), truth, bar
        self.outcomes: list[Outcome] = []
        self.seconds = 0.0

    def attack_update(self, ref: UpdateRef, item: RecordedItem, state: RecordedItem | None) -> None:
        module = self.models.module(ref, None if state is None else state.tensors, -1 if state is None else state.index)
        model = self.models.model(ref.key)
        image = ref.key.split == "none"
        shape = tuple(model.input_shape) if image else feature_shape(ref.key.model, ref.key.split, size=ref.key.size,
                                                                    num_classes=ref.key.num_classes)
        labels = wire_labels(ref, item, model.num_classes)
        case = GradientCase(module, wire_gradients(ref, module, item), ref.batch, shape, model.num_classes, labels,
                            "image" if image else "features", torch.device(self.device), self.seed + ref.index)
        self.attack.check_access(case)
        start = time.perf_counter()
        result = self.attack.reconstruct(case)
        if case.device.type == "cuda":
            torch.cuda.synchronize(case.device)
        seconds = time.perf_counter() - start
        self.seconds += seconds
        self.outcomes.append(self._save(ref, model, result, labels, state, seconds, image))
        self.bar.update(ref.batch)

    def _save(self, ref: UpdateRef, model: SplitModel, result: GradientResult, labels: torch.Tensor | None,
              state: RecordedItem | None, seconds: float, image: bool) -> Outcome:
        truths = ([self.truth.image(ref.stream, ref.seq + i) for i in range(ref.batch)] if image
                  else self.truth.features(ref, model))
        order = _order_by_truth(result, truths, image)
        inputs = result.inputs.detach().float().cpu()[order]
        found = result.labels.detach().cpu()[order]
        rows = []
        for i in range(ref.batch):
            row: dict[str, Any] = {"stream": ref.stream, "seq": ref.seq + i, "update": ref.index, "round": ref.round,
                                   "state": "recorded" if state is not None else "initial",
                                   "gradient_loss": float(result.loss[order[i]]),
                                   "attack_success": bool(result.success[order[i]]), "label": int(found[i]),
                                   "label_true": None if labels is None else int(labels[i])}
            if image:
                save_png(self.out / frame_name(ref.stream, ref.seq + i), inputs[i].numpy())
            elif truths[i] is not None:
                mse, cos = feature_scores(inputs[i][None], torch.from_numpy(truths[i])[None])  # type: ignore[arg-type]
                row.update(feature_mse=float(mse[0]), feature_cosine=float(cos[0]))
            rows.append(row)
        if not image:
            path = self.out / features_name(ref.stream, ref.seq)
            save_file({"features": inputs.numpy(), LABELS: found.numpy()}, str(path))
        return Outcome(ref, result, rows, seconds)


def _stream_updates(recording: str, plan: Plan, runner: _Runner) -> None:
    """Second pass: attack each planned update once its round's state (if recorded) has been read."""
    wanted = {u.index: u for u in plan.updates}
    state_of = {u.index: plan.states.get((u.key, u.round)) for u in plan.updates}
    needed = {i for i in state_of.values() if i is not None}
    states: dict[int, RecordedItem] = {}
    waiting: dict[int, list[tuple[UpdateRef, RecordedItem]]] = {}
    for item in RecordingReader(recording):
        if item.index in needed:
            states[item.index] = item
            for ref, update in waiting.pop(item.index, []):
                runner.attack_update(ref, update, item)
        ref = wanted.get(item.index)
        if ref is None:
            continue
        s = state_of[ref.index]
        if s is None or s in states:
            runner.attack_update(ref, item, None if s is None else states[s])
        else:
            waiting.setdefault(s, []).append((ref, item))


def _metrics(runner: _Runner, out: Path, truth: _Truth, image: bool,
             threshold: float | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows = [r for o in runner.outcomes for r in o.rows]
    empty = {"psnr": None, "ssim": None, "psnr_native": None, "ssim_native": None}
    scores: dict[tuple[str, int], dict[str, Any]] = {}
    if image and truth.folder is not None:
        recon = index_frames(out)
        pairs = [((r["stream"], r["seq"]), recon[(r["stream"], r["seq"])], truth.frames[(r["stream"], r["seq"])])
                 for r in rows if (r["stream"], r["seq"]) in truth.frames and (r["stream"], r["seq"]) in recon]
        scores = {(s["stream"], s["seq"]): s for s in score_pairs(pairs, {"": EVAL_SIZE, "_native": None})}
        if pairs:
            write_grid(pairs, out / "grid.png", EVAL_SIZE)
    frames = []
    for r in rows:
        row = {**empty, **r, **scores.get((r["stream"], r["seq"]), {})}
        checks = [] if threshold is None else [row["gradient_loss"] < threshold]
        if row["psnr"] is not None:
            checks.append(row["psnr"] >= SUCCESS_DB)
        row["success"] = all(checks) if checks else None
        row["label_correct"] = None if row["label_true"] is None else row["label"] == row["label_true"]
        frames.append(row)
    summary = summarise(frames, SUCCESS_DB, runner.seconds, ("", "_native"))
    summary["success_rate_psnr"] = summary["success_rate"]
    summary["success_rate"] = _rate([f["success"] for f in frames])
    summary["success_rate_loss"] = (None if threshold is None else _rate([f["gradient_loss"] < threshold for f in frames]))
    accuracies = [(o.result.extra.get("label_accuracy"), o.ref.batch) for o in runner.outcomes]
    known = [(a, b) for a, b in accuracies if a is not None]
    summary["label_accuracy"] = sum(a * b for a, b in known) / sum(b for _, b in known) if known else None
    summary["frames"], summary["updates"] = len(frames), len(runner.outcomes)
    summary["seconds_per_frame"] = runner.seconds / len(frames) if frames else None
    summary["mean_gradient_loss"] = float(np.mean([f["gradient_loss"] for f in frames]))
    for k in ("feature_mse", "feature_cosine"):
        vals = [f[k] for f in frames if f.get(k) is not None]
        summary[f"mean_{k}"] = float(np.mean(vals)) if vals else None
    return frames, summary


def _rate(flags: list[bool | None]) -> float | None:
    known = [bool(f) for f in flags if f is not None]
    return sum(known) / len(known) if known else None


def run_gradient_attack(recording: str, attack: str, out: str, *, truth: str | None = None, device: str = "cpu",
                        iterations: int | None = None, seed: int = 0, weights_path: str | None = None,
                        max_frames: int | None = None, options: dict[str, Any] | None = None,
                        progress: bool = True) -> dict[str, Any]:
    """Invert every FedSGD update of `recording` with gradient attack `attack`; write outputs to `out`.

    Split `none`: one PNG per frame, scored with `truth` at 128 px (psnr, ssim) and at the truth's
    size (psnr_native, ssim_native). A split point: one `*.features.safetensors` per update, scored
    by feature MSE / cosine against truth feature files or the head run on the truth PNGs. A frame
    succeeds when its gradient loss is below the attack's threshold and, where scored, PSNR >= 30 dB.
    Returns the metrics dict (also in out/metrics.json; config in out/config.json).
    """
    from adversary.run import output_folder

    started = time.perf_counter()
    out_dir = output_folder(recording, out, truth)
    method = make_gradient_attack(attack, iterations, options)
    plan = plan_recording(recording, max_frames)
    keys = {u.key for u in plan.updates}
    check_weights_path(keys, weights_path)
    splits = {k.split == "none" for k in keys}
    if len(splits) > 1:
        raise SplitleakError("the recording mixes raw-frame (split none) and feature updates; attack them separately")
    image = splits.pop()
    truths = _Truth(truth)
    wanted = {(u.stream, u.seq + i) for u in plan.updates for i in range(u.batch)}
    if truth is not None and image and not wanted & truths.frames.keys():
        first = plan.updates[0]
        raise SplitleakError(f"no truth frame in {truth} matches the recording's frames "
                             f"(expected PNGs named like {frame_name(first.stream, first.seq)})")
    out_dir.mkdir(parents=True, exist_ok=True)
    total = sum(u.batch for u in plan.updates)
    with tqdm(total=total, disable=not progress, unit="frame", desc=f"attack {attack}") as bar:
        runner = _Runner(method, out_dir, device, seed, weights_path, truths, bar)
        for key in sorted(keys, key=str):
            runner.models.model(key)  # build every model (and check weights) before the long part
        _stream_updates(recording, plan, runner)
    frames, summary = _metrics(runner, out_dir, truths, image, method.loss_threshold)
    config = _config(recording, attack, method, plan, keys, device, seed, weights_path, max_frames, truth)
    config.update(base_config(EVAL_SIZE, SUCCESS_DB), native_size="the truth frame's own size",
                  attack_seconds=runner.seconds, total_seconds=time.perf_counter() - started)
    write_json(out_dir / "config.json", config)
    return write_metrics(out_dir, frames, summary, config)


def _config(recording: str, attack: str, method: GradientInversionAttack, plan: Plan, keys: set[HeadKey],
            device: str, seed: int, weights_path: str | None, max_frames: int | None,
            truth: str | None) -> dict[str, Any]:
    threshold = method.loss_threshold
    loss_rule = f"gradient loss < {threshold:g}" if threshold is not None else None
    criterion = " and ".join(x for x in (loss_rule, f"PSNR at {EVAL_SIZE}px >= {SUCCESS_DB:g} dB where the truth "
                                                    f"is given") if x)
    models = [{"model": k.model, "split": k.split, "size": k.size, "weights": k.weights, "num_classes": k.num_classes,
               "updates": sum(u.key == k for u in plan.updates)} for k in sorted(keys, key=str)]
    rounds = sorted({u.round for u in plan.updates})
    config: dict[str, Any] = {
        "attack": attack, "family": "gradient", "attack_config": method.config(), "access": sorted(method.access),
        "threat_model": "honest-but-curious server: the FedSGD gradient, the model's architecture and the "
                        "round's weights, the batch size",
        "success_criterion": criterion, "success_loss_below": threshold, "success_psnr_db": SUCCESS_DB,
        "success_rate_loss": "fraction of frames whose update's gradient loss is below the attack's threshold",
        "success_rate_psnr": f"fraction of scored frames at PSNR >= {SUCCESS_DB:g} dB ({EVAL_SIZE}px)",
        "batch_order": "reconstructions of a batch are matched to the truth frames by PSNR (features: cosine), "
                       "Hungarian; a batch's order is not in its gradient",
        "label_accuracy": "labels recovered vs the labels on the wire, as multisets per update",
        "iterations": getattr(method, "iterations", None), "seed": seed, "seed_per_update": "seed + item index",
        "device": device, "recording": str(Path(recording).resolve()), "truth": truth, "weights_path": weights_path,
        "max_frames": max_frames, "frames": sum(u.batch for u in plan.updates), "updates": len(plan.updates),
        "models": models, "rounds": rounds,
        "rounds_without_state": sorted({u.round for u in plan.updates if (u.key, u.round) not in plan.states}),
        "without_state": "the model's weights tag (round 0 weights)", "skipped_frames": plan.skipped_frames,
        "skipped_updates": plan.skipped_updates, "recording_broken": plan.broken, "torch": torch.__version__}
    if len(models) == 1:
        config.update({k: models[0][k] for k in ("model", "split", "size", "weights")})
    return config
