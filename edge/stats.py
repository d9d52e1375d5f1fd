"""The edge's bookkeeping: every frame sent ends acked, rejected or lost, never unaccounted."""
from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np


class StreamStats:
    """Thread-safe ledger of frames in flight, keyed by sequence number."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, float] = {}  # seq -> capture timestamp
        self._latencies: list[float] = []
        self.sent = self.acked = self.rejected = self.lost = 0
        self.bytes = 0
        self.reconnects = 0
        self.errors: list[str] = []  # first few rejection reasons, for the summary
        self.started = time.time()
        self.finished: float | None = None

    def on_sent(self, seq: int, capture_ts: float, nbytes: int) -> None:
        with self._lock:
            self._pending[seq] = capture_ts
            self.sent += 1
            self.bytes += nbytes

    def on_answer(self, seq: int, error: str | None = None) -> bool:
        """Record an answer; False if the frame was not pending (a duplicate or a stray)."""
        now = time.time()
        with self._lock:
            capture_ts = self._pending.pop(seq, None)
            if capture_ts is None:
                return False
            if error is None:
                self.acked += 1
                self._latencies.append(now - capture_ts)
            else:
                self.rejected += 1
                if len(self.errors) < 5:
                    self.errors.append(error)
            return True

    def on_lost(self, seqs) -> int:
        """Count the given pending frames as lost; returns how many were still pending."""
        with self._lock:
            gone = [s for s in seqs if self._pending.pop(s, None) is not None]
            self.lost += len(gone)
            return len(gone)

    def pending(self) -> list[int]:
        with self._lock:
            return list(self._pending)

    def finish(self) -> None:
        self.on_lost(self.pending())
        self.finished = time.time()

    def summary(self) -> dict[str, Any]:
        """The contract's summary: sent, acked, lost, fps, latency percentiles, bytes per frame."""
        with self._lock:
            elapsed = (self.finished or time.time()) - self.started
            lat = np.asarray(self._latencies) * 1e3
            pct = {f"p{p}": round(float(np.percentile(lat, p)), 3) if lat.size else None for p in (50, 95, 99)}
            return {
                "sent": self.sent,
                "acked": self.acked,
                "lost": self.lost,
                "rejected": self.rejected,
                "fps": round(self.sent / elapsed, 3) if elapsed > 0 else 0.0,
                "latency_ms": pct,
                "bytes_per_frame": round(self.bytes / self.sent, 1) if self.sent else 0.0,
                "seconds": round(elapsed, 3),
                "reconnects": self.reconnects,
                "errors": list(self.errors),
            }
