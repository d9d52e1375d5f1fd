"""Attack chains: a fedsgd stream recorded through a real loopback cloud and edge, inverted gradients ->
features -> frames by one `splitleak attack --chain`, every stage scored; bad chains refused up front."""
import json

import pytest

from adversary.runner.chain_spec import Stage, assign_options, parse_chain
from cloud.server import CloudConfig, CloudServer
from edge.session import EdgeConfig
from edge.trainer import EdgeTrainer
from splitleak.cli.main import main
from splitleak.errors import SplitleakError
from splitleak.recording import RecordingReader
from splitleak.video import frame_name

FRAMES = 2


@pytest.fixture(scope="module")
def fedsgd(tmp_path_factory):
    """lenet at 32 px cut at conv3 (features 12x8x8): two fedsgd updates recorded by a real loopback cloud."""
    folder = tmp_path_factory.mktemp("fedsgd")
    server = CloudServer(CloudConfig(listen="127.0.0.1:0", record=str(folder / "rec")))
    try:
        config = EdgeConfig(cloud=f"127.0.0.1:{server.port}", source="synthetic:40x40", model="lenet", size=32,
                            split="conv3", mode="fedsgd", frames=FRAMES, label=2, truth=str(folder / "truth"),
                            progress=False)
        EdgeTrainer(config).run()
    finally:
        server.stop(1)
    return folder / "rec", folder / "truth"


def test_fvi_then_do_runs_end_to_end_and_scores_both_stages(fedsgd, tmp_path, capsys):
    rec, truth = fedsgd
    out = tmp_path / "chain"
    code = main(["attack", "--recording", str(rec), "--chain", "fvi,do", "--out", str(out), "--truth", str(truth),
                 "--option", "fvi.iterations=20", "--option", "fvi.optimizer=lbfgs", "--option", "do.iterations=3"])
    assert code == 0, capsys.readouterr().err
    chain = json.loads((out / "chain.json").read_text())
    features, frames = chain["stages"]
    assert (features["name"], features["takes"], features["gives"]) == ("fvi", "gradients", "features")
    assert (frames["name"], frames["takes"], frames["gives"]) == ("do", "features", "frames")
    assert -1 <= features["scores"]["mean_feature_cosine"] <= 1 and features["scores"]["mean_feature_rel_error"] >= 0
    assert features["scores"]["frames"] == FRAMES
    assert frames["scores"]["mean_psnr"] > 0 and 0 < frames["scores"]["mean_ssim"] <= 1
    # each stage has its own metrics.json; the hand-over is a real recording of the recovered features
    fvi_metrics = json.loads((out / "1-fvi" / "metrics.json").read_text())
    assert fvi_metrics["summary"]["mean_feature_cosine"] == pytest.approx(features["scores"]["mean_feature_cosine"])
    handed = list(RecordingReader(out / features["recording"]))
    assert [(it.kind, it.meta["seq"], it.tensors["features"].shape) for it in handed] == \
        [("frame", i, (1, 12, 8, 8)) for i in range(FRAMES)]
    do_metrics = json.loads((out / "2-do" / "metrics.json").read_text())
    assert [r["seq"] for r in do_metrics["frames"]] == list(range(FRAMES))
    assert all((out / "2-do" / frame_name("edge0", i)).is_file() for i in range(FRAMES))


