"""The survey's command line and its one entry point, `survey`, which tests call in-process."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import benchmarks.survey as package
from benchmarks.common import parser, print_table, write
from benchmarks.survey.footage import FOOTAGE
from benchmarks.survey.measure import SUCCESS_DB, measure
from benchmarks.survey.plan import ATTACKS, BATCHES, MODELS, SIZE, plan
from benchmarks.survey.report import heatmap, reasons, summary_table, write_csv
from benchmarks.survey.store import Store


def survey(out: Path, quick: bool = False, json_path: str | None = None, resume: bool = False,
           **choices: Any) -> list[dict[str, Any]]:
    """Plan, measure (each finished cell's row saved under out/cells/; with `resume`, cells whose row is there
    are not redone) and write every planned cell's row (JSON + CSV), both heat-maps and the table; the rows.
    `choices`: plan()'s models, footage, attacks, batches, frames, iterations, size."""
    start = time.perf_counter()
    cells = plan(quick, **choices)
    runs = sum(c.runs for c in cells)
    print(f"survey: {len(cells)} cells, {runs} to measure, {len(cells) - runs} refused", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    rows = measure(cells, Store(out, choices.get("size") or SIZE), resume)
    seconds = time.perf_counter() - start
    resumed = sum(1 for r in rows if r.get("resumed"))
    config = {"quick": quick, **{k: v for k, v in choices.items() if v is not None}, "success_db": SUCCESS_DB,
              "wall_seconds": seconds, "resume": resume, "cells_resumed": resumed,
              "psnr_at": "128 px (both upscaled); psnr_native at the model's input size"}
    write(json_path or str(out / "survey.json"), rows, config)
    write_csv(out / "survey.csv", rows)
    heatmap(rows, "psnr", out / "psnr.png", "PSNR (dB, 128 px) per cell; n/a: a stated reason (rows)", "dB")
    heatmap(rows, "seconds_per_frame", out / "time.png", "attack seconds per frame (provisional: shared CPU)",
            "s / frame", log=True)
    table = summary_table(rows)
    print("\nmean over footage: PSNR dB / success (>= 30 dB) / seconds per frame")
    print_table(table, ["model", "batch", *dict.fromkeys(r["attack"] for r in rows)])
    print("\nstated reasons (cells):")
    for reason, count in reasons(rows).items():
        print(f"  {count:3d}  {reason}")
    print(f"\nwall time {seconds / 60:.1f} min; wrote {out}/survey.csv, psnr.png, time.png", flush=True)
    return rows


def _names(known: tuple[str, ...]):
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(v for v in text.split(",") if v)
        unknown = [v for v in names if v not in known]
        if unknown:
            raise ValueError(f"unknown: {', '.join(unknown)}")
        return names
    return parse


def main(argv: list[str] | None = None) -> None:
    p = parser((package.__doc__ or "").splitlines()[0])
    p.add_argument("--out", default="runs/survey", help="folder for survey.json/.csv, psnr.png, time.png")
    p.add_argument("--models", type=_names(MODELS), default=MODELS, help=f"default: all ({','.join(MODELS)})")
    p.add_argument("--footage", type=_names(FOOTAGE), help=f"default: all ({','.join(FOOTAGE)}); --quick bikes")
    p.add_argument("--attacks", type=_names(ATTACKS), default=ATTACKS, help="default: dlg,idlg,ig,rgap")
    p.add_argument("--batches", type=lambda t: tuple(int(v) for v in t.split(",")), default=BATCHES)
    p.add_argument("--frames", type=int, help="frames per cell at batch 1 (default 2; --quick 1)")
    p.add_argument("--iterations", type=int, help="every iterative attack's iterations (default: the budgets)")
    p.add_argument("--size", type=int, default=SIZE, help="input size in px (default 32)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument("--resume", action="store_true",
                   help="skip cells whose row a run with the same --out saved (out/cells/), reuse kept recordings")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    survey(Path(args.out), args.quick, args.json, args.resume, models=args.models, footage=args.footage,
           attacks=args.attacks, batches=args.batches, frames=args.frames, iterations=args.iterations, size=args.size)
