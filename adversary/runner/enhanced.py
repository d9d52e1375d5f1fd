"""`splitleak attack --enhance` / `--video`: super-resolution of what the attack recovered, in OUT/enhanced."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENHANCED_DIR = "enhanced"


@dataclass
class EnhanceRequest:
    """What to run on the recovered frames: a method (None: only the video of what was recovered)."""

    method: str | None = None
    refs: list[str] | None = None
    weights: str | None = None
    scale: int = 4
    device: str = "cpu"
    batch: int = 16
    size: int = 128
    video: str | None = None
    fps: float = 30.0
    enhancer: Any = field(default=None, repr=False)

    def check(self) -> None:
        """Build the method (loading its weights) and read the references before the attack runs."""
        from adversary.enhance.methods import get_method
        from adversary.enhance.pipeline import load_refs

        if self.method is not None and self.enhancer is None:
            self.enhancer = get_method(self.method)(scale=self.scale, device=self.device, weights=self.weights)
        load_refs(self.refs)


def enhance_recovered(out: str, request: EnhanceRequest, truth: str | None, progress: bool = True) -> dict[str, Any]:
    """Enhance OUT's recovered frames into OUT/enhanced (metrics there when truth is given) and/or write
    the video; return the enhancement's summary, config and video entry."""
    from adversary.enhance.pipeline import enhance_folder, load_stream, stream_frames, write_video

    request.check()
    if request.enhancer is None:  # --video without --enhance: original | recovered
        streams = stream_frames(out)
        lows = {s: load_stream(out, s, seqs) for s, seqs in streams.items()}
        return {"video": write_video(request.video, streams, lows, None, truth, request.fps, request.size)}
    return enhance_folder(out, str(Path(out) / ENHANCED_DIR), request.enhancer, refs=request.refs,
                          batch=request.batch, truth=truth, size=request.size, video=request.video,
                          fps=request.fps, progress=progress)
