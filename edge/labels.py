"""Labels for learning modes: one class id for the whole source, or per frame from a CSV file.

The CSV file has rows `start,end,label` (frame indices, end exclusive; a `#` starts a
comment): a segment of the clip gets one class, as when a clip is cut into scenes. Frames
no row covers get the default `--label`.
"""
from __future__ import annotations

import csv
from pathlib import Path

from splitleak.errors import SplitleakError


class Labels:
    def __init__(self, default: int, num_classes: int, path: str | None = None):
        self.num_classes = num_classes
        self.default = self._check(default, "--label")
        self.segments: list[tuple[int, int, int]] = self._read(path) if path else []

    def __call__(self, index: int) -> int:
        for start, end, label in self.segments:
            if start <= index < end:
                return label
        return self.default

    def _check(self, label: int, where: str) -> int:
        if not 0 <= label < self.num_classes:
            raise SplitleakError(f"{where}: label {label} outside [0, {self.num_classes})")
        return label

    def _read(self, path: str) -> list[tuple[int, int, int]]:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise SplitleakError(f"cannot read labels file {path}: {err.strerror}") from None
        segments = []
        rows = csv.reader(line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
        for number, row in enumerate(rows, 1):
            try:
                start, end, label = (int(v) for v in row)
            except ValueError:
                raise SplitleakError(f"{path} row {number}: expected start,end,label integers, got {row}") from None
            if not 0 <= start < end:
                raise SplitleakError(f"{path} row {number}: need 0 <= start < end, got {start},{end}")
            segments.append((start, end, self._check(label, f"{path} row {number}")))
        return segments
