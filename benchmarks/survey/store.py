"""What a survey run keeps under --out so the matrix can be finished across sessions (--resume):
one JSON row per finished cell, `cells/<cell id>.json`, written as the cell finishes, and each
(model, footage, batch) recording, `recordings/<id>/`, until every attack of it has its row.

A cell's id hashes everything that decides its number (model, footage, attack, batch, frames, budget,
options, input size): a changed budget is a new cell, never a stale row."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from benchmarks.survey.plan import Cell

DONE = "done.json"  # written once a recording is complete: a folder without it is a killed recording


def digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def cell_id(cell: Cell, size: int) -> str:
    settings = {"model": cell.model, "footage": cell.footage, "attack": cell.attack, "batch": cell.batch,
                "frames": cell.frames, "iterations": cell.iterations, "options": dict(cell.options), "size": size}
    return f"{cell.model}-{cell.footage}-{cell.attack}-b{cell.batch}-{digest(settings)}"


class Store:
    """Cell rows and kept recordings under `out`."""

    def __init__(self, out: Path, size: int) -> None:
        self.cells, self.recordings, self.size = out / "cells", out / "recordings", size

    def row_path(self, cell: Cell) -> Path:
        return self.cells / f"{cell_id(cell, self.size)}.json"

    def load(self, cell: Cell) -> dict[str, Any] | None:
        """The cell's saved row, or None (none yet, or unreadable: a session killed while writing it)."""
        try:
            row = json.loads(self.row_path(cell).read_text())
        except (OSError, ValueError):
            return None
        return row if isinstance(row, dict) else None

    def save(self, cell: Cell, row: dict[str, Any]) -> Path:
        """Write the row atomically (a kill leaves the old row or the new one, never half of one)."""
        path = self.row_path(cell)
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(".part")
        part.write_text(json.dumps(row, indent=1))
        os.replace(part, path)
        return path

    def recording(self, key: tuple[str, str, int, int]) -> Path:
        model, footage, batch, frames = key
        settings = {"model": model, "footage": footage, "batch": batch, "frames": frames, "size": self.size}
        return self.recordings / f"{model}-{footage}-b{batch}-{digest(settings)}"

    @staticmethod
    def kept(folder: Path) -> float | None:
        """The seconds a complete kept recording took, or None where there is none."""
        try:
            return float(json.loads((folder / DONE).read_text())["record_seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @staticmethod
    def mark_done(folder: Path, seconds: float) -> None:
        (folder / DONE).write_text(json.dumps({"record_seconds": seconds}))

    @staticmethod
    def remove(folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)  # recordings of large models are hundreds of MB
