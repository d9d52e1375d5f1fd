"""One recorded FedSGD stream per (model, footage, batch): a real edge streaming to a recording cloud
process over loopback (as benchmarks/video_leakage/fedavg.py records), shared by that cell's attacks."""
from __future__ import annotations

from pathlib import Path

from benchmarks.common import CloudProcess
from benchmarks.enhance_dlg import labels_csv

STREAM = "survey"


def record(model: str, size: int, source: Path, work: Path, batch: int, frames: int) -> tuple[Path, Path]:
    """Stream `frames` frames of `source` in fedsgd mode (seeded weights, split none, lr 0.01, frame i
    class i mod 10) to a recording `splitleak cloud` process; the (recording, truth) folders."""
    from edge.session import EdgeConfig
    from edge.trainer import EdgeTrainer

    rec, truth = work / "rec", work / "truth"
    work.mkdir(parents=True, exist_ok=True)
    with CloudProcess("--threads", "1", "--record", str(rec)) as cloud:
        config = EdgeConfig(cloud=cloud.target, source=str(source), model=model, split="none", size=size,
                            mode="fedsgd", frames=frames, batch=batch, stream_id=STREAM, truth=str(truth),
                            labels=labels_csv(frames, work / "labels.csv"), progress=False)
        summary = EdgeTrainer(config).run()
    if summary["acked"] * batch < frames:
        raise RuntimeError(f"the cloud acknowledged {summary['acked']} of {frames // batch} updates")
    return rec, truth
