"""One recorded FedSGD stream per (model, footage, batch): a real edge streaming to a recording cloud
process over loopback (as benchmarks/video_leakage/fedavg.py records), shared by that cell's attacks."""
from __future__ import annotations

from pathlib import Path

from benchmarks.common import record_training
from benchmarks.enhance_dlg import labels_csv
from benchmarks.survey.plan import message_mb

STREAM = "survey"


def record(model: str, size: int, source: Path, work: Path, batch: int, frames: int) -> tuple[Path, Path]:
    """Stream `frames` frames of `source` in fedsgd mode (seeded weights, split none, lr 0.01, frame i
    class i mod 10) to a recording `splitleak cloud` process, both at the wire limit the model needs
    (plan.message_mb); the (recording, truth) folders."""
    limit = message_mb(model, size)  # vit_b_16's state and gradient are over the default 256 MiB
    work.mkdir(parents=True, exist_ok=True)
    return record_training(work, ("--max-message-mb", str(limit)), source=str(source), model=model, split="none",
                           size=size, mode="fedsgd", frames=frames, batch=batch, stream_id=STREAM,
                           labels=labels_csv(frames, work / "labels.csv"), max_message_bytes=limit << 20)
