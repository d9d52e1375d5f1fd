"""The FedAvg benchmark's plan and one row made end to end: held-out footage streamed by a real edge in
fedavg mode to a `splitleak cloud` process, the recording attacked through `run_attack`."""
import math

import pytest

from benchmarks.video_leakage import fedavg

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_full_plan_covers_steps_batches_and_attacks():
    cells = fedavg.plan(quick=False)
    assert {(c.local_steps, c.batch) for c in cells} == {(e, b) for e in (1, 2, 5, 10) for b in (1, 4)}
    assert {c.attack for c in cells if c.batch == 1} == {"idlg-batched", "idlg", "ig"}
    # the batched engine takes batch-1 updates only; batch 4 goes to the joint attacks, whole updates
    assert {c.attack for c in cells if c.batch == 4} == {"idlg", "ig"}
    assert {c.frames for c in cells if c.batch == 4} == {8}
    assert all(c.iterations is None and c.options == () for c in cells)  # the CLI's defaults
    quick = fedavg.plan(quick=True)
    assert [(c.attack, c.local_steps, c.batch, c.frames) for c in quick] == [("idlg-batched", 1, 1, 3),
                                                                           ("idlg-batched", 2, 1, 3)]


def test_a_row_from_a_recorded_two_step_stream(tmp_path):
    source, first = fedavg.write_source(tmp_path / "source", 1)
    rec, truth = fedavg.record(source, tmp_path / "e2", local_steps=2, batch=1, frames=1)
    cell = fedavg.Cell("idlg-batched", 2, 1, 1, iterations=1, options=(("restarts", 1),))
    row = fedavg.attack_row(cell, rec, truth, tmp_path / "out", first, "one")
    contract = {"setting", "model", "attack", "chain", "local_steps", "batch", "feature_cos", "psnr", "ssim",
                "seconds_per_frame", "success"}
    assert contract <= set(row)
    assert (row["setting"], row["model"], row["local_steps"], row["batch"], row["chain"], row["feature_cos"]) == (
        "fedavg", "lenet", 2, 1, None, None)
    assert row["frames"] == 1 and row["lr"] == 0.01 and len(row["update_norms"]) == 1 and row["update_norms"][0] > 0
    assert math.isfinite(row["psnr"]) and 0 <= row["success"] <= 1 and row["seconds_per_frame"] > 0
