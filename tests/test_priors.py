"""Diffusion priors: tiny priors' shapes, a differentiable checkpointed sampler, train-prior and loading."""
import csv
import json

import pytest
import torch

from adversary.priors import DiffusionPrior, load_prior, make_tiny_prior, save_prior
from splitleak.cli.main import main
from splitleak.errors import SplitleakError



pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def latent_prior() -> DiffusionPrior:
    return make_tiny_prior(32, latent=True)


def saved_bytes(prior: DiffusionPrior, checkpoint: bool) -> tuple[int, torch.Tensor]:
    """Bytes autograd keeps for backward during a 4-step sample, and the gradient w.r.t. v."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    v = prior.random_latents(1, seed=0).requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        x = prior.sample(v, steps=4, checkpoint=checkpoint)
    prior.decode(x).mean().backward()
    return total, v.grad


def test_tiny_priors_shapes_and_ranges(latent_prior):
    pixel = make_tiny_prior(32, latent=False)
    assert latent_prior.latent_shape == (4, 8, 8) and pixel.latent_shape == (3, 32, 32)
    assert not latent_prior.conditional and latent_prior.encode_text(["x"]) is None
    images = torch.rand(2, 3, 32, 32)
    for prior in (latent_prior, pixel):
        latents = prior.encode(images)
        assert latents.shape == (2, *prior.latent_shape)
        decoded = prior.decode(prior.sample(prior.random_latents(2, seed=1), steps=3))
        assert decoded.shape == (2, 3, 32, 32) and 0 <= decoded.min() <= decoded.max() <= 1
    assert torch.allclose(pixel.decode(pixel.encode(images)), images, atol=1e-6)


def test_sample_is_differentiable_and_checkpointing_keeps_no_activations(latent_prior):
    assert not latent_prior.unet.training  # checkpointing must hold in eval mode
    kept, grad = saved_bytes(latent_prior, checkpoint=True)
    unrolled, grad_plain = saved_bytes(latent_prior, checkpoint=False)
    assert grad.abs().sum() > 0 and torch.allclose(grad, grad_plain, atol=1e-5)
    assert kept * 20 < unrolled, (kept, unrolled)


def test_sample_is_deterministic_and_guidance_steers(latent_prior):
    v = latent_prior.random_latents(2, seed=3)
    with torch.no_grad():
        first, again = latent_prior.sample(v, steps=3), latent_prior.sample(v, steps=3)
    assert torch.equal(first, again)
    target = torch.zeros_like(first)
    no_push = latent_prior.sample(v, steps=3, guidance=lambda x0, t: torch.zeros_like(x0))
    assert torch.allclose(no_push, first, atol=1e-5)
    pushed = latent_prior.sample(v, steps=3, guidance=lambda x0, t: 0.5 * (x0 - target))
    assert not pushed.requires_grad
    assert (pushed - target).norm() < (first - target).norm()
    with pytest.raises(SplitleakError):
        latent_prior.sample(torch.zeros(1, 3, 8, 8))


def test_ddim_inversion_walks_back_up_the_schedule(latent_prior):
    w = latent_prior.encode(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    noisy = latent_prior.invert(w, steps=50)
    assert not noisy.requires_grad and noisy.shape == w.shape
    travelled = (noisy - w).pow(2).mean()
    back = latent_prior.sample(noisy, steps=50, checkpoint=False)
    assert (back - w).pow(2).mean() < 0.05 * travelled  # the sampler returns close to where it started
    part = latent_prior.invert(w, steps=10, upto=3)
    assert (part - w).pow(2).mean() < travelled
    with torch.no_grad():
        assert (latent_prior.sample(part, steps=10, last=3) - w).pow(2).mean() < (part - w).pow(2).mean()
    for bad in ({"upto": 0}, {"upto": 11}):
        with pytest.raises(SplitleakError, match="upto"):
            latent_prior.invert(w, steps=10, **bad)
    with pytest.raises(SplitleakError, match="last"):
        latent_prior.sample(part, steps=10, last=0)


def test_conditional_prior_follows_text_and_casts():
    prior = make_tiny_prior(16, latent=False, conditional=True)
    assert prior.conditional
    assert prior.encode_text(["a red car", "snow"]).shape[:2] == (2, 32)
    v = prior.random_latents(2, seed=0)
    with torch.no_grad():
        a = prior.sample(v, steps=2, text="a red car")
        b = prior.sample(v, steps=2, text=["snow", "snow"])
        c = prior.sample(v, steps=2, text="a red car", cfg_scale=3.0)
    assert not torch.allclose(a, b) and not torch.allclose(a, c)
    prior.to("cpu", torch.float64)
    assert prior.sample(v.double(), steps=2, text="x").dtype == torch.float64


def train(tmp_path, name, *extra):
    out = tmp_path / name
    args = ["train-prior", "--source", "synthetic:32x32", "--out", str(out), "--size", "32", "--batch", "2",
            "--frames", "4", "--widths", "8,16", "--preview", "2", "--quiet", "--device", "cpu", *extra]
    return main(args), out


@pytest.mark.parametrize("kind", ["latent", "pixel", "text"])
def test_train_prior_saves_a_loadable_prior(tmp_path, kind):
    extra = {"latent": ["--latent", "--vae-steps", "1"], "pixel": [], "text": ["--latent", "--vae-steps", "1",
                                                                              "--text", "street"]}[kind]
    code, out = train(tmp_path, kind, "--steps", "2", *extra)
    assert code == 0
    for name in ("unet", "scheduler", "prior.json", "train_log.csv", "train_state.pt", "samples.png"):
        assert (out / name).exists(), name
    meta = json.loads((out / "prior.json").read_text())
    assert meta["steps"]["unet"] == 2 and meta["footage"]["frames"] == 4 and "unet" in meta["seconds_per_step"]
    prior = load_prior(str(out))
    assert prior.image_size == 32 and (prior.vae is not None) == (kind != "pixel")
    assert prior.conditional == (kind == "text")
    with torch.no_grad():
        images = prior.decode(prior.sample(prior.random_latents(1, seed=0), steps=2, text="street"))
    assert images.shape == (1, 3, 32, 32)


@pytest.mark.slow
def test_resume_continues_and_refuses_other_runs(tmp_path, capsys):
    code, out = train(tmp_path, "run", "--steps", "1")
    assert code == 0
    assert train(tmp_path, "run", "--steps", "2")[0] == 2  # no --resume: refuses to overwrite
    assert "--resume" in capsys.readouterr().err
    assert train(tmp_path, "run", "--steps", "2", "--resume", "--seed", "5")[0] == 2  # a different run
    assert "seed" in capsys.readouterr().err
    assert train(tmp_path, "run", "--steps", "2", "--resume")[0] == 0
    assert json.loads((out / "prior.json").read_text())["steps"]["unet"] == 2
    with (out / "train_log.csv").open() as f:
        assert [row["step"] for row in csv.DictReader(f)] == ["1", "2"]
    meta = json.loads((out / "prior.json").read_text())
    del meta["train"]["recipe"]  # a prior from before the recipe existed (epsilon prediction)
    (out / "prior.json").write_text(json.dumps(meta))
    assert train(tmp_path, "run", "--steps", "3", "--resume")[0] == 2
    assert "recipe" in capsys.readouterr().err


@pytest.mark.slow
def test_decoder_phase_tunes_the_decoder_alone_on_resume(tmp_path, capsys, same_weights):
    code, out = train(tmp_path, "run", "--steps", "1", "--latent", "--vae-steps", "1")
    assert code == 0
    before = load_prior(str(out))
    meta = json.loads((out / "prior.json").read_text())
    assert meta["train"]["vae_widths"] == [16, 32, 32]
    del meta["train"]["vae_widths"]  # a prior from before --vae-widths resumes with the default
    (out / "prior.json").write_text(json.dumps(meta))
    assert train(tmp_path, "run", "--steps", "1", "--latent", "--vae-steps", "1", "--decoder-steps", "2",
                 "--resume")[0] == 0
    after = load_prior(str(out))
    assert same_weights(before.vae.encoder, after.vae.encoder)  # the latent space stays
    assert same_weights(before.unet, after.unet)
    assert not same_weights(before.vae.decoder, after.vae.decoder)
    assert json.loads((out / "prior.json").read_text())["steps"] == {"vae": 1, "decoder": 2, "unet": 1}
    capsys.readouterr()
    # more VAE steps now would move the latents the decoder and the UNet were trained on
    assert train(tmp_path, "run", "--steps", "1", "--latent", "--vae-steps", "2", "--decoder-steps", "2",
                 "--resume")[0] == 2
    assert "trained its decoder and unet on the latents of 1 VAE steps" in capsys.readouterr().err
    with (out / "train_log.csv").open() as f:
        assert [(r["phase"], r["step"]) for r in csv.DictReader(f)][-2:] == [("decoder", "1"), ("decoder", "2")]
    assert train(tmp_path, "pixel", "--steps", "1", "--decoder-steps", "2")[0] == 2  # no VAE to tune
    err = capsys.readouterr().err
    assert "--decoder-steps" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_vae_widths_build_the_vae_and_are_part_of_the_run(tmp_path, capsys):
    code, out = train(tmp_path, "run", "--steps", "1", "--latent", "--vae-steps", "1", "--vae-widths", "8,16,24")
    assert code == 0
    assert list(load_prior(str(out)).vae.config.block_out_channels) == [8, 16, 24]
    assert train(tmp_path, "run", "--steps", "2", "--latent", "--vae-steps", "1", "--resume")[0] == 0  # kept
    assert train(tmp_path, "run", "--steps", "3", "--latent", "--vae-steps", "1", "--resume",
                 "--vae-widths", "16,32,32")[0] == 2
    assert "vae_widths" in capsys.readouterr().err
    assert train(tmp_path, "other", "--steps", "1", "--latent", "--vae-widths", "8,16")[0] == 2
    err = capsys.readouterr().err
    assert "needs 3 widths" in err and len(err.strip().splitlines()) == 1


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument")
def test_bad_inputs_are_one_line_errors(tmp_path, capsys, monkeypatch):
    assert train(tmp_path, "bad", "--source", str(tmp_path / "missing.mp4"))[0] == 2
    err = capsys.readouterr().err
    assert "no such file" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hi")
    with pytest.raises(SplitleakError, match="not a prior folder"):
        load_prior(str(tmp_path / "plain"))
    with pytest.raises(SplitleakError, match="no such prior"):
        load_prior(str(tmp_path / "nothing"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SplitleakError, match="model hub"):
        load_prior("nobody-here/no-such-prior")


def test_save_and_load_round_trip(tmp_path, latent_prior):
    save_prior(latent_prior, tmp_path / "p", {"note": "tiny"})
    loaded = load_prior(str(tmp_path / "p"))
    v = latent_prior.random_latents(1, seed=2)
    with torch.no_grad():
        assert torch.allclose(loaded.sample(v, steps=2), latent_prior.sample(v, steps=2), atol=1e-5)
    assert loaded.scaling_factor == latent_prior.scaling_factor
