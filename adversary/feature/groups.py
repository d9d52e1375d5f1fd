"""Which frames of a batch belong together: runs of consecutive seq of one stream (wire metadata)."""

from __future__ import annotations

from collections.abc import Sequence


def consecutive_groups(frames: Sequence[tuple[str, int]], window: int) -> list[list[int]]:
    """Batch positions grouped into runs of consecutive seq of one stream, at most `window` long.

    Frames need not be sorted; positions within a group are ordered by seq. Duplicates of a
    (stream, seq) pair start a new group.
    """
    order = sorted(range(len(frames)), key=lambda i: (str(frames[i][0]), int(frames[i][1]), i))
    groups: list[list[int]] = []
    for i in order:
        stream, seq = frames[i]
        if groups:
            last = frames[groups[-1][-1]]
            if last[0] == stream and int(seq) == int(last[1]) + 1 and len(groups[-1]) < window:
                groups[-1].append(i)
                continue
        groups.append([i])
    return groups
