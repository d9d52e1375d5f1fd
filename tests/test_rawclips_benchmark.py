"""The raw-clip benchmark piece: a held-out bikes clip trained end to end (split none) through a real
cloud, attacked with and without the temporal prior; its rows carry per-frame scores."""
import pytest

from benchmarks.video_leakage import rawclips

KEYS = {"setting", "model", "attack", "chain", "local_steps", "batch", "feature_cos", "psnr", "ssim",
        "seconds_per_frame", "psnr_frames", "order_kept", "psnr_mean_frame", "prior"}


@pytest.mark.slow
def test_rows_with_and_without_the_prior(monkeypatch, one_thread):
    monkeypatch.setattr(rawclips, "plan", lambda quick: [("frameavg", 2)])
    rows = rawclips.rows(True)
    assert [r["prior"] for r in rows] == ["none", "time 0.1"] and all(KEYS <= set(r) for r in rows)
    assert [r["attack"] for r in rows] == ["ig:lambda_time=0", "ig:lambda_time=0.1"]
    assert all(r["setting"] == "clip-raw" and len(r["psnr_frames"]) == 8 for r in rows)
    assert rows[0]["options"]["lambda_time"] == 0.0 and "lambda_time" not in rows[1]["options"]
    assert rows[0]["psnr_mean_frame"] > 25  # held-out bikes frames barely move over 8 frames at 16 px
