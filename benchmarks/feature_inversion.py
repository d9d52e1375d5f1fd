"""Feature-inversion benchmark: DO vs DB vs DMB, single vs multi-frame, white vs black-box.

On held-out real frames (the last 30% of sample:bikes; see benchmarks.footage for who saw
what): recordings of resnet18 (conv1, layer1, layer2, layer3) and mobilenet_v3_small (two
points) features, random-init (seed:0) and a trained victim, inverted by `splitleak attack`'s
runner; PSNR / SSIM at 128 (and at the native 64), seconds per frame, peak memory. Multi-frame
DMB is compared with single-frame DMB on `multi_frames` consecutive frames (one window). The
black-box rows (bb-do, bb-db, bb-dmb, and bb-do / bb-dmb with a temporal window, eq. 13) cover
`bb_frames` frames with `bb_seeds` inverters each and are summarised as means over seeds, in two
query settings (`bb_queries`): "scene", the adversary queries F1 with the footage its prior was
trained on (the prior knows nothing its query pairs do not), and "public" (single frames), it
queries with other clips (benchmarks.footage.PUBLIC) while its prior knows the scene. Also
one DMB iteration at 64x64 through the 20-step unrolled sampler, with and without checkpointing.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from adversary.feature.dmb import DiffusionBased, DMBConfig
from adversary.feature.dmb_multi import MultiConfig
from adversary.feature.phases import activation_bytes
from adversary.feature.base import WhiteBoxCase
from benchmarks import footage
from benchmarks.common import parser, print_table, write

DMB = DMBConfig()  # the defaults the budget text describes

WHITE = {"do": "do", "db": "db", "dmb": "dmb"}
BLACK = {"do": "bb-do", "db": "bb-db", "dmb": "bb-dmb"}
COLUMNS = ["model", "split", "victim", "setting", "frames", "method", "variant", "psnr", "ssim", "psnr_64", "ssim_64",
           "seconds_per_frame", "peak_mb", "iterations"]
Head = tuple[str, str, str]  # model, split, victim


def _heads(model: str, splits: list[str], victims: list[str]) -> list[Head]:
    return [(model, s, v) for v in victims for s in splits]


@dataclass
class Settings:
    """Everything that sizes a run; written into the JSON config."""

    frames: int  # consecutive held-out frames, inverted as one batch
    multi_frames: int  # consecutive held-out frames (from the same first one) of the multi-frame comparison
    iterations: int  # white-box optimisation steps for DO, DB, DMB; sampler runs per frame for DMB-multi
    steps: int  # DDIM steps of the benchmark's DMB / bb-dmb rows
    bb_iterations: int  # inverter training steps, the same for bb-do, bb-db and bb-dmb
    bb_batch: int
    prior_steps: int
    prior_vae_steps: int
    prior_decoder_steps: int  # decoder-only tuning after the VAE (train-prior --decoder-steps)
    victim_epochs: int
    heads: list[Head]
    multi_heads: list[Head]
    bb_heads: list[Head]
    size: int = 64
    prior_batch: int = 8
    timing_iterations: int = 3
    timing_steps: int = 20
    timing_repeats: int = 3  # each timed run is repeated and its fastest kept: the machine is shared and noisy
    alg1_rows: bool = True  # also run DMB as Algorithm 1 is written (coarse_steps=0 refine_share=0 pixel_steps=0)
    time_rows: bool = True  # also run DO and DB with as many iterations as DMB's wall time buys them
    init_rows: bool = True  # also run DMB with init=inverter (its first start: an inverter trained on the attacker's footage)
    # black-box rows: inverting is one forward pass, so they cover many frames; each seed trains its own inverters
    # (on 4 frames and one seed, bb-dmb's lead over bb-do on layer3 read +0.96 dB; on 75 frames it was +0.07)
    bb_frames: int = 48
    bb_seeds: int = 3
    bb_window: int = 3  # the black-box video variant (eq. 13): bb-do and bb-dmb read this many frames' features
    # whose frames the black-box adversary queries F1 with: "scene" (the prior's own footage) and "public"
    # (footage.PUBLIC; single-frame rows only)
    bb_queries: tuple[str, ...] = ("scene", "public")
    extra: dict[str, Any] = field(default_factory=dict)


def settings(quick: bool) -> Settings:
    if quick:
        heads = _heads("resnet18", ["layer1", "layer3"], ["random", "trained"])
        return Settings(frames=2, multi_frames=4, iterations=20, steps=10, bb_iterations=20, bb_batch=4,
                        prior_steps=150, prior_vae_steps=60, prior_decoder_steps=20, victim_epochs=1, heads=heads,
                        multi_heads=heads,
                        bb_heads=[("resnet18", "layer1", "random")], timing_iterations=2, bb_frames=4, bb_seeds=1)
    heads = _heads("resnet18", ["conv1", "layer1", "layer2", "layer3"], ["random", "trained"])
    heads += _heads("mobilenet_v3_small", ["1", "3"], ["random"])
    # prior: 3,000 UNet and 1,500 VAE steps (~18 min here); at 1,500 / 500 both losses were still falling
    # and the VAE capped DB and DMB near 26 dB where DO reached 36 dB.
    # then 2,000 decoder-only steps (12 min): the VAE's reconstruction of the held-out frames went 24.2 -> 25.0 dB,
    # DMB +1.3 to +1.5 dB, DB +0 to +0.9 (resnet18 random, layer1-3).
    # inverters: 500 steps (0.5-2 min each here). At 120 the latent inverters led bb-do on layer1 (trained) only
    # because they converge sooner: from 120 to 500 to 1,000 steps bb-do went 20.1 -> 22.5 -> 22.8 dB and
    # bb-dmb 20.7 -> 21.3 -> 21.7 (latent inverters at width 16; at their default 32, bb-dmb 22.2 at 500 steps)
    return Settings(frames=4, multi_frames=8, iterations=100, steps=10, bb_iterations=500, bb_batch=4,
                    prior_steps=3000, prior_vae_steps=1500, prior_decoder_steps=2000, victim_epochs=4, heads=heads,
                    multi_heads=_heads("resnet18", ["layer1", "layer3"], ["random", "trained"]),
                    bb_heads=_heads("resnet18", ["layer1", "layer3"], ["trained"]))


# ----- memory ----------------------------------------------------------------------------------

def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRSS:
    """Peak resident memory above the start, sampled every 5 ms by a thread (freed heap is handed
    back to the OS first with malloc_trim, so the start is not inflated by earlier runs)."""

    def __enter__(self) -> "PeakRSS":
        _trim()
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def mb(self) -> float:
        return (self.peak - self.base) / 2**20


# ----- one attack run ----------------------------------------------------------------------------

@dataclass
class Run:
    head: Head
    method: str  # do / db / dmb
    setting: str  # white-box / black-box
    frames: str  # single / multi
    variant: str = ""  # "alg1": DMB's Algorithm 1 as written (no coarse-to-fine sampler steps, refinement or pixel phase);
    # "window": single-frame DMB on the multi-frame comparison's frames; "time": DO or DB given DMB's wall time;
    # "init": DMB with init=inverter
    seed: int = 0  # black-box rows: the inverter's seed (its initialisation and training batches)
    queries: str = "scene"  # black-box rows: "scene" (the prior's footage) or "public" (footage.PUBLIC)

    def frame_count(self, s: Settings) -> int:
        """How many consecutive held-out frames this run inverts."""
        if self.setting == "black-box":
            return s.bb_frames
        return s.multi_frames if self.frames == "multi" or self.variant == "window" else s.frames

    @property
    def attack(self) -> str:
        if self.setting == "black-box":
            return BLACK[self.method]  # multi: the same attack with a temporal window
        return "dmb-multi" if self.frames == "multi" else WHITE[self.method]

    @property
    def folder(self) -> str:
        model, split, victim = self.head
        window = "window" if self.setting == "black-box" and self.frames == "multi" else ""
        public = "public" if self.setting == "black-box" and self.queries == "public" else ""
        return "-".join(filter(None, (model, split, victim, self.attack, window, public, self.variant,
                                      f"seed{self.seed}" if self.seed else "")))


def plan(s: Settings) -> list[Run]:
    runs = []
    for head in s.heads:
        runs += [Run(head, m, "white-box", "single") for m in ("do", "db", "dmb")]
        if s.time_rows:
            runs += [Run(head, m, "white-box", "single", "time") for m in ("do", "db")]
        if s.alg1_rows:
            runs.append(Run(head, "dmb", "white-box", "single", "alg1"))
        if s.init_rows:
            runs.append(Run(head, "dmb", "white-box", "single", "init"))
        if head in s.multi_heads:
            runs += [Run(head, "dmb", "white-box", "single", "window"), Run(head, "dmb", "white-box", "multi")]
        if head in s.bb_heads:
            for seed in range(s.bb_seeds):
                if "scene" in s.bb_queries:
                    runs += [Run(head, m, "black-box", "single", seed=seed) for m in ("do", "db", "dmb")]
                    runs += [Run(head, m, "black-box", "multi", seed=seed) for m in ("do", "dmb")]
                if "public" in s.bb_queries:
                    runs += [Run(head, m, "black-box", "single", seed=seed, queries="public")
                             for m in ("do", "db", "dmb")]
    return runs


def selected(run: Run, rows: str) -> bool:
    """Whether --rows ROWS keeps this run ("multi": white-box; the black-box rows carry their own)."""
    if rows == "init":  # DMB from draws and from the inverter's guess, side by side
        return run.setting == "white-box" and run.frames == "single" and run.method == "dmb" and run.variant in ("", "init")
    if rows == "multi":
        return run.setting == "white-box" and (run.frames == "multi" or run.variant == "window")
    if rows == "single":
        return run.setting == "white-box" and run.frames == "single" and run.variant != "window"
    return rows in ("all", run.setting)


def options(run: Run, s: Settings, cache: Path, query_frames: int) -> tuple[int, dict[str, Any]]:
    """(iterations, attack options) for a run."""
    if run.setting == "black-box":
        if run.queries == "public":  # as many query images as the scene's, split over the public clips
            source, query_frames = ",".join(footage.PUBLIC), footage.public_frames(query_frames)
        else:
            source = footage.CLIP
        opts = {"batch": s.bb_batch, "query_source": source, "query_frames": query_frames,
                "cache_dir": str(cache / "inverters"), "progress": 1}
        if run.method == "dmb":
            opts["steps"] = s.steps
        if run.frames == "multi":
            opts["window"] = s.bb_window
        return s.bb_iterations, opts
    opts: dict[str, Any] = {}
    if run.method == "dmb":
        opts["sampler_steps"] = s.steps
    if run.variant == "alg1":
        opts.update(coarse_steps=0, refine_share=0.0, pixel_steps=0)
    if run.variant == "init":  # the white-box adversary queries its head with its own footage
        opts.update(init="inverter", query_source=footage.CLIP, query_frames=query_frames,
                    cache_dir=str(cache / "inverters"))
    if run.frames == "multi":
        opts["window"] = s.multi_frames
    return s.iterations, opts


def time_matched(run: Run, rows: list[dict], s: Settings) -> int:
    """DO / DB iterations that cost what the head's DMB row took: s.iterations x DMB's / its own seconds per
    frame at s.iterations."""
    own, dmb = (_get(rows, run.head, "white-box", "single", m) for m in (run.method, "dmb"))
    if not (own and dmb):
        raise SystemExit(f"the time-matched {run.method} row of {'/'.join(run.head)} needs its {run.method} and "
                         f"dmb rows first")
    return max(s.iterations, round(s.iterations * dmb["seconds_per_frame"] / own["seconds_per_frame"]))


def attack_row(run: Run, s: Settings, recording: Path, truth: Path, out: Path, prior: Path,
               victim_path: Path, cache: Path, query_frames: int, iterations: int | None = None) -> dict[str, Any]:
    """One run's row; `iterations` overrides the settings' budget (the time-matched DB rows)."""
    model, split, victim = run.head
    budget, opts = options(run, s, cache, query_frames)
    iterations = iterations or budget
    with PeakRSS() as mem:
        metrics = footage.invert(recording, run.attack, out, truth, iterations, opts,
                                 prior if run.method != "do" else None, victim, victim_path, run.frame_count(s),
                                 seed=run.seed)
    summary, config = metrics["summary"], metrics["config"]
    n = len(metrics["frames"])
    seconds = float(summary["seconds"])
    attack_config, attack_run = config.get("attack_config") or {}, config.get("attack_run") or {}
    # an inverter's one-off training: the black-box attacks' own (DMB init=inverter's is not reported)
    training = attack_run.get("training") or {}
    train_seconds = training.get("seconds")
    if training and not training.get("cached"):
        seconds -= float(train_seconds or 0.0)  # a one-off, reported apart
    return {"model": model, "split": split, "victim": victim, "setting": run.setting, "frames": run.frames,
            "method": run.method, "variant": run.variant or None, "attack": run.attack, "seed": run.seed,
            "queries": run.queries if run.setting == "black-box" else None,
            "psnr": summary["mean_psnr"], "ssim": summary["mean_ssim"],
            "psnr_64": summary["mean_psnr_native"], "ssim_64": summary["mean_ssim_native"],
            "seconds_per_frame": seconds / max(1, n), "peak_mb": mem.mb, "iterations": iterations,
            "ddim_steps": opts.get("sampler_steps", opts.get("steps")) if run.method == "dmb" else None, "n_frames": n,
            "inverter_train_seconds": train_seconds, "inverter_cached": training.get("cached"),
            "inverter_width": attack_config.get("width"), "inverter_parameters": attack_run.get("inverter_parameters"),
            "checkpointed": attack_run.get("checkpointed"), "out": str(out)}


# ----- one DMB iteration --------------------------------------------------------------------------

def dmb_iteration(prior_dir: Path, image: np.ndarray, s: Settings) -> list[dict[str, Any]]:
    """Seconds and peak memory of one DMB iteration (1 frame, resnet18/layer2 random, 64x64,
    `timing_steps` DDIM steps unrolled; every iteration a sampler run: no coarse steps, no latent
    refinement, no pixel phase), with checkpointing forced on and off: the time of a
    (1 + timing_iterations)-iteration run less a 1-iteration one, each the fastest of `timing_repeats`
    (the pixel phase, 400 DO steps in both runs, once made the difference of two noisy times read
    -0.09 s). UNet calls per
    iteration are counted with a forward pre-hook (a recomputation stops early, before a forward hook
    would fire): 2 x steps means every call was recomputed in backward."""
    from adversary.priors import load_prior

    prior = load_prior(str(prior_dir), "cpu")
    model = footage.head("resnet18", "layer2", s.size, "random", None)
    for p in model.head.parameters():
        p.requires_grad_(False)
    case = WhiteBoxCase(model.head, (3, s.size, s.size), prior=prior)
    with torch.no_grad():
        z = model.head(torch.from_numpy(image)[None])
    calls = [0]
    hook = prior.unet.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    v = prior.random_latents(1, seed=0)
    saved = activation_bytes(prior, v, None) * s.timing_steps
    rows = []
    try:
        for ck in (True, False):
            results = {}
            for n in (1, 1 + s.timing_iterations):
                attack = DiffusionBased(iterations=n, sampler_steps=s.timing_steps, checkpoint="on" if ck else "off",
                                        coarse_steps=0, refine_share=0.0, pixel_steps=0)
                runs = []
                for _ in range(s.timing_repeats):
                    calls[0] = 0
                    with PeakRSS() as mem:
                        start = time.perf_counter()
                        checkpointed = attack.reconstruct(z, case).info["checkpointed"]
                        runs.append((time.perf_counter() - start, calls[0], mem.mb))
                results[n] = (min(t for t, _, _ in runs), runs[0][1], max(mb for _, _, mb in runs))
            (t1, c1, _), (tn, cn, mb) = results[1], results[1 + s.timing_iterations]
            rows.append({"model": "resnet18", "split": "layer2", "victim": "random", "method": "dmb",
                         "measure": "one_iteration", "size": s.size, "ddim_steps": s.timing_steps,
                         "checkpoint": ck, "checkpointed": checkpointed, "prior_training": prior.unet.training,
                         "seconds_per_iteration": (tn - t1) / s.timing_iterations,
                         "unet_calls_per_iteration": (cn - c1) / s.timing_iterations, "peak_mb": mb,
                         "unrolled_activation_mb_estimate": saved / 2**20, "prior": prior.describe()})
    finally:
        hook.remove()
    return rows


# ----- summary -------------------------------------------------------------------------------------

def _get(rows: list[dict], head: Head, setting: str, frames: str, method: str, variant: str = "") -> dict | None:
    for r in rows:
        if (r["model"], r["split"], r["victim"], r["setting"], r["frames"], r["method"], r.get("variant") or "") == (
                *head, setting, frames, method, variant):
            return r
    return None


def _time_matched(rows: list[dict], head: Head, dmb: dict) -> dict[str, Any]:
    """The time-matched DO and DB rows' figures, and whether DMB beats them."""
    out: dict[str, Any] = {}
    for method in ("do", "db"):
        row = _get(rows, head, "white-box", "single", method, "time")
        if row:
            out.update({f"{method}_time": row["psnr"], f"ssim_{method}_time": row["ssim"],
                        f"{method}_time_iterations": row["iterations"],
                        f"dmb_beats_{method}_time": dmb["psnr"] > row["psnr"] and dmb["ssim"] > row["ssim"]})
    return out


