"""The sweep: validate, train a prior once if asked, run every unfinished cell (in order, or as Ray
tasks), record each row as its cell completes, plot at the end."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterable

from tqdm import tqdm

from experiments.cell import environment, last_line, run_group, service, stream_key
from experiments.orphans import child_options
from experiments.plots import write_plots
from experiments.results import Results, write_atomic
from experiments.spec import Cell, Experiment, PriorSpec, digest
from splitleak.errors import SplitleakError

Row = dict[str, Any]


def run_experiment(experiment: Experiment, out: Path, *, resume: bool = False, ray: str | None = None,
                   workers: int | None = None, progress: bool = True, source_file: str | None = None,
                   threads: int = 1) -> list[Row]:
    """Run the experiment's unfinished cells into `out` (each cell's attack on `threads` torch threads, its
    services on one each); return its rows in cell order."""
    out = out.resolve()  # the services run inside their folders: every path they get is absolute
    out.mkdir(parents=True, exist_ok=True)
    if source_file:
        shutil.copyfile(source_file, out / "experiment.yaml")
    write_atomic(out / "experiment.json", json.dumps(
        {"name": experiment.name, "quick": experiment.quick, "prior": dataclasses.asdict(experiment.prior)
         if experiment.prior else None, "cells": [{"cell": c.id, **dataclasses.asdict(c)} for c in experiment.cells]},
        indent=2))
    results = Results(out)
    finished = results.rows()
    skip = {"ok", "failed"} if resume else {"ok"}
    todo = [c for c in experiment.cells if finished.get(c.id, {}).get("status") not in skip]
    prior_dir = ensure_prior(experiment.prior, out) if any(c.prior for c in todo) else None
    bar = tqdm(total=len(experiment.cells), initial=len(experiment.cells) - len(todo), unit="cell",
               desc=f"run {experiment.name}", disable=not progress)

    def record(row: Row) -> None:
        results.add(row)
        bar.set_postfix_str(f"{row['attack']} {row['link']} {row['codec']} {row['status']}")
        bar.update(1)

    try:
        groups = list(grouped(todo).values())
        if ray:
            run_on_ray(groups, out, prior_dir, experiment.timeout, ray, workers, record, threads)
        else:
            for cells in groups:
                run_group(cells, out, prior_dir, experiment.timeout, on_row=record, threads=threads)
    finally:
        bar.close()
    rows = results.rows()
    ours = [rows[c.id] for c in experiment.cells if c.id in rows]
    write_plots(ours, out / "plots")
    return ours


def grouped(cells: list[Cell]) -> dict[str, list[Cell]]:
    """Cells by the stream they share (every attack of one stream in one go)."""
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(stream_key(cell), []).append(cell)
    return groups


def run_on_ray(groups: list[list[Cell]], out: Path, prior_dir: str | None, timeout: float, address: str,
               workers: int | None, record: Callable[[Row], None], threads: int = 1) -> None:
    """Each stream's cells a Ray task (a GPU requested where the device is cuda); rows recorded here as
    tasks finish, so the files are the same as a sequential run's."""
    import ray

    env = {"env_vars": {"PYTHONPATH": environment()["PYTHONPATH"], "OMP_NUM_THREADS": str(threads)}}
    if address == "auto":  # a local instance of our own
        ray.init(num_cpus=workers, runtime_env=env, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, runtime_env=env, log_to_driver=False)
    try:
        task = ray.remote(run_group)
        pending = [task.options(num_cpus=threads, num_gpus=1 if cells[0].device == "cuda" else 0)
                   .remote(cells, out.resolve(), prior_dir, timeout, threads=threads) for cells in groups]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for row in ray.get(done[0]):
                record(row)
    finally:
        ray.shutdown()


def ensure_prior(spec: PriorSpec | None, out: Path) -> str | None:
    """The prior's folder: the given path, or one trained once into out/priors/<hash> (reused after)."""
    if spec is None:
        return None
    if spec.path:
        return spec.path
    folder = out / "priors" / digest(dataclasses.asdict(spec))
    done = folder / "trained.json"
    if done.exists():
        return str(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    args = ["train-prior", "--source", spec.source, "--out", str(folder), "--size", str(spec.size),
            "--steps", str(spec.steps), "--quiet", "--preview", "0"]
    if spec.latent:
        args.append("--latent")
    if spec.vae_steps:
        args += ["--vae-steps", str(spec.vae_steps)]
    log = out / "priors" / f"{folder.name}.log"
    with open(log, "wb") as f:
        result = subprocess.run(service(args), stdout=subprocess.DEVNULL, stderr=f, env=environment(),
                                **child_options())
    if result.returncode != 0:
        raise SplitleakError(f"training the prior failed ({log}): {last_line(log)}")
    write_atomic(done, json.dumps(dataclasses.asdict(spec)))
    return str(folder)


def summary_lines(rows: Iterable[Row]) -> list[str]:
    """One line per row, for the terminal."""
    return [f"{r['cell']} {r['attack']:>9} link={r['link']} codec={r['codec']} defence={r['defence']} "
            f"psnr={r['psnr']} success={r['success_rate']} utility={r['utility']} {r['status']}"
            + (f": {r['error']}" if r.get("error") else "") for r in rows]
