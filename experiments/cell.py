"""One cell, end to end: a cloud and an edge as separate processes on loopback, the tap's recording
attacked with the adversary's runner, scored against the edge's truth, utility beside privacy."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from experiments.orphans import child_options
from experiments.spec import Cell, digest
from experiments.utility import utility_of
from splitleak.errors import SplitleakError

ROOT = Path(__file__).resolve().parents[1]  # the tree whose services the cell runs
LISTENING = re.compile(r"cloud listening on (\S+:\d+)")


def stream_key(cell: Cell) -> str:
    """Cells that differ only in the attack share one stream: the same tapped frames for every attack."""
    config = cell.hashed()
    for key in ("attack", "prior", "threshold"):
        config.pop(key)
    return digest(config)


def run_group(cells: list[Cell], out: Path, prior_dir: str | None = None, timeout: float = 900.0,
              on_row: Callable[[dict[str, Any]], None] = lambda row: None, threads: int = 1) -> list[dict[str, Any]]:
    """Stream once (out/streams/<key>, reused when complete), then attack it once per cell with `threads`
    torch threads; each row is handed to `on_row` as its cell completes. A cell's failure is its row;
    KeyboardInterrupt propagates."""
    import torch

    torch.set_num_threads(threads)
    rows = []
    shared = out / "streams" / stream_key(cells[0])
    started = time.time()
    try:
        stats, error = ensure_stream(cells[0], shared, timeout), None
    except SplitleakError as err:
        stats, error = read_json(shared / "stats.json"), one_line(str(err))
    for cell in cells:
        row = run_cell(cell, out, shared, stats, prior_dir, error, started)
        on_row(row)
        rows.append(row)
        started = time.time()
    return rows


def ensure_stream(cell: Cell, shared: Path, timeout: float) -> dict[str, Any]:
    done = shared / "done.json"
    if done.exists():
        return read_json(shared / "stats.json") or {}
    shutil.rmtree(shared, ignore_errors=True)
    shared.mkdir(parents=True)
    stats = stream(cell, shared, timeout)
    done.write_text(json.dumps({"stream": shared.name}))
    return stats


def run_cell(cell: Cell, out: Path, shared: Path, stats: dict[str, Any] | None, prior_dir: str | None,
             stream_error: str | None, started: float) -> dict[str, Any]:
    """Attack the shared stream for `cell` in out/cells/<id> (cleared first); the cell's row."""
    folder = out / "cells" / cell.id
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(
        {"cell": cell.id, "stream": f"streams/{shared.name}", **dataclasses.asdict(cell)}, indent=2))
    for name in ("stats.json",):
        if (shared / name).exists():
            shutil.copyfile(shared / name, folder / name)
    if (shared / "truth").exists():
        shutil.copytree(shared / "truth", folder / "truth")
    error = stream_error
    attack, utility = None, {}
    if error is None:
        try:
            attack = attack_recording(cell, shared, folder, prior_dir)
            utility = utility_of(cell, folder, stats or {})
        except SplitleakError as err:
            error = one_line(str(err))
        except (OSError, RuntimeError, ValueError) as err:  # a cell's crash is its row, not the sweep's end
            error = one_line(f"{type(err).__name__}: {err}")
    row = make_row(cell, shared, folder, stats, attack, utility, error)
    row["seconds"] = round(time.time() - started, 3)
    return row


def service(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "splitleak.cli.main", *args]


def environment() -> dict[str, str]:
    """The services import this tree (not another install), one torch thread each."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def stream(cell: Cell, folder: Path, timeout: float) -> dict[str, Any]:
    """Cloud up (recording), edge streams the source, cloud down; the edge's summary. Under the tc
    backend both run in their own network namespace, the kernel shaping the edge's egress."""
    if cell.link_backend != "tc":
        return stream_on(cell, folder, timeout, lambda side, argv: argv, "127.0.0.1", cell.link)
    from edge.link import LinkSpec
    from splitleak.netns import CLOUD_IP, tc_path

    spec = LinkSpec.parse(cell.link)
    with tc_path(rate=spec.rate, delay=spec.delay, jitter=spec.jitter, loss=spec.loss) as path:
        (folder / "link.json").write_text(json.dumps({"backend": "tc", "qdiscs": path.qdiscs, "shown": path.shown}))
        stats = stream_on(cell, folder, timeout, path.command, CLOUD_IP, "none")
    return {**stats, "qdiscs": path.qdiscs}


def stream_on(cell: Cell, folder: Path, timeout: float, inside: Callable[[str, list[str]], list[str]], host: str,
              link: str) -> dict[str, Any]:
    """`stream` with each side's command wrapped by `inside(side, argv)`, the cloud listening on `host`
    and the edge's own emulator given `link`."""
    cloud_log, edge_log = open(folder / "cloud.log", "wb"), open(folder / "edge.log", "wb")
    cloud = subprocess.Popen(inside("cloud", service(["cloud", "--listen", f"{host}:0", "--record",
                                                      str(folder / "recording"), "--device", cell.device,
                                                      "--threads", "1"])),
                             stdout=subprocess.DEVNULL, stderr=cloud_log, env=environment(), cwd=folder,
                             **child_options())
    try:
        address = wait_listening(cloud, folder / "cloud.log", timeout=120)
        edge = subprocess.run(inside("edge", service(edge_args(cell, folder, address, link))),
                              stdout=subprocess.DEVNULL, stderr=edge_log, env=environment(), cwd=folder,
                              timeout=timeout, **child_options())
        if edge.returncode != 0:
            raise SplitleakError(f"edge exited {edge.returncode}: {last_line(folder / 'edge.log')}")
    except subprocess.TimeoutExpired:
        raise SplitleakError(f"edge did not finish within {timeout:g} s") from None
    finally:
        stop(cloud)
        cloud_log.close()
        edge_log.close()
    stats = read_json(folder / "stats.json") or {}
    if link != cell.link:
        stats["link"] = cell.link  # what the cell asked for; the kernel shaped it
    return stats


