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

import itertools
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from splitleak.errors import SplitleakError

FORMAT = "splitleak-recording/1"
HEADER, MANIFEST, SUMMARY, TENSORS = "recording.json", "items.jsonl", "summary.json", "tensors"
KINDS = ("frame", "update", "state")  # features; gradients or weight deltas; a global model state
MAX_LINE = 1 << 20  # bytes per manifest line: far above any real item's metadata


class RecordedItem:
    """One recorded item. Its tensors are read from its file on first use (`tensors`); `shapes`
    comes from the file's header, so an item can be checked without reading its tensors."""

    def __init__(self, index: int, kind: str, meta: dict[str, Any],
                 tensors: dict[str, np.ndarray] | None = None, *, path: Path | None = None,
                 shapes: dict[str, tuple[int, ...]] | None = None) -> None:
        self.index, self.kind, self.meta, self.path = index, kind, meta, path
        self._tensors = tensors
        self._shapes = shapes

    @property
    def tensors(self) -> dict[str, np.ndarray]:
        if self._tensors is None:
            try:
                self._tensors = load_file(str(self.path))
            except (OSError, SafetensorError) as err:
                raise SplitleakError(f"recording item {self.index}: cannot read its tensors: {err}") from None
        return self._tensors

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        if self._shapes is None:
            self._shapes = {k: tuple(v.shape) for k, v in self.tensors.items()}
        return self._shapes

    def __repr__(self) -> str:
        return f"RecordedItem(index={self.index}, kind={self.kind!r})"


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
            # np.require keeps 0-d tensors 0-d (ascontiguousarray makes them (1,): BatchNorm's counters)
            save_file({k: np.require(v, requirements="C") for k, v in tensors.items()}, str(tmp))
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
    """Iterates a recording's items in order, stopping cleanly at a crash's break.

    A recording is input from outside: a line that is well-formed JSON but not an item (wrong
    types, an unknown kind, an index that repeats or goes back, a tensor file outside the
    folder) is a SplitleakError; a torn line or a missing or unreadable tensor file is where a
    crash stopped the writer, so reading ends there (`broken` says why). Tensors are read
    only when an item's `tensors` are asked for.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        header = self.folder / HEADER
        if not header.is_file():
            raise SplitleakError(f"{self.folder} is not a recording (no {HEADER})")
        try:
            self.header = json.loads(header.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            raise SplitleakError(f"{header} is corrupt") from None
        if not isinstance(self.header, dict) or not isinstance(self.header.get("config", {}), dict):
            raise SplitleakError(f"{header} is corrupt: expected an object with a config object")
        if self.header.get("format") != FORMAT:
            raise SplitleakError(f"{self.folder}: unknown recording format {show(self.header.get('format'))}")
        self.broken: str | None = None  # why reading stopped early, if it did

    @property
    def summary(self) -> dict[str, Any] | None:
        try:
            summary = json.loads((self.folder / SUMMARY).read_text())
        except (OSError, ValueError):
            return None
        return summary if isinstance(summary, dict) else None

    def __iter__(self) -> Iterator[RecordedItem]:
        path = self.folder / MANIFEST
        if not path.is_file():
            return
        last = -1
        with open(path, "rb") as lines:
            for number in itertools.count(1):
                raw = lines.readline(MAX_LINE + 1)
                if not raw:
                    return
                item = self._parse(number, raw, last)
                if item is None:
                    return
                last = item.index
                yield item

    def _parse(self, number: int, raw: bytes, last: int) -> RecordedItem | None:
        if len(raw) > MAX_LINE:
            raise SplitleakError(f"{self.folder}/{MANIFEST} line {number}: longer than {MAX_LINE} bytes")
        try:
            if not raw.endswith(b"\n"):
                raise ValueError("torn line")
            entry = json.loads(raw)
        except (ValueError, RecursionError) as err:
            self.broken = f"line {number}: {err}"
            return None
        index, kind, meta, path = self._entry(number, entry, last)
        try:
            with safe_open(str(path), framework="numpy") as f:
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except (OSError, SafetensorError) as err:
            self.broken = f"line {number}: {err}"
            return None
        return RecordedItem(index, kind, meta, path=path, shapes=shapes)

    def _entry(self, number: int, entry: Any, last: int) -> tuple[int, str, dict[str, Any], Path]:
        """The checked fields of one manifest line; SplitleakError naming the line otherwise."""
        where = f"{self.folder}/{MANIFEST} line {number}"
        if not isinstance(entry, dict):
            raise SplitleakError(f"{where}: expected an object, got {type(entry).__name__}")
        index, kind, meta, name = (entry.get(k) for k in ("index", "kind", "meta", "file"))
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 2**63:
            raise SplitleakError(f"{where}: bad index {show(index)}")
        if index <= last:  # the writer numbers items 0, 1, 2, ...: a repeat would shadow a frame
            raise SplitleakError(f"{where}: index {index} repeats or goes back (the line before has {last})")
        if kind not in KINDS:
            raise SplitleakError(f"{where}: unknown kind {show(kind)}; expected one of {', '.join(KINDS)}")
        if not isinstance(meta, dict):
            raise SplitleakError(f"{where}: meta must be an object, got {type(meta).__name__}")
        return index, kind, meta, self._tensor_path(where, name)

    def _tensor_path(self, where: str, name: Any) -> Path:
        """The item's tensor file, which must lie inside the recording folder."""
        if not isinstance(name, str) or not name or "\0" in name or Path(name).is_absolute():
            raise SplitleakError(f"{where}: bad tensor file {show(name)}: expected a path inside the recording")
        root = self.folder.resolve()
        path = (root / name).resolve()
        if not path.is_relative_to(root):
            raise SplitleakError(f"{where}: tensor file {show(name)} lies outside the recording folder")
        return path

    def items(self, kind: str | None = None) -> list[RecordedItem]:
        return [item for item in self if kind is None or item.kind == kind]


def show(value: Any, limit: int = 40) -> str:
    """A short repr of a value read from outside, for one-line errors."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
