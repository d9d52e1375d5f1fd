"""Reading a results folder (docs/experiments.md): rows from results.jsonl, checked before use."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from splitleak.errors import SplitleakError

MAX_RESULTS_BYTES = 64 << 20
CELL_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
# the contract's order; fields a row adds beyond these follow, in the order first seen
FIELDS = ("cell", "experiment", "source", "model", "split", "mode", "size", "frames", "link", "codec", "defence",
          "congestion", "attack", "seed", "device", "sent", "acked", "lost", "skipped", "tapped", "attacked", "fps",
          "latency_p50_ms", "bytes_per_frame", "psnr", "ssim", "success_rate", "seconds", "attack_seconds",
          "utility", "utility_metric", "epsilon", "delta", "status", "error", "cell_dir")


def inside(root: Path, path: Path) -> Path:
    """`path` resolved (links followed), or SplitleakError when it leaves `root`."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise SplitleakError(f"{path}: points outside the results folder {root}")
    return resolved


def load_rows(root: Path) -> list[dict[str, Any]]:
    """The finished cells' rows (last line per cell wins), or SplitleakError naming what is wrong."""
    if not root.is_dir():
        raise SplitleakError(f"results folder not found: {root}")
    path = root / "results.jsonl"
    if not path.is_file():
        raise SplitleakError(f"no results.jsonl in {root} (expected a `splitleak run --out` folder)")
    inside(root, path)
    if path.stat().st_size > MAX_RESULTS_BYTES:
        raise SplitleakError(f"{path}: larger than {MAX_RESULTS_BYTES >> 20} MiB")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SplitleakError(f"{path}: not UTF-8 text ({e.reason})") from None
    rows: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            row = parse_row(line, f"{path} line {number}")
            rows.pop(row["cell"], None)  # a rerun's row replaces the earlier one, and takes its place
            rows[row["cell"]] = row
    if not rows:
        raise SplitleakError(f"{path}: no result rows")
    return list(rows.values())


def parse_row(line: str, where: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as e:
        raise SplitleakError(f"{where}: not valid JSON ({getattr(e, 'msg', e)})") from None
    if not isinstance(row, dict):
        raise SplitleakError(f"{where}: expected a JSON object, got {type(row).__name__}")
    cell = row.get("cell")
    if not isinstance(cell, str) or not CELL_ID.fullmatch(cell):
        raise SplitleakError(f"{where}: bad or missing cell id (expected 1-64 letters, digits, _ or -)")
    cell_dir = row.get("cell_dir", f"cells/{cell}")
    if cell_dir != f"cells/{cell}":
        raise SplitleakError(f"{where}: cell_dir must be cells/{cell}")
    return row


def columns(rows: list[dict[str, Any]]) -> list[str]:
    """The contract's fields present in any row, then the rest in order of first appearance."""
    seen = {key: None for row in rows for key in row}
    return [f for f in FIELDS if f in seen] + [str(k) for k in seen if k not in FIELDS]


def read_json(path: Path, root: Path) -> Any | None:
    """A small JSON file inside the folder, or None when absent or unreadable (optional metadata)."""
    try:
        if path.is_file() and path.stat().st_size < (1 << 20):
            return json.loads(inside(root, path).read_text(encoding="utf-8"))
    except (ValueError, OSError, RecursionError):
        return None
    return None
