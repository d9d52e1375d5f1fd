"""The saturated-stream benchmark piece: a real cloud records the edge's default fedsgd stream, and its
rows carry each frame's round, gradient norm and scores."""
import pytest

from adversary.runner.run import run_attack
from benchmarks.video_leakage.saturated import frame_rows, record

KEYS = {"setting", "model", "attack", "chain", "local_steps", "batch", "feature_cos", "psnr", "ssim",
        "seconds_per_frame", "gradient_norm", "round"}


@pytest.mark.slow
def test_rows_of_a_recorded_default_stream(tmp_path):
    rec, truth = record(tmp_path, 3)
    metrics = run_attack(str(rec), "idlg-batched", str(tmp_path / "out"), truth=str(truth), device="cpu",
                         iterations=1, options={"restarts": 1}, progress=False)
    rows = frame_rows("idlg-batched", metrics)
    assert [r["round"] for r in rows] == [0, 1, 2] and all(KEYS <= set(r) for r in rows)
    assert all(r["setting"] == "frame" and r["batch"] == 1 and r["psnr"] is not None for r in rows)
    norms = [r["gradient_norm"] for r in rows]
    assert norms[2] < norms[0] / 5, "one label at the edge's lr saturates the model within rounds"
