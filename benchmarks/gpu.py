"""GPU benchmark (issue 25): the attacks' workloads on --device, and with --device cuda the same rows on
the CPU in the same run, for the ratio.

Rows (`workload`): fedsgd-stream (a real cloud in its own process, the edge in this one on the device,
LeNet 32x32 FedSGD, batch 1; its recording feeds the gradient rows), dlg-batched, idlg-batched and dlg
(`splitleak attack`'s runner on that recording), dmb-iteration (one DMB iteration, 20 DDIM steps unrolled,
64x64, resnet18/layer2 seed:0, for 1 frame and for a batch of frames x restarts), dmb, do and db (the runner
on held-out bikes frames at 64x64 through that head, one batch), train-prior-step (one UNet step of
`train-prior --latent --size 64 --batch 8`). Fields: workload, device, frames, seconds, frames_per_second,
psnr, host_syncs_per_iteration (tensor read-backs per optimisation step, adversary.sync_count: the CPU
proxy for host-device synchronisations), aten_ops_per_iteration (aten:: events per step in torch's
profiler: the CPU-measurable proxy for kernel launches), plus each row's own settings. A row that fails
carries `error` and the run goes on.

Without --prior the feature rows use an untrained prior of the benchmark's architecture: timings hold,
their PSNR does not (train one: `splitleak train-prior --latent --size 64 ...`, see README).
"""
from __future__ import annotations

import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from benchmarks import footage
from benchmarks.common import CloudProcess, parser, print_table, write

WORKLOADS = ("fedsgd-stream", "dlg-batched", "idlg-batched", "dlg", "dmb-iteration", "dmb", "do", "db",
             "train-prior-step")
COLUMNS = ["workload", "variant", "device", "frames", "seconds", "frames_per_second", "psnr", "host_syncs_per_iteration",
           "aten_ops_per_iteration", "speedup_over_cpu", "error"]
MODEL, SPLIT, SIZE = "resnet18", "layer2", 64
CUDA_VARIANTS = ({"amp": False}, {"compile": "reduce-overhead"})  # extra dmb-iteration rows on CUDA only
GRAD_MODEL, GRAD_SIZE = "lenet", 32


@dataclass
class Settings:
    stream_frames: int  # FedSGD updates the stream sends (the gradient rows attack them)
    grad_frames: int  # updates the batched gradient attacks invert
    dlg_frames: int  # updates sequential dlg inverts
    grad_iterations: int | None  # None: the attacks' defaults
    grad_options: dict[str, Any]
    feat_frames: int
    do_iterations: int
    db_iterations: int
    dmb_iterations: int
    dmb_options: dict[str, Any]
    iteration_frames: tuple[int, ...]  # batch sizes of the dmb-iteration rows (frames x restarts)
    iteration_steps: int
    iteration_k: int  # extra iterations timed (the difference of a 1 + k and a 1-iteration run)
    prior_steps: int
    measure_n: int  # iterations of the shorter of the two runs read-backs and aten ops are counted over


def settings(quick: bool) -> Settings:
    if quick:
        return Settings(stream_frames=4, grad_frames=2, dlg_frames=1, grad_iterations=3,
                        grad_options={"restarts": 1}, feat_frames=2, do_iterations=20, db_iterations=10,
                        dmb_iterations=4, dmb_options={"sampler_steps": 4, "pixel_steps": 10, "restarts": 2},
                        iteration_frames=(1, 2), iteration_steps=4, iteration_k=2, prior_steps=4, measure_n=2)
    # the table: 128 / 256 lenet frames, dmb 30 iterations on 8 frames, one iteration for 1 and 16 x 4
    return Settings(stream_frames=256, grad_frames=256, dlg_frames=4, grad_iterations=None, grad_options={},
                    feat_frames=8, do_iterations=500, db_iterations=200, dmb_iterations=30, dmb_options={},
                    iteration_frames=(1, 64), iteration_steps=20, iteration_k=2, prior_steps=20, measure_n=2)


# ----- measuring ---------------------------------------------------------------------------------------