@pytest.mark.parametrize("chain,reason", [
    ("fvi,nope", "chain stage 2 'nope': unknown attack"),
    ("do,fvi", "chain stage 1 'do' takes features, but the recording (it holds gradients) gives gradients"),
    ("enhance:bicubic,fvi", "chain stage 1 'enhance:bicubic' takes frames, but the recording"),
    ("fvi,enhance:bicubic", "chain stage 2 'enhance:bicubic' takes frames, but stage 1 'fvi' gives features"),
    ("fvi,dmb", "chain stage 'dmb' needs a diffusion prior"),
])
def test_bad_chains_are_one_line_errors_before_anything_runs(fedsgd, tmp_path, capsys, chain, reason):
    rec, _ = fedsgd
    out = tmp_path / "never"
    assert main(["attack", "--recording", str(rec), "--chain", chain, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and reason in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("argv,reason", [
    (["--option", "iterations=3"], "prefix the option with its stage"),
    (["--option", "dmb.iterations=3"], "no stage 'dmb' in the chain"),
    (["--option", "fvi.nonsense=3"], "chain stage 1 'fvi'"),
    (["--iterations", "3"], "--iterations is per stage in a chain"),
    (["--attack", "fvi"], "not allowed with argument"),
])
def test_bad_chain_options_are_one_line_errors(fedsgd, tmp_path, capsys, argv, reason):
    rec, _ = fedsgd
    out = tmp_path / "never"
    assert exit_code(["attack", "--recording", str(rec), "--chain", "fvi,do", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and reason in err[0], err
    assert not out.exists()


def exit_code(argv):
    """main's return code, or the code argparse exits with on a bad argument."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def test_chain_config_and_options_reach_their_stages(tmp_path):
    stages = parse_chain("fvi,dmb-multi,enhance:refs")
    assert [s.family for s in stages] == ["gradient", "feature", "enhance"]
    config = {"fvi": {"preset": "paper", "stagnation": {"check_every": 10}}, "dmb-multi": None}
    assign_options(stages, [("fvi.iterations", "50"), ("dmb-multi.preset", "best")], config)
    assert stages[0].options == {"stagnation.check_every": 10, "iterations": "50"} and stages[0].preset == "paper"
    assert stages[1].preset == "best"
    with pytest.raises(SplitleakError, match="takes no options"):
        assign_options(stages, [("enhance.scale", "2")], None)
    assert Stage("enhance:refs", "enhance", method="refs").folder_name == "enhance-refs"


def test_recordings_keep_zero_dim_tensors_zero_dim(tmp_path):
    """A BatchNorm tail's state has 0-d counters (num_batches_tracked): its replay needs them 0-d."""
    import numpy as np

    from splitleak.recording import RecordingWriter

    with RecordingWriter(tmp_path / "rec") as writer:
        writer.append("state", {"round": 0}, {"bn.num_batches_tracked": np.array(3), "w": np.ones((2, 3)).T})
    (item,) = RecordingReader(tmp_path / "rec")
    assert item.tensors["bn.num_batches_tracked"].shape == () and item.tensors["w"].shape == (3, 2)


def test_fvi_then_dmb_multi_gets_the_stream_in_order(fedsgd, tmp_path, capsys):
    from adversary.priors import make_tiny_prior, save_prior

    rec, truth = fedsgd
    prior = save_prior(make_tiny_prior(32, latent=True), tmp_path / "prior")
    out = tmp_path / "chain"
    code = main(["attack", "--recording", str(rec), "--chain", "fvi,dmb-multi", "--out", str(out), "--truth",
                 str(truth), "--prior", str(prior), "--option", "fvi.iterations=2", "--option",
                 "dmb-multi.iterations=2", "--option", "dmb-multi.sampler.steps=1", "--option",
                 "dmb-multi.pixel.steps=0"])
    assert code == 0, capsys.readouterr().err
    chain = json.loads((out / "chain.json").read_text())
    assert [s["folder"] for s in chain["stages"]] == ["1-fvi", "2-dmb-multi"]
    assert chain["stages"][1]["scores"]["frames"] == FRAMES
    # the hand-over holds the stream's frames in order: dmb-multi ties them into one group
    from adversary.feature.groups import consecutive_groups

    keys = [(it.meta["stream_id"], it.meta["seq"]) for it in RecordingReader(out / "1-fvi" / "recording")]
    assert keys == [("edge0", i) for i in range(FRAMES)]
    assert consecutive_groups(keys, window=8) == [list(range(FRAMES))]
    assert all((out / "2-dmb-multi" / frame_name("edge0", i)).is_file() for i in range(FRAMES))