def edge_args(cell: Cell, folder: Path, address: str, link: str) -> list[str]:
    args = ["edge", "--cloud", address, "--source", cell.source, "--model", cell.model, "--split", cell.split,
            "--mode", cell.mode, "--frames", str(cell.frames), "--size", str(cell.size), "--codec", cell.codec,
            "--link", link, "--defence", cell.defence, "--on-congestion", cell.congestion,
            "--max-pending", str(cell.max_pending), "--seed", str(cell.seed % 2**31), "--device", cell.device,
            "--truth", str(folder / "truth"), "--stats", str(folder / "stats.json"), "--quiet", "--threads", "1"]
    if cell.mode != "infer":
        args += ["--batch", str(cell.batch)]
    if cell.realtime:
        args.append("--realtime")
    return args


def wait_listening(cloud: subprocess.Popen, log: Path, timeout: float) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        match = LISTENING.search(log.read_text(errors="replace"))
        if match:
            return match.group(1)
        if cloud.poll() is not None:
            raise SplitleakError(f"cloud exited {cloud.returncode}: {last_line(log)}")
        time.sleep(0.05)
    raise SplitleakError(f"cloud did not listen within {timeout:g} s")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM (the cloud closes its recording), then SIGKILL if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def attack_recording(cell: Cell, shared: Path, folder: Path, prior_dir: str | None) -> dict[str, Any] | None:
    """The attack's metrics on what was tapped; None when nothing was (every frame missing)."""
    from adversary.runner.run import run_attack

    if not tapped_count(shared):
        return None
    a = cell.attack
    return run_attack(str(shared / "recording"), a.name, str(folder / "attack"), truth=str(folder / "truth"),
                      device=cell.device, iterations=a.iterations, seed=cell.seed, max_frames=a.max_frames,
                      progress=False, options=dict(a.options), prior=prior_dir if cell.prior else None,
                      preset=a.preset)


def tapped_count(folder: Path) -> int:
    items = folder / "recording" / "items.jsonl"
    return sum(1 for line in items.read_text().splitlines() if line.strip()) if items.exists() else 0


def truth_seqs(folder: Path) -> list[int]:
    return sorted(int(p.stem.rsplit("_", 1)[1]) for p in (folder / "truth").glob("*.png"))


def success(cell: Cell, shared: Path, attack: dict[str, Any] | None) -> tuple[float, int]:
    """Recovered frames over the truth frames in scope (a frame never tapped counts as not recovered);
    the scope is every captured frame, or up to the last attacked one when the attack took fewer."""
    truth = truth_seqs(shared)
    frames = (attack or {}).get("frames", [])
    attacked = {int(f["seq"]): f.get("psnr") for f in frames}
    if not truth:
        return 0.0, len(attacked)
    scope = truth
    if frames and cell.attack.max_frames is not None and len(frames) < tapped_count(shared):
        scope = [s for s in truth if s <= max(attacked)]
    hits = sum(1 for s in scope if attacked.get(s) is not None and attacked[s] >= cell.threshold)
    return hits / len(scope), len(attacked)


def make_row(cell: Cell, shared: Path, folder: Path, stats: dict[str, Any] | None, attack: dict[str, Any] | None,
             utility: dict[str, Any], error: str | None) -> dict[str, Any]:
    stats = stats or {}
    summary = (attack or {}).get("summary", {})
    rate, attacked = success(cell, shared, attack) if error is None else (None, 0)
    defence = stats.get("defence") or {}
    return {
        "cell": cell.id, "experiment": cell.experiment, "source": cell.source, "model": cell.model,
        "split": cell.split, "mode": cell.mode, "size": cell.size, "frames": cell.frames, "link": cell.link,
        "link_backend": cell.link_backend, "qdiscs": ",".join(stats.get("qdiscs") or []) or None,
        "codec": cell.codec, "defence": cell.defence, "congestion": cell.congestion, "attack": cell.attack.name,
        "seed": cell.seed, "device": cell.device,
        "sent": stats.get("sent"), "acked": stats.get("acked"), "lost": stats.get("lost"),
        "skipped": stats.get("skipped"), "tapped": tapped_count(shared), "attacked": attacked,
        "fps": stats.get("fps"), "latency_p50_ms": (stats.get("latency_ms") or {}).get("p50"),
        "bytes_per_frame": stats.get("bytes_per_frame"),
        "psnr": rounded(summary.get("mean_psnr")), "ssim": rounded(summary.get("mean_ssim")),
        "success_rate": rounded(rate), "seconds": None, "attack_seconds": rounded(summary.get("seconds")),
        "utility": rounded(utility.get("utility")), "utility_metric": utility.get("metric"),
        "epsilon": rounded(defence.get("epsilon")), "delta": defence.get("delta"),
        "status": "failed" if error else "ok", "error": error, "cell_dir": f"cells/{cell.id}",
    }


def rounded(value: Any, digits: int = 4) -> Any:
    return round(float(value), digits) if isinstance(value, (int, float)) and value is not None else value


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def one_line(text: str) -> str:
    return " ".join(text.split())[:500]