def _black_box(rows: list[dict], head: Head, frames: str = "single", queries: str = "scene") -> dict[str, Any] | None:
    """bb-do, bb-db, bb-dmb on a head (single frames, or the temporal window's rows) in one query setting:
    PSNR / SSIM averaged over the seeds both bb-do and bb-dmb ran with, bb-dmb's mean gain, and on how
    many seeds it beat bb-do on both PSNR and SSIM."""
    by_seed = {m: {r["seed"]: r for r in rows if (r["model"], r["split"], r["victim"]) == head
                   and r["setting"] == "black-box" and r["frames"] == frames and r["method"] == m
                   and (r.get("queries") or "scene") == queries}
               for m in ("do", "db", "dmb")}
    seeds = sorted(set(by_seed["do"]) & set(by_seed["dmb"]))
    if not seeds:
        return None
    out: dict[str, Any] = {"head": "/".join(head), "frames": frames, "queries": queries, "seeds": seeds}
    for m in ("do", "db", "dmb"):
        picked = [by_seed[m][k] for k in seeds if k in by_seed[m]]
        if picked:
            out[f"bb_{m}"] = float(np.mean([r["psnr"] for r in picked]))
            out[f"ssim_bb_{m}"] = float(np.mean([r["ssim"] for r in picked]))
    out["gain_db"] = out["bb_dmb"] - out["bb_do"]
    out["ssim_gain"] = out["ssim_bb_dmb"] - out["ssim_bb_do"]
    out["seeds_won"] = sum(by_seed["dmb"][k]["psnr"] > by_seed["do"][k]["psnr"]
                           and by_seed["dmb"][k]["ssim"] > by_seed["do"][k]["ssim"] for k in seeds)
    out["n_frames"] = by_seed["dmb"][seeds[0]].get("n_frames")
    return out


