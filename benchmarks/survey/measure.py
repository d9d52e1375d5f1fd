"""Measure the planned cells: one recording per (model, footage, batch), each of its attacks through
`run_attack` (the code `splitleak attack` runs), one row per cell, saved as it finishes (store.py)."""
from __future__ import annotations

import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import torch._dynamo  # noqa: F401  (torch.func imports it on first use: seconds that are not attack time)

from adversary.runner.run import run_attack
from benchmarks.survey.footage import write_source
from benchmarks.survey.plan import Cell
from benchmarks.survey.record import record
from benchmarks.survey.store import Store

SUCCESS_DB = 30.0  # the project's rule: a frame is recovered at >= 30 dB PSNR (128 px)


def refused_row(cell: Cell, reason: str) -> dict[str, Any]:
    return {**base(cell), "status": "refused", "reason": reason}


def base(cell: Cell) -> dict[str, Any]:
    return {"model": cell.model, "footage": cell.footage, "attack": cell.attack, "batch": cell.batch,
            "frames": cell.frames, "iterations": cell.iterations, "options": dict(cell.options),
            "psnr": None, "ssim": None, "success": None, "seconds_per_frame": None, "psnr_native": None,
            "status": "measured", "reason": None}


def attack_row(cell: Cell, rec: Path, truth: Path, out: Path) -> dict[str, Any]:
    """Attack the recording as `splitleak attack` does and summarise it as one row (a failure: its reason)."""
    try:
        metrics = run_attack(str(rec), cell.attack, str(out), truth=str(truth), iterations=cell.iterations,
                             options=dict(cell.options), progress=False, seed=0)
    except Exception as err:  # noqa: BLE001  (any failure is the cell's stated reason; the matrix goes on)
        traceback.print_exc()
        return {**refused_row(cell, f"{cell.attack}: {type(err).__name__}: {err}"), "status": "failed"}
    frames, summary = metrics["frames"], metrics["summary"]
    psnrs = [f["psnr"] for f in frames]
    return {**base(cell), "psnr": summary["mean_psnr"], "ssim": summary["mean_ssim"],
            "success": sum(p >= SUCCESS_DB for p in psnrs) / len(psnrs),
            "seconds_per_frame": summary["seconds_per_frame"], "psnr_native": summary.get("mean_psnr_native"),
            "ssim_native": summary.get("mean_ssim_native"), "frames": len(frames),
            "psnr_per_frame": [round(p, 2) for p in psnrs], "label_accuracy": summary.get("label_accuracy")}


def measure(cells: list[Cell], store: Store, resume: bool = False, log: Any = print) -> list[dict[str, Any]]:
    """One row per cell, in plan order, each saved under the store as it finishes. With `resume`, a cell
    whose measured row is saved is not redone (a failed one is retried) and a complete kept recording is
    reused; each recording is deleted once its attacks are done."""
    rows: dict[int, dict[str, Any]] = {}
    groups: dict[tuple[str, str, int, int], list[int]] = {}
    for i, cell in enumerate(cells):
        saved = store.load(cell) if resume and cell.runs else None
        if not cell.runs:
            rows[i] = refused_row(cell, cell.reason or "")
        elif saved is not None and saved.get("status") == "measured":
            rows[i] = {**saved, "resumed": True}  # measured by an earlier run
            log(f"{line(saved)} (resumed)")
        else:
            groups.setdefault(cell.recording, []).append(i)
    with tempfile.TemporaryDirectory(prefix="survey-") as tmp:
        sources = _sources(groups, Path(tmp))
        for key, members in groups.items():
            model, footage, batch, frames = key
            work = store.recording(key)
            recorded = store.kept(work) if resume else None
            if recorded is None:
                store.remove(work)
                started = time.perf_counter()
                try:
                    record(model, store.size, sources[footage][0], work, batch, frames)
                except Exception as err:  # noqa: BLE001  (the stream failed: every attack of it says why)
                    for i in members:
                        rows[i] = {**refused_row(cells[i], f"recording: {type(err).__name__}: {err}"),
                                   "status": "failed"}
                        store.save(cells[i], rows[i])
                    store.remove(work)
                    continue
                recorded = round(time.perf_counter() - started, 2)
                store.mark_done(work, recorded)
            for i in members:
                row = attack_row(cells[i], work / "rec", work / "truth", work / f"out-{cells[i].attack}")
                rows[i] = {**row, "first_frame": sources[footage][1], "record_seconds": recorded,
                           "cell_id": store.row_path(cells[i]).stem}
                store.save(cells[i], rows[i])
                log(line(rows[i]))
            store.remove(work)
    return [rows[i] for i in range(len(cells))]


def _sources(groups: dict[tuple[str, str, int, int], list[int]], tmp: Path) -> dict[str, tuple[Path, int]]:
    """Each footage's held-out frames, as many as its largest recording takes: (folder, first frame)."""
    wanted: dict[str, int] = {}
    for _, footage, _, frames in groups:
        wanted[footage] = max(wanted.get(footage, 0), frames)
    return {footage: write_source(footage, tmp / "source" / footage, count) for footage, count in wanted.items()}


def line(row: dict[str, Any]) -> str:
    head = f"{row['model']} {row['footage']} {row['attack']} B={row['batch']}:"
    if row["psnr"] is None:
        return f"{head} {row['reason']}"
    return (f"{head} {row['psnr']:.1f} dB, SSIM {row['ssim']:.2f}, {row['success']:.0%} >= {SUCCESS_DB:g} dB, "
            f"{row['seconds_per_frame']:.1f} s/frame")
