"""Identifiers on the wire, checked at the cloud's door the way the edge checks its own."""
from __future__ import annotations

import math
import re

from splitleak.errors import SplitleakError

STREAM_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_SEQ = 2**63 - 1  # seq is uint64 on the wire; the cloud keeps it within int64 (numpy, JSON readers)


def check_stream_id(stream_id: str) -> str:
    if not STREAM_ID.fullmatch(stream_id):
        shown = stream_id if len(stream_id) <= 64 else stream_id[:64] + "..."
        raise SplitleakError(f"stream id {shown!r} must be 1-64 characters of [A-Za-z0-9._-]")
    return stream_id


def check_frame_ids(stream_id: str, seq: int, capture_ts: float) -> None:
    """Stream id, sequence number and capture time of a frame or an update."""
    check_stream_id(stream_id)
    if seq > MAX_SEQ:
        raise SplitleakError(f"seq {seq} exceeds {MAX_SEQ} (int64)")
    if not math.isfinite(capture_ts):
        raise SplitleakError(f"capture_ts {capture_ts} is not a finite number")


class SeqWindow:
    """Per stream within one call: refuse a seq already accepted, or one far behind the newest.

    The edge's link may reorder frames (jitter, retransmissions), never by more than its
    window of frames in flight, so a seq up to `reorder` behind the newest is still taken.
    """

    def __init__(self, reorder: int = 1024, max_streams: int = 64):
        self.reorder, self.max_streams = reorder, max_streams
        self._streams: dict[str, tuple[int, set[int]]] = {}

    def check(self, stream_id: str, seq: int) -> None:
        if stream_id not in self._streams:
            if len(self._streams) >= self.max_streams:
                raise SplitleakError(f"one call carries at most {self.max_streams} streams")
            return
        newest, seen = self._streams[stream_id]
        if seq in seen:
            raise SplitleakError(f"duplicate seq {seq} on stream {stream_id!r}")
        if seq <= newest - self.reorder:
            raise SplitleakError(f"seq {seq} on stream {stream_id!r} is more than {self.reorder} behind seq {newest}")

    def accept(self, stream_id: str, seq: int) -> None:
        """Remember an accepted seq (a refused one may come again, corrected)."""
        newest, seen = self._streams.get(stream_id, (seq, set()))
        newest = max(newest, seq)
        seen.add(seq)
        if len(seen) > 2 * self.reorder:
            seen = {s for s in seen if s > newest - self.reorder}
        self._streams[stream_id] = (newest, seen)
