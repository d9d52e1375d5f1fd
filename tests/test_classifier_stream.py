"""A classifier over a frozen extractor's features (the video paper's Table II), streamed end to end:
`splitleak edge --classifier` -> FrameMeta.classifier -> the cloud builds the same model -> the
recording -> the attack rebuilds it, and a chain recovers the features the classifier trained on."""
import json

import numpy as np
import pytest

from cloud.server import CloudConfig, CloudServer
from splitleak.cli.main import main
from splitleak.errors import SplitleakError
from splitleak.models import CLASSIFIERS, build_split_model, feature_shape
from splitleak.models.classifiers import classifier_params
from splitleak.recording import RecordingReader, RecordingWriter
from wire_helpers import INFER, INVALID, call, frame

FRAMES = 2
EDGE = ["--source", "synthetic:40x40", "--model", "lenet", "--size", "32", "--split", "conv3", "--quiet"]


def record(folder, *argv):
    """Run `splitleak edge ARGV` against a real loopback cloud recording into folder/rec."""
    server = CloudServer(CloudConfig(listen="127.0.0.1:0", record=str(folder / "rec")))
    try:
        code = main(["edge", "--cloud", f"127.0.0.1:{server.port}", *EDGE, "--frames", str(FRAMES), *argv])
    finally:
        server.stop(1)
    assert code == 0
    return list(RecordingReader(folder / "rec"))


@pytest.fixture(scope="module")
def moderate(tmp_path_factory):
    """Two fedsgd updates of the moderate classifier over lenet's frozen conv3 features (12x8x8)."""
    folder = tmp_path_factory.mktemp("moderate")
    items = record(folder, "--mode", "fedsgd", "--label", "2", "--classifier", "moderate",
                   "--truth", str(folder / "truth"))
    return folder, items


def test_updates_and_states_name_the_classifier_and_cover_it_alone(moderate):
    _, items = moderate
    updates = [it for it in items if it.kind == "update"]
    states = [it for it in items if it.kind == "state"]
    assert len(updates) == FRAMES and states
    assert {u.meta["frame"]["classifier"] for u in updates} == {"moderate"}
    assert {s.meta["classifier"] for s in states} == {"moderate"}
    # the gradient covers the classifier (Linear 768->256, 256->128, 128->10), never the frozen head
    names = updates[0].meta["param_names"]
    assert names and all(n.startswith("classifier.") for n in names)
    assert updates[0].tensors["classifier.1.weight"].shape == (256, 12 * 8 * 8)


@pytest.mark.parametrize("attack,options", [("rgap", []),
                                            ("fvi", ["--option", "fvi.optimizer=lbfgs",
                                                     "--option", "fvi.iterations=20"])])
def test_a_chain_recovers_the_classifiers_features_and_inverts_them(moderate, tmp_path, capsys, attack, options):
    folder, _ = moderate
    out = tmp_path / "chain"
    code = main(["attack", "--recording", str(folder / "rec"), "--chain", f"{attack},do", "--out", str(out),
                 "--truth", str(folder / "truth"), "--option", "do.iterations=2", *options])
    assert code == 0, capsys.readouterr().err
    features, frames = json.loads((out / "chain.json").read_text())["stages"]
    assert features["scores"]["frames"] == FRAMES
    assert features["scores"]["mean_feature_cosine"] > 0.999
    assert features["scores"]["mean_feature_rel_error"] < 0.05
    assert frames["scores"]["frames"] == FRAMES and frames["scores"]["mean_psnr"] > 0
    handed = list(RecordingReader(out / features["recording"]))
    assert {it.meta["classifier"] for it in handed} == {"moderate"}
    config = json.loads((out / f"1-{attack}" / "config.json").read_text())
    assert [m["classifier"] for m in config["models"]] == ["moderate"]


def test_inference_through_a_classifier_is_answered_and_recorded(tmp_path):
    items = record(tmp_path, "--classifier", "simple")
    assert [(it.kind, it.meta["classifier"]) for it in items] == [("frame", "simple")] * FRAMES


@pytest.mark.parametrize("argv,reason", [
    (["--classifier", "nope"], "invalid choice: 'nope'"),
    (["--classifier", "simple", "--split", "none"], "needs a split point"),
])
def test_bad_classifiers_at_the_edge_are_refused_before_streaming(capsys, argv, reason):
    try:
        code = main(["edge", "--cloud", "127.0.0.1:1", *EDGE, *argv])
    except SystemExit as stop:
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert reason in err[-1], err


def test_the_operator_bounds_the_classifiers_size(start_cloud):
    shape = feature_shape("lenet", "conv2", size=32)
    cloud = start_cloud(max_classifier_params=classifier_params("simple", shape, 10))
    answers = call(cloud.port, INFER, [frame(1, classifier="moderate"), frame(2, classifier="simple")])
    assert answers[0].error.code == INVALID and "more than the" in answers[0].error.message
    assert answers[1].HasField("prediction")


def test_the_cloud_refuses_bad_or_oversized_classifiers_and_builds_a_good_one(start_cloud):
    cloud = start_cloud()
    bad = [frame(1, classifier="nope"), frame(2, classifier="simple", split_point="none"),
           # resnet18/layer1 at 512 px: 1M features x 1000 classes, far above the parameter bound
           frame(3, classifier="simple", model_id="resnet18", split_point="layer1", input_size=512)]
    answers = call(cloud.port, INFER, bad + [frame(4, classifier="moderate")])
    assert [a.error.code for a in answers[:-1]] == [INVALID] * len(bad)
    assert "unknown classifier" in answers[0].error.message
    assert "needs a split point" in answers[1].error.message
    assert "parameters, more than" in answers[2].error.message
    assert answers[-1].HasField("prediction")
    (key,) = cloud.inference.tails._tails._futures
    assert key.classifier == "moderate"


def test_a_recordings_classifier_is_checked(tmp_path):
    from adversary.runner.meta import item_meta

    base = {"stream_id": "s", "seq": 0, "model_id": "lenet", "split_point": "conv3", "input_size": 32}
    with RecordingWriter(tmp_path / "r", {}) as writer:
        for classifier in ("moderate", "nope"):
            writer.append("frame", {**base, "classifier": classifier}, {"features": np.zeros((1, 2), np.float32)})
    good, bad = RecordingReader(tmp_path / "r").items()
    assert item_meta(good).head.classifier == "moderate"
    with pytest.raises(SplitleakError, match="recording item 1: unknown classifier 'nope'"):
        item_meta(bad)


def test_the_parameter_bound_counts_what_is_built():
    for kind in CLASSIFIERS:
        model = build_split_model("lenet", "conv3", size=32, classifier=kind)
        built = sum(p.numel() for p in model.tail.parameters())
        assert classifier_params(kind, feature_shape("lenet", "conv3", size=32), 10) == built


def test_the_edge_offers_the_zoos_classifiers():
    from edge.cli import CLASSIFIERS as EDGE_CLASSIFIERS

    assert EDGE_CLASSIFIERS == CLASSIFIERS