def synced(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def aten_ops(fn: Callable[[], Any]) -> int:
    """aten:: events torch's profiler records while fn runs (nested ones included)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.name.startswith("aten::"))


def per_iteration(run: Callable[[int], Any], n: int, profile: bool = True) -> tuple[float, float | None]:
    """(host read-backs, aten ops) per iteration: the difference of an n- and a 2n-iteration run over n
    (what both runs share, setup and read-out, cancels). run(1) first, as a warm-up."""
    from adversary.sync_count import count_host_syncs

    run(1)
    syncs = [count_host_syncs(run, k)[1] for k in (n, 2 * n)]
    ops = [aten_ops(lambda: run(k)) for k in (n, 2 * n)] if profile else None
    return (syncs[1] - syncs[0]) / n, ((ops[1] - ops[0]) / n if ops else None)


def row(workload: str, device: str, frames: int, seconds: float | None, psnr: float | None = None,
        **extra: Any) -> dict[str, Any]:
    return {"workload": workload, "device": device, "frames": frames, "seconds": seconds,
            "frames_per_second": frames / seconds if seconds else None, "psnr": psnr,
            "host_syncs_per_iteration": None, "aten_ops_per_iteration": None, **extra}


# ----- the data ----------------------------------------------------------------------------------------

@dataclass
class Data:
    work: Path
    feat_rec: Path
    feat_truth: Path
    images: np.ndarray  # the feature rows' frames (N, 3, 64, 64) in [0, 1]
    prior: Path
    prior_trained: bool
    grad_rec: Path | None = None
    grad_truth: Path | None = None


def prepare(work: Path, s: Settings, prior: str | None) -> Data:
    """The feature recording (held-out bikes through resnet18/layer2) and its truth; the prior."""
    model = footage.head(MODEL, SPLIT, SIZE, "random", None)
    seqs, images = footage.held_out(s.feat_frames, SIZE)
    rec = footage.write_recording(work / "feat-rec", model, seqs, images)
    truth = footage.write_truth(work / "feat-truth", seqs, images)
    if prior is None:
        prior_dir = untrained_prior(work / "prior")
    else:
        prior_dir = Path(prior)
    return Data(work, rec, truth, images, prior_dir, prior is not None)


def untrained_prior(folder: Path) -> Path:
    """train-prior --latent --size 64's architecture with its initial weights (timing only)."""
    from adversary.priors.build import build_unet, build_vae, make_scheduler
    from adversary.priors.diffusion import DiffusionPrior
    from adversary.priors.io import save_prior
    from adversary.priors.train import default_vae_widths, default_widths

    torch.manual_seed(0)
    side = SIZE // 4
    prior = DiffusionPrior(unet=build_unet(side, 4, tuple(default_widths(side, True))), scheduler=make_scheduler(),
                           vae=build_vae(tuple(default_vae_widths(4))), image_size=SIZE)
    return save_prior(prior, folder, {"benchmark": "gpu", "trained": False})


# ----- the rows ----------------------------------------------------------------------------------------

def fedsgd_stream(data: Data, s: Settings, device: str) -> dict[str, Any]:
    """A real cloud (CPU, recording) and the edge on `device`: FedSGD updates of LeNet 32x32, batch 1."""
    from edge.session import EdgeConfig
    from edge.trainer import EdgeTrainer

    rec, truth = data.work / f"grad-rec-{device}", data.work / f"grad-truth-{device}"
    with CloudProcess("--record", str(rec)) as cloud:
        config = EdgeConfig(cloud=cloud.target, source=footage.CLIP, model=GRAD_MODEL, split="none", size=GRAD_SIZE,
                            frames=s.stream_frames, mode="fedsgd", device=device, truth=str(truth), progress=False,
                            stream_id="gpu-bench")
        start = time.perf_counter()
        summary = EdgeTrainer(config).run()
        synced(device)
        seconds = time.perf_counter() - start
    if data.grad_rec is None:
        data.grad_rec, data.grad_truth = rec, truth
    return row("fedsgd-stream", device, s.stream_frames, seconds, summary=summary)


def gradient_attack(name: str, data: Data, s: Settings, device: str) -> dict[str, Any]:
    """`splitleak attack --attack NAME` on the stream's recording (its runner, as the CLI calls it)."""
    from adversary.runner.run import run_attack

    if data.grad_rec is None:
        raise RuntimeError("no FedSGD recording: the fedsgd-stream row failed or was not run")
    frames = s.dlg_frames if name == "dlg" else s.grad_frames
    metrics = run_attack(str(data.grad_rec), name, str(data.work / f"{name}-{device}"), truth=str(data.grad_truth),
                         device=device, iterations=s.grad_iterations, max_frames=frames, progress=False,
                         options=dict(s.grad_options))
    summary = metrics["summary"]
    return row(name, device, len(metrics["frames"]), float(summary["seconds"]), summary.get("mean_psnr"))


def feature_case(data: Data, device: str, frames: int) -> tuple[torch.Tensor, Any]:
    """The benchmark head's features of `frames` held-out frames and the white-box case with the prior."""
    from adversary.feature.base import WhiteBoxCase
    from adversary.priors.io import load_prior

    model = footage.head(MODEL, SPLIT, SIZE, "random", None)
    model.head.to(device)
    for p in model.head.parameters():
        p.requires_grad_(False)
    x = torch.from_numpy(data.images).to(device)
    x = x.repeat((frames + len(x) - 1) // len(x), 1, 1, 1)[:frames]  # a batch of frames x restarts: repeats
    with torch.no_grad():
        z = model.head(x)
    prior = load_prior(str(data.prior), device)
    return z, WhiteBoxCase(model.head, (3, SIZE, SIZE), torch.device(device), prior=prior)


def feature_attack(name: str, data: Data, s: Settings, device: str, variant: dict[str, Any] | None = None) -> dict[str, Any]:
    """`splitleak attack --attack NAME` on the feature recording as one batch; read-backs and aten ops per
    iteration from direct runs of the same attack on the same frames."""
    from adversary.runner.attacks import make_attack
    from adversary.runner.run import run_attack

    iterations = {"do": s.do_iterations, "db": s.db_iterations, "dmb": s.dmb_iterations}[name]
    options = {**(s.dmb_options if name == "dmb" else {}), **(variant or {})}
    tag = "-".join(f"{k}{v}" for k, v in (variant or {}).items())
    metrics = run_attack(str(data.feat_rec), name, str(data.work / "-".join(filter(None, (name, device, tag)))), truth=str(data.feat_truth),
                         device=device, iterations=iterations, batch_size=s.feat_frames, max_frames=s.feat_frames,
                         progress=False,
                         options=options, prior=None if name == "do" else str(data.prior))
    summary = metrics["summary"]
    out = row(name, device, len(metrics["frames"]), float(summary["seconds"]), summary.get("mean_psnr"),
              iterations=iterations, options=options, variant=variant or None, prior_trained=data.prior_trained)
    z, case = feature_case(data, device, s.feat_frames)
    # dmb: the sampler loop at the row's K (the default plan's phases differ between short budgets)
    measured = {**options, "coarse_steps": 0, "refine_share": 0.0, "pixel_steps": 0} if name == "dmb" else options

    def run(n: int) -> Any:
        return make_attack(name, n, measured).reconstruct(z, case)

    out["host_syncs_per_iteration"], out["aten_ops_per_iteration"] = per_iteration(run, s.measure_n)
    return out


def dmb_iteration(data: Data, s: Settings, device: str, frames: int, variant: dict[str, Any] | None = None) -> dict[str, Any]:
    """One DMB iteration: `iteration_steps` DDIM steps unrolled (no coarse phase, refinement or pixel
    phase), checkpointing as "auto" decides, on `frames` latents at once (frames x restarts): the time of a
    (1 + k)-iteration run less a 1-iteration one, each the faster of two."""
    from adversary.feature.dmb import DiffusionBased

    z, case = feature_case(data, device, frames)
    plan = dict(sampler_steps=s.iteration_steps, coarse_steps=0, refine_share=0.0, pixel_steps=0, restarts=1,
                **(variant or {}))

    def run(n: int) -> Any:
        return DiffusionBased(iterations=n, **plan).reconstruct(z, case)

    def best_of_two(n: int) -> tuple[float, Any]:
        times = []
        for _ in range(2):
            synced(device)
            start = time.perf_counter()
            result = run(n)
            synced(device)
            times.append(time.perf_counter() - start)
        return min(times), result

    t1, _ = best_of_two(1)
    tn, result = best_of_two(1 + s.iteration_k)
    seconds = (tn - t1) / s.iteration_k if tn > t1 else None  # None: the machine's noise swamped the difference
    out = row("dmb-iteration", device, frames, seconds, ddim_steps=s.iteration_steps, variant=variant or None,
              checkpointed=result.info.get("checkpointed"), seconds_runs=[t1, tn],
              ms_per_frame=1000 * seconds / frames if seconds else None)
    out["host_syncs_per_iteration"], out["aten_ops_per_iteration"] = per_iteration(run, 1, profile=frames == 1)
    return out


def train_prior_step(data: Data, s: Settings, device: str) -> dict[str, Any]:
    """Seconds per UNet step of train-prior --latent --size 64 --batch 8 (after a 1-step VAE phase), and
    its read-backs per step (the difference of a 2n- and an n-step run)."""
    from adversary.priors.train import TrainConfig, train_prior
    from adversary.sync_count import count_host_syncs

    def train(steps: int, tag: str) -> dict:
        cfg = TrainConfig(source=footage.CLIP, out=str(data.work / f"prior-{device}-{tag}"), latent=True, size=SIZE,
                          steps=steps, vae_steps=1, batch=8, frames=32, device=device, preview=0)
        return train_prior(cfg, show=False)

    meta, few = count_host_syncs(train, s.prior_steps, "a")
    _, many = count_host_syncs(train, 2 * s.prior_steps, "b")
    seconds = float(meta["seconds_per_step"]["unet"])
    out = row("train-prior-step", device, 8, seconds, steps=s.prior_steps)
    out["host_syncs_per_iteration"] = (many - few) / s.prior_steps
    return out


def rows_for(device: str, wanted: list[str], data: Data, s: Settings,
             done: Callable[[list[dict[str, Any]]], None]) -> list[dict[str, Any]]:
    jobs: list[tuple[str, Callable[[], dict[str, Any] | list[dict[str, Any]]]]] = []
    for w in wanted:
        if w == "fedsgd-stream":
            jobs.append((w, lambda: fedsgd_stream(data, s, device)))
        elif w in ("dlg-batched", "idlg-batched", "dlg"):
            jobs.append((w, lambda w=w: gradient_attack(w, data, s, device)))
        elif w == "dmb-iteration":
            jobs.append((w, lambda: [dmb_iteration(data, s, device, f) for f in s.iteration_frames]))
            for variant in CUDA_VARIANTS if device == "cuda" else []:  # bf16 off; CUDA graphs
                jobs.append((w, lambda v=variant: dmb_iteration(data, s, device, max(s.iteration_frames), v)))
        elif w in ("dmb", "do", "db"):
            jobs.append((w, lambda w=w: feature_attack(w, data, s, device)))
            if w == "dmb" and device == "cuda":  # what bf16 autocast costs in PSNR
                jobs.append((w, lambda: feature_attack("dmb", data, s, device, {"amp": False})))
        elif w == "train-prior-step":
            jobs.append((w, lambda: train_prior_step(data, s, device)))
    out = []
    for name, job in jobs:
        print(f"[{device}] {name} ...", file=sys.stderr, flush=True)
        try:
            got = job()
            out += got if isinstance(got, list) else [got]
        except Exception as err:  # a failing row is a finding; the others still run
            traceback.print_exc()
            out.append({**row(name, device, 0, 0.0), "error": f"{type(err).__name__}: {str(err)[:300]}"})
        done(out)
    return out


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """speedup_over_cpu on each CUDA row: its frames per second over the CPU row's of the same workload (and
    the same frames where there is one: the batched rows' throughput grows with the batch)."""
    cpu = [r for r in rows if r["device"] == "cpu" and not r.get("error") and r.get("frames_per_second")]
    for r in rows:
        if r["device"] == "cpu" or not r.get("frames_per_second"):
            continue
        same = [c for c in cpu if c["workload"] == r["workload"]]
        base = next((c for c in same if c["frames"] == r["frames"]), same[0] if same else None)
        if base:
            r["speedup_over_cpu"] = r["frames_per_second"] / base["frames_per_second"]
            r["cpu_frames"] = base["frames"]


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda: every row on the GPU, then again on the CPU for the ratio")
    p.add_argument("--prior", metavar="DIR", help="a trained prior for the feature rows (default: untrained)")
    p.add_argument("--rows", default=",".join(WORKLOADS), help=f"comma-separated workloads (of {', '.join(WORKLOADS)})")
    p.add_argument("--work", metavar="DIR", help="keep recordings and outputs here (default: a temporary folder)")
    p.add_argument("--cpu-full", action="store_true",
                   help="with --device cuda, the CPU rows at the full sizes too (default: the --quick sizes, as the "
                        "full ones take hours on a CPU; frames per second are compared)")
    args = p.parse_args(argv)
    wanted = [w.strip() for w in args.rows.split(",") if w.strip()]
    unknown = sorted(set(wanted) - set(WORKLOADS))
    if unknown:
        print(f"error: unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: torch sees no CUDA device on this machine", file=sys.stderr)
        return 2
    if args.prior and not (Path(args.prior) / "prior.json").is_file():
        print(f"error: --prior {args.prior}: not a prior folder (no prior.json)", file=sys.stderr)
        return 2
    s = settings(args.quick)
    cpu_settings = s if args.device == "cpu" or args.cpu_full else settings(True)
    config = {"settings": asdict(s), "cpu_settings": asdict(cpu_settings), "device": args.device, "rows": wanted,
              "prior": args.prior, "prior_trained": args.prior is not None,
              "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
              "command": " ".join(["python -m benchmarks.gpu", *(sys.argv[1:] if argv is None else argv)])}
    rows: list[dict[str, Any]] = []

    def done(new: list[dict[str, Any]]) -> None:  # after every row: a run cut short keeps what it measured
        write(args.json, rows + new, config)

    with tempfile.TemporaryDirectory(prefix="splitleak-gpu-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = prepare(work, s, args.prior)
        for device in (["cuda", "cpu"] if args.device == "cuda" else ["cpu"]):
            rows += rows_for(device, wanted, data, cpu_settings if device == "cpu" else s, done)
        add_ratios(rows)
    print_table(rows, COLUMNS)
    write(args.json, rows, config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
