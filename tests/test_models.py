"""The model zoo: stage lists match the real networks, cuts are exact, weights are reproducible."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
import torch

from splitleak.errors import SplitleakError
from splitleak.models import build_split_model, describe, feature_shape, file_tag, model_names, split_points

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
KINETICS = ((0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989))

# name, size, clip_len, normalisation, split points checked one by one (None: all of them)
CASES = [
    ("lenet", 32, None, None, None),
    ("cnn6", 32, None, None, None),
    ("simple", 32, None, None, None),
    ("moderate", 32, None, None, None),
    ("resnet18", 32, None, IMAGENET, None),
    ("mobilenet_v3_small", 32, None, IMAGENET, ["0", "6", "12"]),
    ("vit_b_16", 32, None, IMAGENET, ["5"]),
    ("r3d_18", 32, 4, KINETICS, ["stem", "layer3"]),
]


def _normalize(x: torch.Tensor, norm: tuple | None) -> torch.Tensor:
    if norm is None:
        return x
    shape = (1, 3) + (1,) * (x.dim() - 2)
    return (x - torch.tensor(norm[0]).view(shape)) / torch.tensor(norm[1]).view(shape)


def _params(module: torch.nn.Module) -> set[int]:
    return {id(p) for p in module.parameters()}


LARGE = {"resnet18", "mobilenet_v3_small", "vit_b_16", "r3d_18"}  # seconds each on a CPU: marked slow


@pytest.mark.parametrize("name,size,clip_len,norm,points",
                         [pytest.param(*c, id=c[0], marks=[pytest.mark.slow] if c[0] in LARGE else []) for c in CASES])
@torch.no_grad()
def test_head_then_tail_is_the_real_network(name, size, clip_len, norm, points):
    full = build_split_model(name, "none", size=size, clip_len=clip_len)
    assert full.input_shape == ((3, size, size) if clip_len is None else (3, clip_len, size, size))
    x = torch.rand(2, *full.input_shape, generator=torch.Generator().manual_seed(1))
    reference = full.network(_normalize(x, norm))  # the torchvision model's own forward
    assert torch.equal(full.tail(full.head(x)), reference)
    assert torch.equal(full.head(x), x)
    assert not full.head.training and not full.tail.training
    h = x  # every stage's output has the shape feature_shape promises for that split point
    for stage_name, stage in full.tail.named_children():
        h = stage(h)
        if stage_name in split_points(name):
            assert tuple(h.shape[1:]) == feature_shape(name, stage_name, size, clip_len=clip_len)
    assert torch.equal(h, reference)
    for split in points or split_points(name)[1:]:
        sm = build_split_model(name, split, size=size, clip_len=clip_len)
        z = sm.head(x)
        assert tuple(z.shape[1:]) == feature_shape(name, split, size, clip_len=clip_len), split
        assert torch.equal(sm.tail(z), reference), split
        assert not _params(sm.head) & _params(sm.tail), split
        assert _params(sm.head) | _params(sm.tail) == _params(sm.network), split


def test_registry_and_describe():
    assert model_names() == ["lenet", "cnn6", "simple", "moderate", "resnet18", "resnet50", "mobilenet_v3_small",
                             "vit_b_16", "r3d_18", "clipnet", "frameavg"]
    assert split_points("resnet50") == ["none", "conv1", "layer1", "layer2", "layer3", "layer4"]
    assert split_points("mobilenet_v3_small")[-1] == "12" and split_points("vit_b_16")[-1] == "11"
    assert feature_shape("lenet", "conv2") == (12, 8, 8)
    assert feature_shape("resnet50", "layer4") == (2048, 7, 7)
    assert feature_shape("vit_b_16", "3") == (197, 768)
    assert feature_shape("r3d_18", "layer2") == (128, 4, 28, 28)
    assert feature_shape("r3d_18", "none") == (3, 8, 112, 112)
    rows = {r["name"]: r for r in describe(40)}
    assert set(rows) == set(model_names())
    assert rows["r3d_18"]["input_kind"] == "clip" and rows["r3d_18"]["clip_len"] == 8
    assert rows["resnet18"]["split_points"][2] == {"name": "layer1", "feature_shape": [64, 10, 10]}
    assert "multiple of 16" in rows["vit_b_16"]["error"]
    assert all(p["feature_shape"] is not None for p in rows["lenet"]["split_points"])


def test_table_two_models():
    """cnn6 is bias-free with leaky ReLU; simple is one FC on the frame; moderate has non-linearities."""
    cnn6 = build_split_model("cnn6", "none").network
    assert all(m.bias is None for m in cnn6.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert [m.negative_slope for m in cnn6.modules() if isinstance(m, torch.nn.LeakyReLU)] == [0.2] * 6
    assert cnn6.fc.in_features == 3200 and feature_shape("cnn6", "conv6") == (128, 5, 5)
    assert build_split_model("simple", "none").network.classifier[1].in_features == 3072
    assert split_points("simple") == ["none"] and split_points("moderate") == ["none", "conv1", "conv2", "fc1"]
    assert feature_shape("moderate", "fc1") == (256,)
    assert sum(isinstance(m, torch.nn.Sigmoid) for m in build_split_model("moderate", "none").network.modules()) == 3


@pytest.mark.slow
@pytest.mark.parametrize("classifier,layers", [("simple", 1), ("moderate", 3)])
@torch.no_grad()
def test_classifier_over_frozen_features(classifier, layers, tmp_path):
    plain = build_split_model("resnet18", "layer2", size=32, num_classes=5, weights="seed:2")
    sm = build_split_model("resnet18", "layer2", size=32, num_classes=5, weights="seed:2", classifier=classifier)
    assert sm.classifier == classifier and plain.classifier is None
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    z = sm.head(x)
    assert torch.equal(z, plain.head(x))  # the same frozen extractor
    assert tuple(z.shape[1:]) == feature_shape("resnet18", "layer2", 32) == (128, 4, 4)
    linears = [m for m in sm.tail.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == layers and linears[0].in_features == 2048 and linears[-1].out_features == 5
    assert sm.tail(z).shape == (2, 5) and torch.equal(sm.network(x), sm.tail(z))
    assert not _params(sm.head) & _params(sm.tail) and _params(sm.tail) <= _params(sm.network)
    path = tmp_path / "clf.pt"
    torch.save(sm.state_dict(), path)  # extractor.* and classifier.*
    again = build_split_model("resnet18", "layer2", size=32, num_classes=5, weights=str(path), classifier=classifier)
    assert again.weights == file_tag(str(path)) and torch.equal(again.tail(again.head(x)), sm.tail(z))
    other = build_split_model("resnet18", "layer2", size=32, num_classes=5, weights="seed:3", classifier=classifier)
    assert not torch.equal(other.tail(z), sm.tail(z))


def test_classifier_bad_inputs():
    with pytest.raises(SplitleakError, match="unknown classifier"):
        build_split_model("resnet18", "layer2", size=32, classifier="deep")
    with pytest.raises(SplitleakError, match="needs a split point"):
        build_split_model("resnet18", "none", size=32, classifier="simple")


def test_defaults():
    sm = build_split_model("lenet", "conv3")
    assert (sm.size, sm.num_classes, sm.input_kind, sm.clip_len) == (32, 10, "image", None)
    assert sm.weights == "seed:0" and sm.input_shape == (3, 32, 32)
    sm = build_split_model("r3d_18", "layer4", size=32)
    assert (sm.num_classes, sm.input_kind, sm.clip_len, sm.input_shape) == (400, "clip", 8, (3, 8, 32, 32))
    sm = build_split_model("resnet18", "layer4", size=32, num_classes=7)
    assert sm.num_classes == 7 and sm.network.fc.out_features == 7


def _digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k, v in state.items():
        h.update(k.encode() + v.numpy().tobytes())
    return h.hexdigest()


@pytest.mark.slow
def test_seeded_weights_are_reproducible_and_leave_global_rng_alone():
    before = torch.get_rng_state()
    a = build_split_model("resnet18", "layer2", size=32, weights="seed:3").state_dict()
    b = build_split_model("resnet18", "layer2", size=32, weights="seed:3").state_dict()
    c = build_split_model("resnet18", "layer2", size=32, weights="seed:4").state_dict()
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])
    code = ("import hashlib; from splitleak.models import build_split_model as b; h = hashlib.sha256()\n"
            "for k, v in b('lenet', 'conv1', weights='seed:5').state_dict().items():"
            " h.update(k.encode() + v.numpy().tobytes())\nprint(h.hexdigest())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == _digest(build_split_model("lenet", "conv1", weights="seed:5").state_dict())


def test_lenet_init_is_uniform_half():
    for p in build_split_model("lenet", "conv1").network.parameters():
        assert p.min() >= -0.5 and p.max() <= 0.5


@torch.no_grad()
def test_state_dict_file_round_trip(tmp_path):
    src = build_split_model("lenet", "conv2", weights="seed:9", num_classes=5)
    path = tmp_path / "lenet.pt"
    torch.save(src.state_dict(), path)
    sm = build_split_model("lenet", "conv2", weights=str(path), num_classes=5)
    assert sm.weights == file_tag(str(path)) == "file:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    x = torch.rand(3, 3, 32, 32)
    assert torch.equal(sm.tail(sm.head(x)), src.tail(src.head(x)))


def test_bad_inputs_raise(tmp_path):
    with pytest.raises(SplitleakError, match="unknown model"):
        build_split_model("alexnet", "conv1")
    with pytest.raises(SplitleakError, match="unknown split point"):
        build_split_model("resnet18", "layer5")
    with pytest.raises(SplitleakError, match="unknown split point"):
        feature_shape("vit_b_16", "12")
    with pytest.raises(SplitleakError, match="not found"):
        build_split_model("lenet", "conv1", weights=str(tmp_path / "missing.pt"))
    with pytest.raises(SplitleakError, match="multiple of 16"):
        build_split_model("vit_b_16", "0", size=40)
    with pytest.raises(SplitleakError, match="multiple of 4"):
        build_split_model("lenet", "conv1", size=30)
    with pytest.raises(SplitleakError, match="seed:N"):
        build_split_model("lenet", "conv1", weights="seed:x")
    with pytest.raises(SplitleakError, match="no torchvision weights"):
        build_split_model("resnet18", "conv1", size=32, weights="NOT_A_WEIGHT")
    with pytest.raises(SplitleakError, match="no torchvision weights"):
        build_split_model("lenet", "conv1", weights="DEFAULT")


def test_mismatched_weights_file_names_the_first_mismatch(tmp_path):
    state = build_split_model("lenet", "conv1", num_classes=10).state_dict()
    torch.save(state, tmp_path / "ten.pt")
    with pytest.raises(SplitleakError, match="'fc.weight' has shape"):
        build_split_model("lenet", "conv1", num_classes=5, weights=str(tmp_path / "ten.pt"))
    del state["conv2.0.bias"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(SplitleakError, match="missing key 'conv2.0.bias'"):
        build_split_model("lenet", "conv1", weights=str(tmp_path / "missing.pt"))
    torch.save({**state, "conv2.0.bias": torch.zeros(12), "extra": torch.zeros(1)}, tmp_path / "extra.pt")
    with pytest.raises(SplitleakError, match="unexpected key 'extra'"):
        build_split_model("lenet", "conv1", weights=str(tmp_path / "extra.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(SplitleakError, match="cannot read weights file"):
        build_split_model("lenet", "conv1", weights=str(tmp_path / "junk.pt"))
