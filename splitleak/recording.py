"""Recordings: what the cloud decoded, on disk, crash-safe.

A recording is a folder:
  recording.json       header: format, creation time, the config that made it
  items.jsonl          one JSON line per item (kind, metadata, tensor file), appended
  tensors/NNNNNNNN.safetensors   the item's tensors, written before its line
  summary.json         written on a clean close: item and drop counts
Each tensor file is complete before its manifest line is appended, so a crash leaves a
readable prefix; the reader stops at the first torn line or missing file and says so.
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from splitleak.errors import SplitleakError

FORMAT = "splitleak-recording/1"
HEADER, MANIFEST, SUMMARY, TENSORS = "recording.json", "items.jsonl", "summary.json", "tensors"


@dataclass
class RecordedItem:
    index: int
    kind: str  # "frame" (features) or "update" (gradients / weight deltas)
    meta: dict[str, Any]
    tensors: dict[str, np.ndarray] = field(repr=False)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename): readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


class RecordingWriter:
    """Appends items as they arrive; thread-safe; refuses to overwrite another recording."""

    def __init__(self, folder: str | os.PathLike, config: dict[str, Any] | None = None):
        self.folder = Path(folder)
        if (self.folder / MANIFEST).exists():
            raise SplitleakError(f"{self.folder} already holds a recording; choose an empty folder")
        (self.folder / TENSORS).mkdir(parents=True, exist_ok=True)
        write_json(self.folder / HEADER, {"format": FORMAT, "created": time.time(), "config": config or {}})
        self._manifest = open(self.folder / MANIFEST, "a", encoding="utf-8")
        self._lock = threading.Lock()
        self.count = 0
        self.dropped = 0

    def append(self, kind: str, meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> int:
        with self._lock:
            index = self.count
            name = f"{TENSORS}/{index:08d}.safetensors"
            tmp = self.folder / (name + ".tmp")
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp))
            os.replace(tmp, self.folder / name)
            line = json.dumps({"index": index, "kind": kind, "file": name, "meta": meta}, default=str)
            self._manifest.write(line + "\n")
            self._manifest.flush()
            self.count += 1
            return index

    def close(self, **extra: Any) -> None:
        with self._lock:
            if self._manifest.closed:
                return
            self._manifest.close()
            write_json(self.folder / SUMMARY, {"items": self.count, "dropped": self.dropped, **extra})

    def __enter__(self) -> "RecordingWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordingReader:
    """Iterates a recording's items in order, stopping cleanly at a crash's break."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        header = self.folder / HEADER
        if not header.is_file():
            raise SplitleakError(f"{self.folder} is not a recording (no {HEADER})")
        try:
            self.header = json.loads(header.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SplitleakError(f"{header} is corrupt") from None
        if self.header.get("format") != FORMAT:
            raise SplitleakError(f"{self.folder}: unknown recording format {self.header.get('format')!r}")
        self.broken: str | None = None  # why reading stopped early, if it did

    @property
    def summary(self) -> dict[str, Any] | None:
        path = self.folder / SUMMARY
        return json.loads(path.read_text()) if path.is_file() else None

    def __iter__(self) -> Iterator[RecordedItem]:
        path = self.folder / MANIFEST
        if not path.is_file():
            return
        with open(path, "rb") as lines:
            for number, raw in enumerate(lines, 1):
                item = self._parse(number, raw)
                if item is None:
                    return
                yield item

    def _parse(self, number: int, raw: bytes) -> RecordedItem | None:
        try:
            if not raw.endswith(b"\n"):
                raise ValueError("torn line")
            entry = json.loads(raw)
            tensors = load_file(str(self.folder / entry["file"]))
            return RecordedItem(entry["index"], entry["kind"], entry["meta"], tensors)
        except (ValueError, KeyError, TypeError, OSError, SafetensorError) as err:
            self.broken = f"line {number}: {err}"
            return None

    def items(self, kind: str | None = None) -> list[RecordedItem]:
        return [item for item in self if kind is None or item.kind == kind]