def summary(rows: list[dict], timing: list[dict], s: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {"dmb_vs_do_db": [], "multi_vs_single": [], "bb_dmb_vs_bb_do": [], "dmb_init_vs_draws": []}
    for head in s.heads:
        do, db, dmb = (_get(rows, head, "white-box", "single", m) for m in ("do", "db", "dmb"))
        if do and db and dmb:
            out["dmb_vs_do_db"].append({
                "head": "/".join(head), "do": do["psnr"], "db": db["psnr"], "dmb": dmb["psnr"],
                "ssim_do": do["ssim"], "ssim_db": db["ssim"], "ssim_dmb": dmb["ssim"],
                "gap_db": dmb["psnr"] - max(do["psnr"], db["psnr"]),
                "dmb_alg1": (_get(rows, head, "white-box", "single", "dmb", "alg1") or {}).get("psnr"),
                **_time_matched(rows, head, dmb),
                "dmb_best_psnr": dmb["psnr"] > max(do["psnr"], db["psnr"]),
                "dmb_best_ssim": dmb["ssim"] > max(do["ssim"], db["ssim"])})
        draws, init = (_get(rows, head, "white-box", "single", "dmb", v) for v in ("", "init"))
        if draws and init:
            out["dmb_init_vs_draws"].append({"head": "/".join(head), "draws": draws["psnr"], "init": init["psnr"],
                                             "ssim_draws": draws["ssim"], "ssim_init": init["ssim"],
                                             "gain_db": init["psnr"] - draws["psnr"]})
        multi = _get(rows, head, "white-box", "multi", "dmb")
        single = _get(rows, head, "white-box", "single", "dmb", "window")
        if multi and single:
            out["multi_vs_single"].append({"head": "/".join(head), "single": single["psnr"], "multi": multi["psnr"],
                                           "ssim_single": single["ssim"], "ssim_multi": multi["ssim"],
                                           "gain_db": multi["psnr"] - single["psnr"]})
        for frames, queries in (("single", "scene"), ("multi", "scene"), ("single", "public")):
            black = _black_box(rows, head, frames, queries)
            if black:
                out["bb_dmb_vs_bb_do"].append(black)
    wins = out["dmb_vs_do_db"]
    out["dmb_best_everywhere"] = bool(wins) and all(w["dmb_best_psnr"] and w["dmb_best_ssim"] for w in wins)
    gains = [m["gain_db"] for m in out["multi_vs_single"]]
    out["multi_mean_gain_db"] = float(np.mean(gains)) if gains else None
    for queries in ("scene", "public"):  # single frames; "scene" keeps the key it had before "public" existed
        bb = [b["gain_db"] for b in out["bb_dmb_vs_bb_do"] if b["frames"] == "single" and b["queries"] == queries]
        out["bb_dmb_mean_gain_db" + ("" if queries == "scene" else "_public")] = float(np.mean(bb)) if bb else None
    out["dmb_rows_checkpointed"] = sorted({str(r.get("checkpointed")) for r in rows
                                           if r["method"] == "dmb" and r["setting"] == "white-box"})
    out["dmb_iteration"] = {("checkpoint" if t["checkpoint"] else "no_checkpoint"): {
        "seconds": t["seconds_per_iteration"], "peak_mb": t["peak_mb"],
        "unet_calls": t["unet_calls_per_iteration"]} for t in timing}
    return out


def print_summary(summ: dict[str, Any], s: Settings) -> None:
    print("\n== targets ==")
    if summ["dmb_vs_do_db"]:
        print(f"DMB vs DO vs DB (white-box, single frame, PSNR dB @128 / SSIM; {s.iterations} iterations each):")
    for w in summ["dmb_vs_do_db"]:
        flag = "DMB best" if w["dmb_best_psnr"] and w["dmb_best_ssim"] else "DMB not best"
        print(f"  {w['head']:<32} do {w['do']:.2f}/{w['ssim_do']:.3f}  db {w['db']:.2f}/{w['ssim_db']:.3f}  "
              f"dmb {w['dmb']:.2f}/{w['ssim_dmb']:.3f}  gap {w['gap_db']:+.2f} dB  [{flag}]"
              + (f"  (Algorithm 1 as written: {w['dmb_alg1']:.2f})" if w["dmb_alg1"] is not None else "")
              + "".join(f"  ({m} at dmb's wall time, {w[m + '_time_iterations']} its: "
                        f"{w[m + '_time']:.2f}/{w['ssim_' + m + '_time']:.3f})" for m in ("do", "db") if m + "_time" in w))
    if summ["dmb_init_vs_draws"]:
        print("DMB from draws vs init=inverter (white-box, single frame, PSNR dB @128 / SSIM):")
    for m in summ["dmb_init_vs_draws"]:
        print(f"  {m['head']:<32} draws {m['draws']:.2f}/{m['ssim_draws']:.3f} -> init {m['init']:.2f}/"
              f"{m['ssim_init']:.3f} ({m['gain_db']:+.2f} dB)")
    if summ["multi_vs_single"]:
        print(f"DMB-multi vs single-frame DMB on {s.multi_frames} consecutive frames (one window):")
    for m in summ["multi_vs_single"]:
        print(f"  multi vs single {m['head']:<24} {m['single']:.2f}/{m['ssim_single']:.3f} -> "
              f"{m['multi']:.2f}/{m['ssim_multi']:.3f} ({m['gain_db']:+.2f} dB)")
    if summ["multi_mean_gain_db"] is not None:
        print(f"  multi-frame mean gain {summ['multi_mean_gain_db']:+.2f} dB (target >= +1 dB)")
    if summ["bb_dmb_vs_bb_do"]:
        print(f"black-box (PSNR dB @128 / SSIM, means over {s.bb_seeds} inverter seed(s) x {s.bb_frames} frames; "
              f"{s.bb_iterations} training steps each):")
    for b in summ["bb_dmb_vs_bb_do"]:
        db = f"  bb-db {b['bb_db']:.2f}/{b['ssim_bb_db']:.3f}" if "bb_db" in b else ""
        name = b["head"] + (f" (window {s.bb_window})" if b["frames"] == "multi" else "") + (
            " (public queries)" if b["queries"] == "public" else "")
        print(f"  {name:<46} bb-do {b['bb_do']:.2f}/{b['ssim_bb_do']:.3f}{db}  "
              f"bb-dmb {b['bb_dmb']:.2f}/{b['ssim_bb_dmb']:.3f} ({b['gain_db']:+.2f} dB, SSIM {b['ssim_gain']:+.3f}; "
              f"bb-dmb ahead on both on {b['seeds_won']}/{len(b['seeds'])} seeds)")
    for name, t in summ["dmb_iteration"].items():
        print(f"  one DMB iteration, 64x64, {s.timing_steps} DDIM steps, {name}: {t['seconds']:.2f} s, "
              f"peak +{t['peak_mb']:.0f} MB RSS, {t['unet_calls']:.0f} UNet calls (target < 1 s)")
    print(f"  white-box dmb rows ran with checkpointing {summ['dmb_rows_checkpointed']} (dmb's auto: off on CPU "
          f"while the unroll fits in 2 GiB)")


# ----- main ----------------------------------------------------------------------------------------

def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared 2-core machine, 2 threads ran ~5x slower)")
    footage.add_prior_option(p)
    p.add_argument("--cache", default="runs/feature_inversion_cache", help="prior, victim and inverter cache")
    p.add_argument("--work", help="recordings and reconstructions (default runs/feature_inversion[_quick])")
    p.add_argument("--frames", type=int, metavar="N",
                   help="consecutive held-out frames of the white-box single-frame rows, inverted as one batch "
                        "(default 4, --quick 2; at most the 50 held-out frames from bikes 200)")
    p.add_argument("--core", action="store_true",
                   help="only DO, DB and DMB at the same budget: no Algorithm 1, time-matched or init=inverter rows")
    p.add_argument("--rows", choices=("all", "white-box", "single", "black-box", "multi", "init"), default="all",
                   help="run only the white-box rows, the white-box single-frame rows (no multi-frame "
                        "comparison), the black-box rows, the multi-frame rows and the single-frame DMB rows "
                        "they are compared with, or DMB from draws and with init=inverter (default all)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    s = settings(args.quick)
    total = footage.clip_frames()  # decodes the clip: once
    if args.frames is not None:
        available = total - footage.held_out_start(total)
        if not 1 <= args.frames <= available:
            p.error(f"--frames must be between 1 and {available} (the held-out frames of {footage.CLIP} from "
                    f"{footage.held_out_start(total)}), got {args.frames}")
        s.frames = args.frames
    if args.core:
        s.alg1_rows = s.time_rows = s.init_rows = False
    cache = Path(args.cache)
    work = Path(args.work or ("runs/feature_inversion_quick" if args.quick else "runs/feature_inversion"))
    started = time.perf_counter()

    cut = footage.attacker_frames(total)
    print(f"footage: {footage.CLIP} frames 0..{cut - 1} train the prior and the black-box inverters (the attacker's "
          f"footage; with public queries the inverters train on {', '.join(footage.PUBLIC)} frames "
          f"0..{footage.public_frames(cut) - 1} "
          f"instead); the victim trains on the first {footage.TRAIN_FRACTION:.0%} of bikes, bigbuckbunny, carphone; "
          f"evaluation on held-out bikes frames")
    t0 = time.perf_counter()
    prior_dir, prior_info = footage.benchmark_prior(cache, s, args.prior)
    victim_path, victim_info = footage.cached_victim(cache, s.size, s.victim_epochs)
    build_seconds = time.perf_counter() - t0
    print(f"prior {prior_dir}; victim {victim_path} (held-out accuracy {victim_info['held_out_accuracy']:.3f}, "
          f"chance {victim_info['chance']:.3f}); assets ready in {build_seconds:.0f} s")

    seqs, images = footage.held_out(max(s.frames, s.multi_frames, s.bb_frames), s.size)
    print(f"held-out frames {footage.STREAM}: bikes {seqs[0]}..{seqs[s.frames - 1]} at {s.size}x{s.size} "
          f"(the multi-frame comparison: {seqs[0]}..{seqs[s.multi_frames - 1]}; black-box rows: "
          f"{seqs[0]}..{seqs[s.bb_frames - 1]})")
    shutil.rmtree(work, ignore_errors=True)
    truth = footage.write_truth(work / "truth", seqs, images)

    timing = dmb_iteration(prior_dir, images[0], s)
    print_table(timing, ["checkpoint", "checkpointed", "ddim_steps", "seconds_per_iteration",
                         "unet_calls_per_iteration", "peak_mb", "unrolled_activation_mb_estimate"])

    runs = [r for r in plan(s) if selected(r, args.rows)]
    rows: list[dict[str, Any]] = []
    recordings: dict[tuple[Head, int], Path] = {}
    with tqdm(runs, desc="feature inversion", unit="run") as bar:
        for run in bar:
            bar.set_postfix_str(run.folder)
            n = run.frame_count(s)
            if (run.head, n) not in recordings:
                model, split, victim = run.head
                rec = work / "recordings" / f"{model}-{split}-{victim}-{n}"
                recordings[run.head, n] = footage.write_recording(
                    rec, footage.head(model, split, s.size, victim, victim_path), seqs[:n], images[:n])
            budget = time_matched(run, rows, s) if run.variant == "time" else None
            row = attack_row(run, s, recordings[run.head, n], truth, work / "out" / run.folder, prior_dir, victim_path,
                             cache, cut, budget)
            rows.append(row)
            bar.write(f"{row['model']:<18} {row['split']:<6} {row['victim']:<7} {row['setting']:<9} "
                      f"{row['frames']:<6} {row['method']:<3} {row['variant'] or '':<6}  "
                      f"psnr {row['psnr']:6.2f}  ssim {row['ssim']:.3f}  "
                      f"{row['seconds_per_frame']:7.2f} s/frame  +{row['peak_mb']:.0f} MB")
    print()
    print_table(rows, COLUMNS)
    summ = summary(rows, timing, s)
    print_summary(summ, s)
    seconds = time.perf_counter() - started
    print(f"\ntotal {seconds:.0f} s ({build_seconds:.0f} s building or loading the prior and the victim)")
    config = {
        "quick": args.quick, "rows": args.rows, "settings": asdict(s), "threads": args.threads, "work": str(work),
        "footage": {"clip": footage.CLIP, "clip_frames": total, "attacker_frames": f"0..{cut - 1}",
                    "prior": f"{footage.CLIP} frames 0..{cut - 1} (train-prior --latent --size {s.size})",
                    "black_box_queries": {"scene": f"{footage.CLIP} frames 0..{cut - 1} (+ flips) through F1",
                                          "public": f"{', '.join(footage.PUBLIC)}: frames "
                                                    f"0..{footage.public_frames(cut) - 1} of each "
                                                    f"(+ flips) through F1; the prior still knows only bikes"},
                    "victim": "train-victim: first 70% of bikes, bigbuckbunny, carphone (clip classification)",
                    "evaluation": f"bikes frames {seqs[0]}..{seqs[s.frames - 1]}, the multi-frame comparison "
                                  f"{seqs[0]}..{seqs[s.multi_frames - 1]}, the black-box rows "
                                  f"{seqs[0]}..{seqs[s.bb_frames - 1]} (held out from all of the above)"},
        "prior": prior_info, "victim": victim_info,
        "metrics": "psnr/ssim: both images bicubic-resized to 128; psnr_64/ssim_64: at the native 64",
        "iteration_budget": f"white-box DO, DB: {s.iterations} Adam steps each (paper: 1,500); DMB: {s.iterations} "
                            f"runs of the {s.steps}-step sampler, the default spending {DMB.refine.share:.0%} of them "
                            f"as {s.steps} refinement steps each on the sampled latent and {DMB.sampler.coarse_share:.0%} "
                            f"of the rest as {DMB.sampler.coarse_steps}-step runs (Adam steps per sampler size, "
                            f"0 = refinement: {DiffusionBased(sampler_steps=s.steps).plan(s.iterations)}); variant alg1: {s.iterations} "
                            f"Adam steps through the {s.steps}-step sampler; variant init: DMB with init=inverter "
                            f"(bb-db's inverter, 500 steps on the attacker's footage, one-off and cached, its training "
                            f"time not counted); DB variant time: DB's Adam steps scaled "
                            f"by the head's DMB / DB seconds per frame; DMB-multi: "
                            f"{s.iterations} sampler runs per frame, as DMB spends them, in one window of "
                            f"{s.multi_frames} frames, fused at threshold {MultiConfig().frames.fuse}; "
                            f"black-box bb-do, bb-db, bb-dmb (and bb-do, bb-dmb with a window of {s.bb_window} "
                            f"frames): {s.bb_iterations} inverter training steps each, {s.bb_seeds} seeds, "
                            f"batch {s.bb_batch}, each attack's default width (about equal parameter counts: "
                            f"inverter_parameters in the rows)",
        "ddim_steps": f"{s.steps} in the attack rows (paper: 20, out of CPU reach across all rows); "
                      f"{s.timing_steps} in the one-iteration measurement",
        "checkpointing": "attack rows: dmb's auto (off on CPU when the unroll fits in 2 GiB); bb-dmb training: on; "
                         "one-iteration rows: forced on and off",
        "seconds_per_frame": "attack wall time / frames (frames inverted as one batch); black-box: inversion "
                             "only, the inverter's one-off training in inverter_train_seconds",
        "peak_mb": "peak RSS above the run's start, sampled every 5 ms after malloc_trim (CPU tensors, "
                   "workspaces and whatever the run loads: prior, head)",
        "summary": summ, "seconds": seconds, "build_seconds": build_seconds,
    }
    write(args.json, rows + timing, config)


if __name__ == "__main__":
    main()
