"""A recording is input from outside: every crafted one fails `splitleak attack` in one line, exit 2.

Each case starts from a valid recording (two lenet/conv1 frames, or one FedSGD update with its
round's state) and breaks one thing. No case may build a model, read a file outside the folder,
or end in a traceback.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from safetensors.numpy import save_file

import adversary.runner.heads as heads
from splitleak.cli.main import main
from splitleak.models import feature_shape
from splitleak.recording import RecordingWriter

SIZE = 32
RAW = "@@raw@@"  # stands for a JSON literal json.dumps cannot write (1e999, NaN)
Lines = list[dict]


def frame_meta(seq: int) -> dict:
    return {"stream_id": "cam0", "seq": str(seq), "capture_ts": 0.0, "model_id": "lenet", "split_point": "conv1",
            "weights": "seed:0", "input_size": SIZE, "num_classes": 10, "codec": {"name": "fp32"}}


def features() -> np.ndarray:
    return np.zeros((1, *feature_shape("lenet", "conv1", size=SIZE)), np.float32)


def frames_recording(folder: Path) -> None:
    with RecordingWriter(folder, {}) as writer:
        for seq in range(2):
            writer.append("frame", frame_meta(seq), {"features": features()})


def clip_frames_recording(folder: Path) -> None:
    """One clip's features, as a chain's hand-over writes them (clipnet/pool, the clip's length)."""
    meta = {**frame_meta(0), "model_id": "clipnet", "split_point": "pool", "clip_len": 20}
    with RecordingWriter(folder, {}) as writer:
        writer.append("frame", meta, {"features": np.zeros((1, *feature_shape("clipnet", "pool", size=SIZE)),
                                                           np.float32)})


def update_recording(folder: Path) -> None:
    meta = {"frame": {**frame_meta(0), "split_point": "none"}, "mode": "fedsgd", "round": 0, "batch_size": 1,
            "learning_rate": 0.1, "local_steps": 1, "param_names": ["classifier.weight"], "codec": {"name": "fp32"}}
    with RecordingWriter(folder, {}) as writer:
        writer.append("update", meta, {"classifier.weight": np.zeros((10, 768), np.float32)})


def edit(fn: Callable[[Lines], None], raw: str | None = None) -> Callable[[Path], None]:
    """Rewrite items.jsonl with fn applied to its entries; RAW values become the literal `raw`."""
    def apply(folder: Path) -> None:
        manifest = folder / "items.jsonl"
        lines = [json.loads(line) for line in manifest.read_text().splitlines()]
        fn(lines)
        text = "".join(json.dumps(line) + "\n" for line in lines)
        manifest.write_text(text.replace(json.dumps(RAW), raw) if raw is not None else text)
    return apply


def meta(key: str, value, raw: str | None = None, where: str = "") -> Callable[[Path], None]:
    """Set meta[key] (meta["frame"][key] with where="frame") of the first item."""
    def fn(lines: Lines) -> None:
        target = lines[0]["meta"][where] if where else lines[0]["meta"]
        target[key] = value
    return edit(fn, raw)


def header(text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / "recording.json").write_text(text)


def entry(key: str, value) -> Callable[[Path], None]:
    return edit(lambda lines: lines[0].__setitem__(key, value))


def outside_file(absolute: bool) -> Callable[[Path], None]:
    """Point the first item at a valid tensor file next to (not inside) the recording."""
    def apply(folder: Path) -> None:
        save_file({"features": features()}, str(folder.parent / "outside.safetensors"))
        name = str(folder.parent / "outside.safetensors") if absolute else "../outside.safetensors"
        entry("file", name)(folder)
    return apply


def symlinked_file(folder: Path) -> None:
    save_file({"features": features()}, str(folder.parent / "outside.safetensors"))
    link = folder / "tensors" / "link.safetensors"
    link.symlink_to(folder.parent / "outside.safetensors")
    entry("file", "tensors/link.safetensors")(folder)


def long_line(folder: Path) -> None:
    meta("capture_note", "x" * (1 << 20))(folder)


CASES = [
    ("header_is_a_list", frames_recording, header("[]"), "do", "corrupt"),
    ("header_is_a_string", frames_recording, header('"splitleak"'), "do", "corrupt"),
    ("header_config_is_a_list", frames_recording,
     header('{"format": "splitleak-recording/1", "config": []}'), "do", "corrupt"),
    ("line_is_a_list", frames_recording, edit(lambda lines: lines.__setitem__(0, [1, 2])), "do", "expected an object"),
    ("meta_is_a_list", frames_recording, entry("meta", ["model_id", "lenet"]), "do", "meta must be an object"),
    ("file_absolute", frames_recording, outside_file(absolute=True), "do", "tensor file"),
    ("file_dotdot", frames_recording, outside_file(absolute=False), "do", "outside the recording"),
    ("file_symlink_out", frames_recording, symlinked_file, "do", "outside the recording"),
    ("file_not_a_string", frames_recording, entry("file", 7), "do", "bad tensor file"),
    ("duplicate_index", frames_recording, edit(lambda lines: lines[1].__setitem__("index", 0)), "do", "repeats"),
    ("index_is_bool", frames_recording, entry("index", True), "do", "bad index"),
    ("index_negative", frames_recording, entry("index", -1), "do", "bad index"),
    ("kind_unknown", frames_recording, entry("kind", "weird"), "do", "unknown kind"),
    ("line_too_long", frames_recording, long_line, "do", "longer than"),
    ("input_size_1e999", frames_recording, meta("input_size", RAW, "1e999"), "do", "bad input_size"),
    ("input_size_nan", frames_recording, meta("input_size", RAW, "NaN"), "do", "bad input_size"),
    ("input_size_huge", frames_recording, meta("input_size", 1 << 20), "do", "bad input_size"),
    ("input_size_negative", frames_recording, meta("input_size", -32), "do", "bad input_size"),
    ("input_size_bool", frames_recording, meta("input_size", True), "do", "bad input_size"),
    ("input_size_fraction", frames_recording, meta("input_size", 32.5), "do", "bad input_size"),
    ("num_classes_1e9", frames_recording, meta("num_classes", 10**9), "do", "bad num_classes"),
    ("num_classes_float", frames_recording, meta("num_classes", RAW, "1e9"), "do", "bad num_classes"),
    ("seq_huge", frames_recording, meta("seq", str(2**70)), "do", "bad seq"),
    ("seq_negative", frames_recording, meta("seq", -1), "do", "bad seq"),
    ("seq_words", frames_recording, meta("seq", "twelve"), "do", "bad seq"),
    ("stream_empty", frames_recording, meta("stream_id", ""), "do", "empty stream id"),
    ("stream_huge", frames_recording, meta("stream_id", "s" * 10_000), "do", "bad stream_id"),
    ("model_unknown", frames_recording, meta("model_id", "alexnet"), "do", "unknown model"),
    ("model_is_a_list", frames_recording, meta("model_id", ["lenet"]), "do", "bad model_id"),
    ("clips_to_an_image_attack", clip_frames_recording, lambda folder: None, "db",
     "clipnet takes clips: only 'do' inverts clip features"),
    ("clip_len_not_the_heads", clip_frames_recording, meta("clip_len", 10), "do", "bad clip_len 10"),
    ("clip_len_huge", clip_frames_recording, meta("clip_len", 10**9), "do", "bad clip_len"),
    ("split_unknown", frames_recording, meta("split_point", "layer9"), "do", "unknown split point"),
    ("weights_url", frames_recording, meta("weights", "https://example.com/w.pt"), "do", "bad weights tag"),
    ("weights_seed_huge", frames_recording, meta("weights", "seed:99999999999999999999"), "do", "bad weights tag"),
    ("codec_is_a_list", frames_recording, meta("codec", ["fp32"]), "do", "codec must be an object"),
    ("features_wrong_shape", frames_recording,
     lambda folder: save_file({"features": np.zeros((1, 5), np.float32)}, str(folder / "tensors/00000000.safetensors")),
     "do", "do not fit"),
    ("update_frame_is_a_list", update_recording, meta("frame", [0]), "dlg", "frame must be an object"),
    ("update_batch_zero", update_recording, meta("batch_size", 0), "dlg", "bad batch_size 0"),
    ("update_batch_huge", update_recording, meta("batch_size", 10**6), "dlg", "bad batch_size"),
    ("update_round_nan", update_recording, meta("round", RAW, "NaN"), "dlg", "bad round"),
    ("update_lr_nan", update_recording, meta("learning_rate", "NaN"), "dlg", "bad learning_rate"),
    ("update_param_names_string", update_recording, meta("param_names", "classifier.weight"), "dlg",
     "bad param_names"),
    ("update_input_size_1e999", update_recording, meta("input_size", RAW, "1e999", where="frame"), "dlg",
     "bad input_size"),
    ("update_num_classes_1e9", update_recording, meta("num_classes", 10**9, where="frame"), "dlg",
     "bad num_classes"),
]


@pytest.fixture(autouse=True)
def no_model_builds(monkeypatch):
    """A crafted recording must be refused before any model is built."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was built for a bad recording")
    monkeypatch.setattr(heads, "build_split_model", refuse)


@pytest.mark.parametrize("make,tamper,attack,reason", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_crafted_recording_fails_in_one_line(tmp_path, capsys, make, tamper, attack, reason):
    rec = tmp_path / "rec"
    make(rec)
    tamper(rec)
    code = main(["attack", "--recording", str(rec), "--attack", attack, "--out", str(tmp_path / "out"),
                 "--iterations", "1", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("splitleak attack: error: ") and reason in err, err
    assert not (tmp_path / "out").exists()


def test_the_untouched_recordings_pass_the_checks(tmp_path, capsys):
    """The cases' starting points are valid: they fail only where the model would be built."""
    for make, attack in ((frames_recording, "do"), (update_recording, "dlg"), (clip_frames_recording, "do")):
        rec, out = tmp_path / make.__name__, tmp_path / f"out-{make.__name__}"
        make(rec)
        with pytest.raises(AssertionError, match="a model was built"):
            main(["attack", "--recording", str(rec), "--attack", attack, "--out", str(out),
                  "--iterations", "1", "--device", "cpu"])
