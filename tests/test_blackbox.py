"""Black-box inversion (bb-do, bb-db, bb-dmb): query-only access, training, the cache, the video variant."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from adversary.feature.blackbox import (
    BlackBoxCase, BlackBoxDB, BlackBoxDMB, BlackBoxDO, QueryOracle, as_blackbox, batch_windows, make_case,
    probe_fingerprint, query_images, windows,
)
from adversary.feature.base import WhiteBoxCase
from adversary.feature.inverter import FeatureInverter, InverterConfig, default_levels, load_inverter, to_grid
from adversary.metrics import psnr
from adversary.registry import get_attack
from splitleak.errors import SplitleakError
from splitleak.models import build_split_model
from splitleak.video import save_png

SIZE = 32
TINY = dict(batch=8, width=8, flip=0, progress=0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> tuple[str, torch.Tensor]:
    """A query folder of 36 synthetic frames, and 12 held-out frames interleaved with them."""
    x, _ = query_images("synthetic:48x40", SIZE, 48)
    folder = tmp_path_factory.mktemp("query")
    held = list(range(2, 48, 4))
    for i in range(48):
        if i not in held:
            save_png(folder / f"q_{i:04d}.png", x[i].numpy())
    return str(folder), x[held]


def psnr_mean(recon: torch.Tensor, truth: torch.Tensor) -> float:
    return float(np.mean([psnr(r.numpy(), t.numpy()) for r, t in zip(recon, truth)]))


def test_query_oracle_is_query_only():
    head = build_split_model("lenet", "conv2", size=SIZE).head
    oracle = QueryOracle(head, (3, SIZE, SIZE))
    assert not isinstance(oracle, torch.nn.Module) and not hasattr(oracle, "parameters")
    assert not hasattr(oracle, "__dict__")  # nothing hangs off it but the closure
    x = torch.rand(2, 3, SIZE, SIZE, requires_grad=True)
    z = oracle(x)
    assert z.shape == (2, 12, 8, 8) and not z.requires_grad and z.grad_fn is None
    assert oracle.calls == 1 and oracle.images == 2
    with pytest.raises(TypeError):
        pickle.dumps(oracle)
    with pytest.raises(SplitleakError, match="shape"):
        oracle(torch.rand(1, 3, 16, 16))
    for name in ("bb-do", "bb-db", "bb-dmb"):
        cls = get_attack(name)
        assert "query" in cls.access and not {"head_weights", "head_architecture"} & cls.access
        assert isinstance(make_case(cls(), head, (3, SIZE, SIZE), "cpu"), BlackBoxCase)
    white = WhiteBoxCase(head, (3, SIZE, SIZE))
    assert isinstance(as_blackbox(white).query, QueryOracle) and "head_weights" not in as_blackbox(white).grants


@pytest.mark.slow
def test_training_lowers_the_loss_and_the_inverter_round_trips(tmp_path: Path, frames):
    folder, held = frames
    model = build_split_model("lenet", "conv2", size=SIZE)
    attack = BlackBoxDO(iterations=25, query_source=folder, cache_dir=str(tmp_path), **TINY)
    case = make_case(attack, model.head, model.input_shape, "cpu")
    z = model.head(held).detach()
    result = attack.reconstruct(z, case)
    first, log = result.images, result.info["training"]
    assert not log["cached"] and log["final_loss"] < 0.8 * log["first_loss"]
    assert log["query_images"] == 36 and log["queries"] >= 36 and first.shape == held.shape and 0 <= first.min() and first.max() <= 1
    assert result.loss is not None and result.loss.shape == (len(held),)
    inverter, info = load_inverter(log["folder"])
    assert info["config"]["output"] == "pixels" and info["training"]["iterations"] == 25
    with torch.no_grad():
        assert torch.allclose(inverter(z), first, atol=1e-6)
    again = BlackBoxDO(iterations=25, query_source=folder, cache_dir=str(tmp_path), **TINY)
    repeat = again.reconstruct(z, make_case(again, model.head, model.input_shape, "cpu"))
    assert torch.allclose(repeat.images, first) and repeat.info["training"]["cached"]
    other = build_split_model("lenet", "conv2", size=SIZE, weights="seed:1")  # another head: another cache entry
    assert probe_fingerprint(QueryOracle(other.head, (3, SIZE, SIZE))) != probe_fingerprint(case.query)


@pytest.mark.slow
@pytest.mark.parametrize("name,split", [("lenet", "conv2"), ("resnet18", "layer1")])
def test_bb_do_beats_grey_on_held_out_frames(tmp_path: Path, frames, name: str, split: str):
    folder, held = frames
    model = build_split_model(name, split, size=SIZE)
    attack = BlackBoxDO(iterations=50, query_source=folder, cache_dir=str(tmp_path), **TINY)
    recon = attack.reconstruct(model.head(held).detach(), make_case(attack, model.head, model.input_shape, "cpu")).images
    grey = psnr_mean(torch.full_like(held, 0.5), held)
    assert psnr_mean(recon, held) > grey + 2, (psnr_mean(recon, held), grey)


def test_temporal_variant_reads_k_frames(tmp_path: Path, frames):
    config = InverterConfig((12, 8, 8), 3, SIZE, "pixels", frames=3, width=8, levels=2)
    net = FeatureInverter(config)
    z = torch.randn(4, 3, 12, 8, 8)
    assert net(z).shape == (4, 3, SIZE, SIZE)
    centre_only = z.clone()
    centre_only[:, [0, 2]] = torch.randn(4, 2, 12, 8, 8)  # at initialisation only the centre frame counts
    assert torch.allclose(net(z), net(centre_only), atol=1e-6)
    with pytest.raises(SplitleakError, match="shape"):
        net(torch.randn(4, 12, 8, 8))
    assert windows(4, 3).tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    # two streams interleaved in one batch: windows stay inside each stream's run of seq
    assert batch_windows([("a", 5), ("b", 0), ("a", 6), ("b", 1)], 4, 3).tolist() == \
        [[0, 0, 2], [1, 1, 3], [0, 2, 2], [1, 3, 3]]
    folder, held = frames
    model = build_split_model("lenet", "conv2", size=SIZE)
    attack = BlackBoxDO(iterations=3, window=3, query_source=folder, cache_dir=str(tmp_path), **TINY)
    case = make_case(attack, model.head, model.input_shape, "cpu")
    zs = model.head(held[:5]).detach()
    assert attack.reconstruct(zs, case).images.shape == (5, 3, SIZE, SIZE)  # a batch of consecutive frames
    windowed = attack.reconstruct(zs[:, None].repeat(1, 3, 1, 1, 1), case).images
    assert windowed.shape == (5, 3, SIZE, SIZE)  # windows
    assert to_grid(torch.zeros(2, 5, 768), (5, 768)).shape == (2, 768, 2, 2)  # ViT tokens as a map


@pytest.mark.parametrize("cls,options", [(BlackBoxDB, {}), (BlackBoxDMB, {"steps": 2}),
                                         (BlackBoxDMB, {"steps": 2, "start": 2})],
                         ids=["bb-db", "bb-dmb", "bb-dmb-end-to-end"])
def test_prior_variants_run_through_a_tiny_prior(tmp_path: Path, frames, cls, options):
    from adversary.priors.diffusion import make_tiny_prior

    folder, held = frames
    model = build_split_model("lenet", "conv2", size=SIZE)
    attack = cls(iterations=3, query_source=folder, query_frames=8, cache_dir=str(tmp_path), **TINY, **options)
    with pytest.raises(SplitleakError, match="prior"):
        attack.check_access(make_case(attack, model.head, model.input_shape, "cpu"))
    case = make_case(attack, model.head, model.input_shape, "cpu", prior=make_tiny_prior(SIZE))
    result = attack.reconstruct(model.head(held[:4]).detach(), case)
    recon, training = result.images, result.info["training"]
    assert recon.shape == (4, 3, SIZE, SIZE) and 0 <= recon.min() and recon.max() <= 1
    assert training["query_images"] == 8 and np.isfinite(training["final_loss"])
    inverter, _ = next(iter(attack._inverters.values()))
    assert result.info["inverter_parameters"] == sum(p.numel() for p in inverter.parameters())


def test_latent_inverters_default_to_the_pixel_inverters_parameter_count():
    fshape = (64, 16, 16)  # resnet18 layer1 at 64 px: a 16 x 16 latent leaves the latent G one level fewer
    sizes = {}
    for cls, channels, side in ((BlackBoxDO, 3, 64), (BlackBoxDB, 4, 16)):
        width = cls().width
        config = InverterConfig(fshape, channels, side, cls.output, width=width, levels=default_levels(side))
        sizes[cls.name] = (width, sum(p.numel() for p in FeatureInverter(config).parameters()))
    assert sizes["bb-do"][0] == 16 and sizes["bb-db"][0] == BlackBoxDMB().width == 32
    assert 0.9 < sizes["bb-db"][1] / sizes["bb-do"][1] < 1.1
    assert BlackBoxDB(width=8).width == 8


def test_bb_dmb_regresses_onto_clean_latents_unless_it_starts_from_noise(monkeypatch):
    from adversary.priors.diffusion import make_tiny_prior

    prior, x = make_tiny_prior(SIZE), torch.rand(2, 3, SIZE, SIZE)
    short, whole = BlackBoxDMB(steps=4, start=1), BlackBoxDMB(steps=4, start=4)
    assert torch.allclose(short.targets(prior, x), prior.encode(x))
    assert torch.equal(whole.targets(prior, x), x)  # end to end: the pixel loss through the sampler
    called, inverted = [], []
    monkeypatch.setattr(prior, "sample", lambda *a, **k: called.append(k) or prior.encode(x))
    monkeypatch.setattr(prior, "invert", lambda latents, **k: inverted.append(k) or latents)
    out = torch.zeros(2, *prior.latent_shape)
    assert float(short.train_loss(prior, out, out + 1, x)) == 1.0 and not called  # no sampler in training
    whole.train_loss(prior, out, x, x)
    short.render(prior, out, SIZE)
    assert [k.get("last") for k in called] == [None, 1] and [k["upto"] for k in inverted] == [1]
    assert short.describe()["start"] == 1 and whole.describe()["training_loss"].startswith("pixel")
    with pytest.raises(SplitleakError, match="start"):
        BlackBoxDMB(steps=4, start=5)
    with pytest.raises(SplitleakError, match="start"):
        BlackBoxDMB(start=0)
