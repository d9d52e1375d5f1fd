"""The results folder's tables: results.jsonl (appended, one line per finished cell) and results.csv
(rebuilt from it). A line is written whole and fsync'd, so a killed run leaves whole lines only; a
torn last line (a crash inside the write) is ignored on reading."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

FIELDS = ("cell", "experiment", "source", "model", "split", "mode", "size", "frames", "link", "link_backend", "qdiscs",
          "codec", "defence",
          "congestion", "attack", "seed", "device", "sent", "acked", "lost", "skipped", "tapped", "attacked", "fps",
          "latency_p50_ms", "bytes_per_frame", "psnr", "ssim", "success_rate", "seconds", "attack_seconds",
          "utility", "utility_metric", "epsilon", "delta", "status", "error", "cell_dir")


class Results:
    def __init__(self, out: Path):
        self.out = out
        self.jsonl, self.csv = out / "results.jsonl", out / "results.csv"

    def rows(self) -> dict[str, dict[str, Any]]:
        """cell id -> its last row."""
        rows: dict[str, dict[str, Any]] = {}
        if not self.jsonl.exists():
            return rows
        for line in self.jsonl.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a torn line from a crash mid-write
            if isinstance(row, dict) and "cell" in row:
                rows[row["cell"]] = row
        return rows

    def add(self, row: dict[str, Any]) -> None:
        """Write the cell's row.json atomically, then append its line to results.jsonl; rebuild the csv."""
        folder = self.out / row["cell_dir"]
        write_atomic(folder / "row.json", json.dumps(row, indent=2))
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rebuild_csv()

    def rebuild_csv(self) -> None:
        rows = list(self.rows().values())
        tmp = self.csv.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.csv)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
