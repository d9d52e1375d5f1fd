"""The runner: tensors are read only when asked for, --max-frames stops reading, one make_attack."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from adversary.runner.attacks import make_attack
from adversary.runner.meta import item_meta
from adversary.runner.run import run_attack
from splitleak import learning
from splitleak.errors import SplitleakError
from splitleak.models import build_split_model
from splitleak.recording import RecordingReader, RecordingWriter

SIZE = 32


def frame_meta(model, seq: int) -> dict:
    return {"stream_id": "cam0", "seq": str(seq), "capture_ts": 0.0, "model_id": model.name,
            "split_point": model.split, "weights": model.weights, "input_size": model.size,
            "num_classes": model.num_classes, "codec": {"name": "fp32"}}


def break_last_line(folder: Path) -> None:
    """Make the last item's meta a list: reading that line is an error."""
    manifest = folder / "items.jsonl"
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    lines[-1]["meta"] = ["not", "an", "object"]
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_tensors_are_read_only_when_asked_for(tmp_path: Path) -> None:
    with RecordingWriter(tmp_path / "r", {}) as writer:
        for i in range(3):
            writer.append("frame", {"seq": i}, {"features": np.full((1, 3), i, np.float32)})
    items = RecordingReader(tmp_path / "r").items()
    assert [it.shapes for it in items] == [{"features": (1, 3)}] * 3  # from the files' headers
    first = items[0].tensors["features"]
    for path in (tmp_path / "r" / "tensors").iterdir():
        path.unlink()
    assert np.array_equal(first, np.zeros((1, 3), np.float32))  # read before the files went
    with pytest.raises(SplitleakError, match="item 2: cannot read its tensors"):
        items[2].tensors


def test_max_frames_stops_reading_the_recording(tmp_path: Path) -> None:
    model = build_split_model("lenet", "conv1", size=SIZE)
    with RecordingWriter(tmp_path / "rec", {}) as writer:
        for seq in range(3):
            with torch.no_grad():
                z = model.head(torch.rand(1, 3, SIZE, SIZE)).numpy()
            writer.append("frame", frame_meta(model, seq), {"features": z})
    break_last_line(tmp_path / "rec")
    with pytest.raises(SplitleakError, match="line 3: meta must be an object"):
        run_attack(str(tmp_path / "rec"), "do", str(tmp_path / "all"), iterations=1, progress=False)
    m = run_attack(str(tmp_path / "rec"), "do", str(tmp_path / "two"), iterations=1, progress=False, max_frames=2)
    assert [(f["stream"], f["seq"]) for f in m["frames"]] == [("cam0", 0), ("cam0", 1)]
    assert m["config"]["stopped_at_max_frames"] and m["config"]["recording_broken"] is None


def test_max_frames_stops_reading_updates(tmp_path: Path) -> None:
    model = build_split_model("lenet", "none", size=SIZE)
    x, y = torch.rand(1, 3, SIZE, SIZE), torch.tensor([3])
    grads = {k: v.numpy() for k, v in learning.gradients(model.tail, x, y).items()}
    meta = {"frame": frame_meta(model, 0), "mode": "fedsgd", "round": 0, "batch_size": 1, "learning_rate": 0.1,
            "local_steps": 1, "param_names": list(grads), "codec": {"name": "fp32"}}
    with RecordingWriter(tmp_path / "rec", {}) as writer:
        for seq in range(2):
            writer.append("update", {**meta, "frame": frame_meta(model, seq)}, grads)
    break_last_line(tmp_path / "rec")
    m = run_attack(str(tmp_path / "rec"), "idlg", str(tmp_path / "out"), iterations=1, progress=False, max_frames=1,
                   options={"restarts": 1})
    assert [(f["stream"], f["seq"], f["label"]) for f in m["frames"]] == [("cam0", 0, 3)]
    assert m["config"]["stopped_at_max_frames"]


def test_one_make_attack_serves_both_families() -> None:
    assert make_attack("do", 3).family == "feature" and make_attack("do", 3).config.iterations == 3
    assert make_attack("dlg", None, {"restarts": 2}).family == "gradient"
    with pytest.raises(SplitleakError, match="unknown option 'bogus'"):
        make_attack("dlg", None, {"bogus": 1})
    with pytest.raises(SplitleakError, match="iterations must be a positive integer"):
        make_attack("do", 0)


def test_item_meta_resolves_defaults_and_wire_strings(tmp_path: Path) -> None:
    """0 (the proto's unset) means the model's default size and classes; uint64 comes as a string."""
    with RecordingWriter(tmp_path / "r", {}) as writer:
        writer.append("frame", {"stream_id": "cam 0", "seq": "18446744073709551615", "model_id": "lenet",
                                "split_point": "conv1", "input_size": 0, "num_classes": 0},
                      {"features": np.zeros((1, 2), np.float32)})
    meta = item_meta(RecordingReader(tmp_path / "r").items()[0])
    assert (meta.stream, meta.seq, meta.head.size, meta.head.num_classes, meta.head.weights) == \
        ("cam_0", 2**64 - 1, 32, 10, "seed:0")
