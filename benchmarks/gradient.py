"""Gradient-leakage benchmark: DLG / iDLG one frame at a time vs the batched engine, then Table II.

Part 1, on real 32x32 frames spread over the bundled clips (bikes, bigbuckbunny, carphone;
label = the clip's index), each frame its own batch-1 FedSGD gradient of a seeded LeNet:
per attack the success rate (the attacks' rule: gradient loss over its squared norm < 1e-8, the video
paper's absolute 1e-5 at an untrained LeNet's gradient), the share of
frames at PSNR >= 30 dB, mean PSNR / SSIM at 32x32 and at 128x128 (bicubic upscale of both, as
`splitleak evaluate`), seconds per frame (wall and process CPU). Sequential (`dlg`, `idlg`: one
frame after the other) and batched (`dlg-batched`, `idlg-batched`: all frames at once) run
back to back in one process, with the same seeds, iteration budget, restarts and stop rule
(stop a frame at success), and a comparison row gives `batched_over_sequential` (frames/s).
`ig` / `rgap` rows are added when those attacks are registered (R-GAP also on its own model, cnn6).

Part 2, Inverting Gradients on resnet18 (seeded weights, eval-mode BatchNorm) at 32x32: one
FedSGD gradient of a batch of B frames (B = 1, 4, 8, one frame per clip in turn), `ig` with a
stated iteration budget (the paper runs 24,000; this CPU affords hundreds), PSNR / SSIM of the
recovered batch and seconds. A batch's dummies carry the wire's labels, so dummy i can only
be one of the frames with its label: each dummy is matched to such a frame by least total MSE.

Part 3, the video paper's Table II: DLG, iDLG, R-GAP x classifier {simple, moderate} x
{without, with a frozen feature extractor (resnet18 cut at layer4, seeded weights, 512-d
features)}. Without it the attack targets the frame (recovered: PSNR >= 30 dB at 32x32), with
it the feature vector the classifier saw (recovered: cosine >= 0.99 to the true features); a
cell is recovered when at least half its frames are. DLG / iDLG run through the batched engine.
Cells whose model or attack is missing are reported as unavailable.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch._dynamo  # noqa: F401  (torch.func imports it on first use, seconds that are not attack time)
from tqdm import tqdm

import adversary.gradient  # noqa: F401  (registers the gradient attacks)
from adversary.gradient.base import GradientCase, GradientResult
from adversary.metrics import score
from adversary.registry import attack_names, get_attack
from benchmarks.common import parser, print_table, write
from splitleak import learning
from splitleak.errors import SplitleakError
from splitleak.models import build_split_model
from splitleak.video import open_source, to_model_input

SOURCES = ("sample:bikes", "sample:bigbuckbunny", "sample:carphone")
MODEL, SIZE, EVAL_SIZE = "lenet", 32, 128
SUCCESS_DB, FEATURE_COSINE, CELL_SHARE = 30.0, 0.99, 0.5
PAIRS = (("dlg", "dlg-batched"), ("idlg", "idlg-batched"))
EXTRA = ("ig", "rgap")
FE_MODEL, FE_SPLIT = "resnet18", "layer4"
STOP_AT_SUCCESS = {"stop_loss": 1e-8}  # both engines stop a frame once its (relative) gradient loss < 1e-8
# Table II cells that fail would spend 10 starts x 6,000 L-BFGS iterations per frame: there a start
# also ends when its loss fell by less than 1% over 500 iterations, and a frame gets 3 starts
TABLE_OPTIONS = {**STOP_AT_SUCCESS, "restarts": 3, "patience": 500, "min_progress": 0.01}


def load_frames(n: int, stride: int = 7) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """n frames (n, 3, 32, 32) in [0, 1], spread evenly over SOURCES (every `stride`-th frame), their
    labels (the clip's index) and names."""
    per = [n // len(SOURCES) + (i < n % len(SOURCES)) for i in range(len(SOURCES))]
    images, labels, names = [], [], []
    for label, (spec, count) in enumerate(zip(SOURCES, per)):
        if count == 0:
            continue
        with open_source(spec, frames=count * stride) as source:
            for i, frame in enumerate(source):
                if i % stride == 0:
                    images.append(torch.from_numpy(to_model_input(frame.image, SIZE)))
                    labels.append(label)
                    names.append(f"{spec.split(':')[1]}_{i}")
    return torch.stack(images), torch.tensor(labels), names


def make_cases(module: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, input_shape: tuple[int, ...],
               num_classes: int, kind: str = "image", seed: int = 0) -> list[GradientCase]:
    """One batch-1 case per frame, its gradient computed as the edge computes it (learning.gradients)."""
    cases = []
    for i in range(inputs.shape[0]):
        grads = {k: v.detach() for k, v in learning.gradients(module, inputs[i:i + 1], labels[i:i + 1]).items()}
        cases.append(GradientCase(module, grads, 1, input_shape, num_classes, labels[i:i + 1], kind,
                                  seed=seed + 1000 * i))
    return cases


def image_scores(recon: torch.Tensor, truth: torch.Tensor) -> dict[str, list[float]]:
    """Per frame: PSNR / SSIM at 32x32 and at 128x128 (bicubic upscale of both)."""
    out: dict[str, list[float]] = {"psnr": [], "ssim": [], "psnr_128": [], "ssim_128": []}
    for r, t in zip(recon.detach().cpu().numpy(), truth.cpu().numpy()):
        p, s = score(r, t, None)
        p128, s128 = score(r, t, EVAL_SIZE)
        for key, value in (("psnr", p), ("ssim", s), ("psnr_128", p128), ("ssim_128", s128)):
            out[key].append(value)
    return out


def run_attack(name: str, cases: list[GradientCase], batched: bool, options: dict[str, Any],
               progress: bool = True) -> tuple[GradientResult | list[GradientResult], float, float]:
    """(result(s), wall seconds, process CPU seconds): batched attacks get every case at once."""
    attack = get_attack(name)(**({**options, "progress": progress} if batched else options))
    wall, cpu = time.perf_counter(), time.process_time()
    if batched:
        results: Any = attack.reconstruct_many(cases)
    else:
        results = [attack.reconstruct(c) for c in tqdm(cases, desc=name, unit="frame", leave=False,
                                                       disable=not progress)]
    return results, time.perf_counter() - wall, time.process_time() - cpu


def summary_row(name: str, results: list[GradientResult], truth: torch.Tensor, wall: float, cpu: float,
                engine: str) -> dict[str, Any]:
    n = len(results)
    recon = torch.cat([r.inputs for r in results])
    scores = image_scores(recon, truth)
    row: dict[str, Any] = {"attack": name, "model": MODEL, "engine": engine, "frames": n,
                           "success_rate": float(np.mean([bool(r.success.all()) for r in results])),
                           "psnr30_rate": float(np.mean([p >= SUCCESS_DB for p in scores["psnr"]]))}
    row.update({k: float(np.mean(v)) for k, v in scores.items()})
    row.update({"seconds_per_frame": wall / n, "cpu_seconds_per_frame": cpu / n, "frames_per_second": n / wall})
    accuracy = [r.extra.get("label_accuracy") for r in results if r.extra.get("label_accuracy") is not None]
    if accuracy:
        row["label_accuracy"] = float(np.mean(accuracy))
    restarts = [r.extra.get("restarts_used") for r in results if isinstance(r.extra.get("restarts_used"), int)]
    if restarts:
        row["starts_mean"] = float(np.mean(restarts))
    return row


def comparison_row(seq: dict[str, Any], bat: dict[str, Any]) -> dict[str, Any]:
    return {"attack": f"{bat['attack']} vs {seq['attack']}", "model": MODEL, "engine": "comparison",
            "frames": seq["frames"], "batched_over_sequential": bat["frames_per_second"] / seq["frames_per_second"],
            "batched_over_sequential_cpu": seq["cpu_seconds_per_frame"] / bat["cpu_seconds_per_frame"],
            "psnr_sequential": seq["psnr"], "psnr_batched": bat["psnr"],
            "psnr_128_sequential": seq["psnr_128"], "psnr_128_batched": bat["psnr_128"],
            "success_sequential": seq["success_rate"], "success_batched": bat["success_rate"]}


def lenet_rows(frames: int, seed: int, attacks: list[str]) -> list[dict[str, Any]]:
    inputs, labels, _ = load_frames(frames)
    model = build_split_model(MODEL, "none", size=SIZE, weights=f"seed:{seed}")
    cases = make_cases(model.tail, inputs, labels, tuple(model.input_shape), model.num_classes, seed=seed)
    registered, rows = set(attack_names()), []
    for seq_name, bat_name in PAIRS:
        if seq_name not in attacks:
            continue
        pair = []
        for name, batched in ((seq_name, False), (bat_name, True)):
            if name not in registered:
                rows.append({"attack": name, "model": MODEL, "status": "unavailable: not registered"})
                continue
            results, wall, cpu = run_attack(name, cases, batched, STOP_AT_SUCCESS)
            pair.append(summary_row(name, results, inputs, wall, cpu, "batched" if batched else "sequential"))
            rows.append(pair[-1])
            print_table([pair[-1]], ROW_COLUMNS)
        if len(pair) == 2:
            rows.append(comparison_row(*pair))
            print_table([rows[-1]], COMPARISON_COLUMNS)
    for name in EXTRA:
        if name not in attacks:
            continue
        if name not in registered:
            rows.append({"attack": name, "model": MODEL, "status": "unavailable: not registered"})
            continue
        try:
            results, wall, cpu = run_attack(name, cases, False, {})
            rows.append(summary_row(name, results, inputs, wall, cpu, "sequential"))
        except SplitleakError as err:
            rows.append({"attack": name, "model": MODEL, "status": f"unavailable: {err}"})
        print_table([rows[-1]], ROW_COLUMNS)
    if "rgap" in attacks:
        rows.append(rgap_cnn6_row(inputs, labels, seed))
        print_table([rows[-1]], ROW_COLUMNS)
    return rows


def rgap_cnn6_row(inputs: torch.Tensor, labels: torch.Tensor, seed: int) -> dict[str, Any]:
    """R-GAP on its own model, cnn6 (bias-free, leaky ReLU), on the same frames at batch 1."""
    model = build_split_model("cnn6", "none", size=SIZE, weights=f"seed:{seed}")
    cases = make_cases(model.tail, inputs, labels, tuple(model.input_shape), model.num_classes, seed=seed)
    results, wall, cpu = run_attack("rgap", cases, False, {})
    return {**summary_row("rgap", results, inputs, wall, cpu, "sequential"), "model": "cnn6"}


# ----------------------------------------------------------------------------- IG on resnet18

IG_MODEL = "resnet18"


def match_batch(recon: torch.Tensor, truth: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """recon reordered so that recon[j] is the dummy matched to truth[j] (same label, least total MSE)."""
    from scipy.optimize import linear_sum_assignment

    cost = ((recon[:, None] - truth[None]) ** 2).flatten(2).mean(-1)
    cost = cost + 1e6 * (labels[:, None] != labels[None]).to(cost.dtype)
    rows, cols = linear_sum_assignment(cost.detach().cpu().numpy())
    order = torch.empty_like(labels)
    order[torch.as_tensor(cols)] = torch.as_tensor(rows)
    return recon[order]


def ig_rows(batches: list[int], iterations: int, seed: int) -> list[dict[str, Any]]:
    """`ig` on one batch-B FedSGD gradient of resnet18 per B: PSNR / SSIM and time."""
    inputs, labels, _ = load_frames(max(batches), stride=13)
    model = build_split_model(IG_MODEL, "none", size=SIZE, weights=f"seed:{seed}", num_classes=len(SOURCES))
    rows = []
    for b in tqdm(batches, desc="ig resnet18", unit="batch"):
        x, y = inputs[:b], labels[:b]
        grads = {k: v.detach() for k, v in learning.gradients(model.tail, x, y).items()}
        case = GradientCase(model.tail, grads, b, tuple(model.input_shape), model.num_classes, y, seed=seed)
        results, wall, cpu = run_attack("ig", [case], False, {"iterations": iterations}, progress=False)
        scores = image_scores(match_batch(results[0].inputs, x, y), x)
        rows.append({"attack": "ig", "model": IG_MODEL, "engine": "sequential", "batch_size": b, "frames": b,
                     "iterations": iterations, "psnr30_rate": float(np.mean([p >= SUCCESS_DB for p in scores["psnr"]])),
                     **{k: float(np.mean(v)) for k, v in scores.items()},
                     "cosine_loss": float(results[0].loss[0]), "seconds": wall, "seconds_per_frame": wall / b,
                     "cpu_seconds_per_frame": cpu / b, "seconds_per_iteration": wall / iterations})
        print_table(rows[-1:], IG_COLUMNS)
    return rows


# ----------------------------------------------------------------------------- Table II

TABLE_ATTACKS = (("DLG", "dlg-batched"), ("iDLG", "idlg-batched"), ("R-GAP", "rgap"))


def _table_model(classifier: str, with_fe: bool, seed: int):
    """(trained module, head, input shape, kind) of a Table II model, or SplitleakError."""
    if with_fe:
        model = build_split_model(FE_MODEL, FE_SPLIT, size=SIZE, weights=f"seed:{seed}", num_classes=10,
                                  classifier=classifier)
        with torch.no_grad():
            shape = tuple(model.head(torch.zeros(1, *model.input_shape)).shape[1:])
        return model.tail, model.head, shape, "features"
    model = build_split_model(classifier, "none", size=SIZE, weights=f"seed:{seed}", num_classes=10)
    return model.tail, model.head, tuple(model.input_shape), "image"


def table_cell(label: str, attack: str, classifier: str, with_fe: bool, inputs: torch.Tensor,
               labels: torch.Tensor, seed: int) -> dict[str, Any]:
    fe = f"{FE_MODEL}/{FE_SPLIT}" if with_fe else "none"
    row: dict[str, Any] = {"table": "II", "attack": label, "attack_name": attack, "classifier": classifier,
                           "feature_extractor": fe, "model": f"{fe}+{classifier}" if with_fe else classifier,
                           "frames": int(inputs.shape[0])}
    if attack not in attack_names():
        return {**row, "status": "unavailable: attack not registered"}
    try:
        module, head, shape, kind = _table_model(classifier, with_fe, seed)
        with torch.no_grad():
            truth = head(inputs) if with_fe else inputs
        cases = make_cases(module, truth, labels, shape, 10, kind, seed)
        batched = hasattr(get_attack(attack), "reconstruct_many")
        results, wall, cpu = run_attack(attack, cases, batched, TABLE_OPTIONS if batched else {}, progress=False)
    except (SplitleakError, TypeError, ValueError, RuntimeError) as err:
        return {**row, "status": f"unavailable: {str(err).splitlines()[0][:160]}"}
    recon = torch.cat([r.inputs for r in results])
    if with_fe:
        from adversary.gradient.features import feature_scores

        mse, cos = feature_scores(recon, truth)
        ok = [float(c) >= FEATURE_COSINE for c in cos]
        row.update({"criterion": f"feature cosine >= {FEATURE_COSINE}", "cosine": float(cos.mean()),
                    "feature_mse": float(mse.mean())})
    else:
        scores = image_scores(recon, truth)
        ok = [p >= SUCCESS_DB for p in scores["psnr"]]
        row.update({"criterion": f"PSNR >= {SUCCESS_DB:g} dB at 32x32", "psnr": float(np.mean(scores["psnr"])),
                    "ssim": float(np.mean(scores["ssim"])), "psnr_128": float(np.mean(scores["psnr_128"]))})
    row.update({"success_rate": float(np.mean(ok)), "recovered": bool(np.mean(ok) >= CELL_SHARE),
                "gradient_loss_success": float(np.mean([bool(r.success.all()) for r in results])),
                "seconds_per_frame": wall / len(results), "status": "ok"})
    return row


def table_rows(frames: int, seed: int) -> list[dict[str, Any]]:
    inputs, labels, _ = load_frames(frames, stride=11)
    cells = [(label, attack, classifier, with_fe) for label, attack in TABLE_ATTACKS
             for classifier in ("simple", "moderate") for with_fe in (False, True)]
    rows = []
    for label, attack, classifier, with_fe in tqdm(cells, desc="table II", unit="cell"):
        rows.append(table_cell(label, attack, classifier, with_fe, inputs, labels, seed))
    return rows


ROW_COLUMNS = ["attack", "model", "engine", "frames", "success_rate", "psnr30_rate", "psnr", "ssim", "psnr_128",
               "ssim_128", "seconds_per_frame", "cpu_seconds_per_frame", "label_accuracy", "status"]
COMPARISON_COLUMNS = ["attack", "frames", "batched_over_sequential", "batched_over_sequential_cpu",
                      "psnr_sequential", "psnr_batched", "success_sequential", "success_batched"]
IG_COLUMNS = ["attack", "model", "batch_size", "iterations", "psnr", "ssim", "psnr_128", "ssim_128", "cosine_loss",
              "seconds", "seconds_per_iteration"]
TABLE_COLUMNS = ["attack", "classifier", "feature_extractor", "recovered", "success_rate", "psnr", "ssim",
                 "cosine", "feature_mse", "seconds_per_frame", "status"]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, help="frames for part 1 (default 32, --quick 8)")
    p.add_argument("--table-frames", type=int, help="frames per Table II cell (default 8, --quick 4)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for every engine (default 1: the machine is shared, and a batch-1 "
                        "attack cannot use a second thread)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--attacks", default=",".join([a for pair in PAIRS for a in pair[:1]] + list(EXTRA)),
                   help="part 1 attacks (sequential names; their batched twins run with them)")
    p.add_argument("--ig-batches", default="1,4,8", help="batch sizes for IG on resnet18 ('' skips it)")
    p.add_argument("--ig-iterations", type=int, help="IG iterations per batch (default 500, --quick 100)")
    p.add_argument("--skip-table", action="store_true")
    args = p.parse_args()
    frames = args.frames or (8 if args.quick else 32)
    table_frames = args.table_frames or (4 if args.quick else 8)
    try:
        ig_batches = [int(b) for b in args.ig_batches.split(",") if b.strip()]
    except ValueError:
        raise SystemExit(f"--ig-batches takes comma-separated integers, got {args.ig_batches!r}") from None
    ig_iterations = args.ig_iterations or (100 if args.quick else 500)
    if frames < 1 or table_frames < 1 or args.threads < 1 or ig_iterations < 1 or min(ig_batches, default=1) < 1:
        raise SystemExit("frames, table frames, threads, IG iterations and IG batch sizes must be >= 1")
    torch.set_num_threads(args.threads)
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    print(f"gradient benchmark: {MODEL} {SIZE}x{SIZE}, {frames} frames from {', '.join(SOURCES)}, "
          f"torch threads {torch.get_num_threads()}")
    rows = lenet_rows(frames, args.seed, attacks)
    for subset, columns in (([r for r in rows if r.get("engine") != "comparison"], ROW_COLUMNS),
                            ([r for r in rows if r.get("engine") == "comparison"], COMPARISON_COLUMNS)):
        if subset:
            print_table(subset, columns)
    if ig_batches:
        rows += ig_rows(ig_batches, ig_iterations, args.seed)
    table: list[dict[str, Any]] = []
    if not args.skip_table:
        table = table_rows(table_frames, args.seed)
        print_table(table, TABLE_COLUMNS)
    write(args.json, rows + table,
          {"model": MODEL, "size": SIZE, "frames": frames, "table_frames": table_frames, "sources": list(SOURCES),
           "labels": "clip index", "weights": f"seed:{args.seed}", "threads": args.threads, "quick": args.quick,
           "attack_options": STOP_AT_SUCCESS, "success": "relative gradient loss < 1e-8 (attack's own criterion)",
           "ig": {"model": f"{IG_MODEL}, seeded weights, {SIZE}x{SIZE}", "batches": ig_batches,
                  "iterations": ig_iterations,
                  "other_options": "ig defaults (Adam lr 0.1 on the gradient's sign, lambda_tv 0.01, 1 restart)"},
           "psnr30_rate": f"share of frames at PSNR >= {SUCCESS_DB:g} dB (32x32)",
           "eval_size": EVAL_SIZE, "resize": "cv2.INTER_CUBIC, clipped to [0, 1]",
           "table_ii": {"feature_extractor": f"{FE_MODEL} cut at {FE_SPLIT}, seeded weights, frozen",
                        "image_criterion": f"PSNR >= {SUCCESS_DB:g} dB at 32x32",
                        "feature_criterion": f"cosine >= {FEATURE_COSINE}",
                        "cell_recovered": f"at least {CELL_SHARE:.0%} of the cell's frames recovered",
                        "dlg_idlg_engine": "batched", "dlg_idlg_options": TABLE_OPTIONS}})


if __name__ == "__main__":
    main()
