"""Chains over a clip model's features: clipnet's fedsgd stream recorded through a real loopback cloud,
`fvi` recovers each clip's feature matrix, `do` inverts it through the frozen 3D head into the clip's
frames, one PNG per frame, scored per frame; the other feature attacks are refused in one line."""
import json
import math

import pytest

from cloud.server import CloudConfig, CloudServer
from edge.session import EdgeConfig
from edge.trainer import EdgeTrainer
from splitleak.cli.main import main
from splitleak.models import get_spec
from splitleak.recording import RecordingReader
from splitleak.video import frame_name

T = get_spec("clipnet").clip_len  # the edge trains on clips of the spec's length (20: 10 segments of 2)
FVI = ["--option", "fvi.preset=clip", "--option", "fvi.restarts=1", "--option", "fvi.iterations=20"]


def record_fedsgd(folder, model, split, frames):
    """One fedsgd update of one clip at 16 px, label 2, recorded by a real loopback cloud: (recording, truth)."""
    server = CloudServer(CloudConfig(listen="127.0.0.1:0", record=str(folder / "rec")))
    try:
        config = EdgeConfig(cloud=f"127.0.0.1:{server.port}", source="synthetic:40x40", model=model, size=16,
                            split=split, mode="fedsgd", frames=frames, label=2, lr=0.01,
                            truth=str(folder / "truth"), progress=False)
        EdgeTrainer(config).run()
    finally:
        server.stop(1)
    return folder / "rec", folder / "truth"


@pytest.fixture(scope="module")
def clip_fedsgd(tmp_path_factory):
    """clipnet cut at pool ((1, 10, 64) per clip)."""
    return record_fedsgd(tmp_path_factory.mktemp("clipchain"), "clipnet", "pool", T)


def test_fvi_then_do_inverts_the_clip_frame_by_frame(clip_fedsgd, tmp_path, capsys, one_thread):
    rec, truth = clip_fedsgd
    out = tmp_path / "chain"
    code = main(["attack", "--recording", str(rec), "--chain", "fvi,do", "--out", str(out), "--truth", str(truth),
                 *FVI, "--option", "do.iterations=3"])
    assert code == 0, capsys.readouterr().err
    features, frames = json.loads((out / "chain.json").read_text())["stages"]
    assert features["scores"]["frames"] == 1 and -1 <= features["scores"]["mean_feature_cosine"] <= 1
    # the hand-over is one item per clip, named by its first frame, with the clip's length
    (item,) = RecordingReader(out / features["recording"])
    assert (item.meta["seq"], item.meta["clip_len"], item.tensors["features"].shape) == (0, T, (1, 1, 10, 64))
    # do wrote each of the clip's frames as its own PNG, scored against its own truth frame
    assert frames["scores"]["frames"] == T and math.isfinite(frames["scores"]["mean_psnr"])
    rows = json.loads((out / "2-do" / "metrics.json").read_text())["frames"]
    assert [r["seq"] for r in rows] == list(range(T))
    assert all(math.isfinite(r["psnr"]) for r in rows)
    assert len({r["feature_loss"] for r in rows}) == 1  # one loss: the clip's
    assert all((out / "2-do" / frame_name("edge0", t)).is_file() for t in range(T))


@pytest.mark.parametrize("chain", ["fvi,dmb", "fvi,db"])
def test_image_only_feature_attacks_refuse_clip_features_up_front(clip_fedsgd, tmp_path, capsys, chain):
    rec, truth = clip_fedsgd
    code = main(["attack", "--recording", str(rec), "--chain", chain, "--out", str(tmp_path / "out"),
                 "--truth", str(truth)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "clipnet takes clips: only 'do' inverts clip features" in err
    assert not (tmp_path / "out").exists()  # refused before any stage ran


def test_frameavg_clip_features_invert_too(tmp_path, capsys, one_thread):
    """frameavg at `mean` (the mean of per-frame 2D features): the same chain, one PNG per frame of its clip."""
    frames = get_spec("frameavg").clip_len
    rec, truth = record_fedsgd(tmp_path, "frameavg", "mean", frames)
    out = tmp_path / "chain"
    code = main(["attack", "--recording", str(rec), "--chain", "fvi,do", "--out", str(out), "--truth", str(truth),
                 "--option", "fvi.optimizer=lbfgs", "--option", "fvi.iterations=20", "--option", "do.iterations=2"])
    assert code == 0, capsys.readouterr().err
    _, inverted = json.loads((out / "chain.json").read_text())["stages"]
    assert inverted["scores"]["frames"] == frames and math.isfinite(inverted["scores"]["mean_psnr"])
    assert sorted(p.name for p in (out / "2-do").glob("edge0_*.png")) == [frame_name("edge0", t) for t in range(frames)]
