"""`splitleak attack --attack dlg-batched|idlg-batched`: every batch-1 update of a recording goes to the
batched engine in one optimisation, each frame with its own round's weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import adversary.gradient  # noqa: F401  (registers the attacks)
from adversary.gradient import GradientCase
from adversary.gradient.batched import BatchedGradientCase, BatchedLbfgsAttack
from adversary.registry import get_attack
from adversary.runner.run import run_attack
from splitleak import learning
from splitleak.models import build_split_model
from splitleak.recording import RecordingWriter
from splitleak.video import frame_name, save_png

SIZE = 8
ROUNDS = (1, 2, 2)  # three updates: the first in round 1, two in round 2


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny problems: a second intra-op thread only adds contention on a shared machine."""


def meta(model, seq: int, round_: int, names: list[str]) -> dict:
    frame = {"stream_id": "cam0", "seq": str(seq), "capture_ts": 0.0, "model_id": model.name,
             "split_point": "none", "weights": model.weights, "input_size": SIZE, "num_classes": 10}
    return {"frame": frame, "mode": "fedsgd", "round": round_, "batch_size": 1, "learning_rate": 0.1,
            "local_steps": 1, "param_names": names, "codec": {"name": "fp32"}}


def record(tmp: Path) -> tuple[Path, Path, list[GradientCase]]:
    """A recording with two round states (weights seed:1, seed:2) and three updates; the cases the
    sequential attack would get, one per update."""
    model = build_split_model("lenet", "none", size=SIZE)
    torch.manual_seed(0)
    x, labels = torch.rand(3, 3, SIZE, SIZE), [2, 5, 7]
    rec, truth = tmp / "rec", tmp / "truth"
    tails = {r: build_split_model("lenet", "none", size=SIZE, weights=f"seed:{r}").tail for r in set(ROUNDS)}
    cases = []
    with RecordingWriter(rec, {}) as writer:
        for i, r in enumerate(ROUNDS):
            if i == 0 or ROUNDS[i - 1] != r:
                state = {"round": r, "model_id": "lenet", "split_point": "none", "weights": "seed:0",
                         "input_size": SIZE, "num_classes": 10}
                writer.append("state", state, {k: v.numpy() for k, v in learning.state(tails[r]).items()})
            y = torch.tensor(labels[i:i + 1])
            grads = learning.gradients(tails[r], x[i:i + 1], y)
            writer.append("update", meta(model, 10 + i, r, list(grads)),
                          {**{k: v.numpy() for k, v in grads.items()}, "labels": np.asarray(labels[i:i + 1])})
            save_png(truth / frame_name("cam0", 10 + i), x[i].numpy())
            cases.append(GradientCase(tails[r], grads, 1, (3, SIZE, SIZE), 10, y, seed=0))
    return rec, truth, cases


@pytest.mark.parametrize("name", ["idlg-batched", "dlg-batched"])
def test_every_update_goes_to_the_batched_engine_in_one_call(tmp_path, monkeypatch, name):
    rec, truth, cases = record(tmp_path)
    calls: list[BatchedGradientCase] = []
    reconstruct = BatchedLbfgsAttack.reconstruct

    def spy(self, case):
        calls.append(case)
        return reconstruct(self, case)

    monkeypatch.setattr(BatchedLbfgsAttack, "reconstruct", spy)
    options = {"restarts": 1, "check_every": 4}
    metrics = run_attack(str(rec), name, str(tmp_path / "out"), truth=str(truth), iterations=1, progress=False,
                         options=options)
    assert len(calls) == 1 and calls[0].frames == 3 and calls[0].frame_params is not None
    assert [r["seq"] for r in metrics["frames"]] == [10, 11, 12] and metrics["summary"]["updates"] == 3
    # each frame was matched against its own round's weights: its loss is the one the attack reaches
    # on that update alone (seed + item index, as the runner seeds it)
    indices = [1, 3, 4]  # item index of each update in the recording
    monkeypatch.setattr(BatchedLbfgsAttack, "reconstruct", reconstruct)
    for row, case, index in zip(metrics["frames"], cases, indices):
        case.seed = index
        alone = get_attack(name)(iterations=1, **options).reconstruct(case)
        assert row["gradient_loss"] == pytest.approx(float(alone.loss[0]), rel=1e-2, abs=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.gpu
@pytest.mark.parametrize("name", ["dlg", "idlg", "dlg-batched", "idlg-batched", "ig"])
def test_gradient_attacks_run_on_cuda(tmp_path, name):
    rec, truth, _ = record(tmp_path)
    metrics = run_attack(str(rec), name, str(tmp_path / "out"), truth=str(truth), iterations=1, progress=False,
                         device="cuda", options={"restarts": 1})
    assert metrics["summary"]["frames"] == 3 and all(r["psnr"] is not None for r in metrics["frames"])
