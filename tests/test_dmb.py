"""Prior-based feature inversion (db, dmb and its phases, the text prior, dmb-multi's fusion) on tiny priors.
Behaviour is read off what `reconstruct` returns (images, loss, trace, info) and off the prior's
public calls; the attack objects must come out of a run unchanged."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adversary.feature import DecoderBased, DiffusionBased, MultiFrameDiffusionBased, WhiteBoxCase
from adversary.feature.fusion import apply_fusion, fusion_weights, residual_maps
from adversary.feature.groups import consecutive_groups
from adversary.feature.phases import step_plan
from adversary.losses import feature_loss, group_tie, log_cosh, negentropy, normalise, total_variation
from adversary.priors.diffusion import make_tiny_prior
from splitleak.errors import SplitleakError
from splitleak.models import build_split_model

SIZE = 32
FAST = {"iterations": 2, "sampler_steps": 1, "pixel_steps": 0}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one thread, and the test machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prior():
    return make_tiny_prior(SIZE)


def head_case(name: str, prior, split: str = "conv1", frames: int = 2, seed: int = 0, stream=None):
    model = build_split_model(name, split, size=SIZE)
    for p in model.head.parameters():
        p.requires_grad_(False)
    x = torch.rand(frames, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        z = model.head(x)
    ids = None if stream is None else tuple((stream, s) for s in range(1, frames + 1))
    return z, WhiteBoxCase(model.head, tuple(model.input_shape), prior=prior, frames=ids)


class Counting:
    """The prior, with its sampler calls (their step counts) and decoder calls counted."""

    def __init__(self, prior) -> None:
        self.prior, self.samples, self.decodes = prior, [], 0

    def __getattr__(self, name):
        return getattr(self.prior, name)

    def sample(self, v, steps=20, **kwargs):
        self.samples.append(kwargs.get("last") or steps)
        return self.prior.sample(v, steps=steps, **kwargs)

    def decode(self, latent):
        self.decodes += 1
        return self.prior.decode(latent)


@pytest.mark.parametrize("make,head", [
    (lambda: DecoderBased(iterations=4), "lenet"),
    (lambda: DiffusionBased(iterations=3, sampler_steps=2), "resnet18"),
    (lambda: DiffusionBased(iterations=4, sampler_steps=2, variant="guidance"), "lenet"),
    (lambda: MultiFrameDiffusionBased(iterations=3, sampler_steps=2), "lenet"),
], ids=["db", "dmb", "dmb-guidance", "dmb-multi"])
def test_attack_returns_images_lowers_the_feature_loss_and_stays_unchanged(prior, make, head: str) -> None:
    z, case = head_case(head, prior)
    attack = make()
    before = copy.deepcopy(attack.__dict__)
    result = attack.reconstruct(z, case)
    x, trace = result.images, result.trace["feature"]
    assert x.shape == (2, 3, SIZE, SIZE) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert result.loss.shape == (2,) and float(result.loss.mean()) < trace[0]
    assert repr(attack.__dict__) == repr(before)  # no run state left on the attack


@pytest.mark.slow
def test_dmb_resizes_to_the_head_and_is_repeatable() -> None:
    prior = make_tiny_prior(16)
    z, case = head_case("lenet", prior)
    attack = DiffusionBased(iterations=2, sampler_steps=2)
    x = attack.reconstruct(z, case).images
    assert x.shape == (2, 3, SIZE, SIZE)
    assert torch.equal(x, attack.reconstruct(z, case).images)  # the same object, run twice


def test_paper_preset_runs_algorithm_1_as_written(prior) -> None:
    """dmb --preset paper against the paper's loop written out: v ~ N(0, I); T times: v_n = (v - mean) / std,
    x = D(DDIM_K(v_n)), loss = ||F1(x) - z||^2 (ours: normalised) + lambda_s TV(x), Adam step on v; the
    output is the best x seen. Same images, bit for bit."""
    z, case = head_case("resnet18", prior)
    steps, iterations, lr, lambda_s = 3, 4, 0.1, 0.01
    attack = DiffusionBased.from_options("paper", {"iterations": iterations, "sampler.steps": steps})
    assert (attack.config.sampler.lr, attack.config.lambda_s) == (lr, lambda_s)
    result = attack.reconstruct(z, case)

    v = torch.randn((2, *prior.latent_shape), generator=torch.Generator().manual_seed(case.seed)).requires_grad_(True)
    opt, best, best_loss = torch.optim.Adam([v], lr=lr), None, None
    for step in range(iterations + 1):  # + 1: the final v is scored too
        x = prior.decode(prior.sample(normalise(v), steps=steps, checkpoint=False)).float()
        feat = feature_loss(case.head(x), z, torch.ones_like(z, dtype=torch.bool))
        if best is None:
            best, best_loss = x.detach().clone(), feat.detach().clone()
        else:
            better = feat < best_loss
            best, best_loss = torch.where(better.view(-1, 1, 1, 1), x.detach(), best), torch.minimum(feat, best_loss)
        if step < iterations:
            (v.grad,) = torch.autograd.grad((feat + lambda_s * total_variation(x)).sum(), v)
            opt.step()
    assert torch.equal(result.images, best.clamp(0, 1))
    assert result.info["adam_steps"] == [(steps, iterations)]


@pytest.mark.slow
def test_text_prior_conditions_the_sampler_and_adds_negentropy() -> None:
    prior = make_tiny_prior(SIZE, conditional=True)
    z, case = head_case("lenet", prior)
    text = "a street with bikes"
    with_text, without = DiffusionBased(iterations=2, sampler_steps=2, text=text), DiffusionBased(iterations=2, sampler_steps=2)
    cond, empty = with_text.condition(prior), without.condition(prior)
    assert not torch.equal(cond, empty)
    v = torch.randn(1, *prior.latent_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.allclose(prior.sample(v, steps=2, text=cond), prior.sample(v, steps=2, text=empty))
    traced, plain = with_text.reconstruct(z, case).trace, without.reconstruct(z, case).trace
    assert "txt" in traced and "txt" not in plain and all(t < 0 for t in traced["txt"])
    assert with_text.describe()["text_prior"]["text"] == text
    with pytest.raises(SplitleakError, match="text-conditioned"):
        DiffusionBased(iterations=1, sampler_steps=1, text=text).reconstruct(*head_case("lenet", make_tiny_prior(SIZE)))


def test_negentropy_groups_and_tie() -> None:
    assert torch.allclose(negentropy(torch.zeros(2, 5)), torch.zeros(2))
    assert torch.allclose(negentropy(torch.ones(1, 4), 2.0), -(2 / 4) * torch.log(torch.cosh(torch.tensor(2.0))))
    assert torch.isfinite(log_cosh(torch.tensor([1e4, -1e4]))).all()
    v = normalise(torch.randn(3, 4, 5, 5) * 7 + 2)
    assert torch.allclose(v.flatten(1).mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(v.flatten(1).std(1), torch.ones(3), atol=1e-4)
    frames = [("a", 1), ("a", 2), ("b", 1), ("a", 4), ("a", 3), ("b", 3), ("a", 5)]
    assert consecutive_groups(frames, 3) == [[0, 1, 4], [3, 6], [2], [5]]
    assert consecutive_groups(frames, 1) == [[0], [1], [4], [3], [6], [2], [5]]
    tied = torch.tensor([[1.0, 1.0], [3.0, 3.0], [5.0, 5.0]])
    assert torch.allclose(group_tie(tied, [[0, 1], [2]]), torch.tensor([1.0, 1.0, 0.0]))


@pytest.mark.parametrize("options,message", [
    ({"alpha": 3.0}, "alpha"), ({"coarse_share": 1.5}, "coarse_share"), ({"refine_share": 1.0}, "refine share"),
    ({"restarts": 0}, "restarts"), ({"pixel_steps": -1}, "pixel steps"), ({"pixel_lr": 0}, "lr"),
    ({"variant": "fast"}, "variant"), ({"init": "zeros"}, "init"), ({"steps": 3}, "ambiguous"),
    ({"align": "flow"}, "unknown option 'align'"), ({"restarts": "two"}, "expected an integer"),
])
def test_dmb_options_are_checked(options, message) -> None:
    with pytest.raises(SplitleakError, match=message):
        DiffusionBased(**options)


def test_step_plan_spends_the_budget() -> None:
    assert step_plan(5, 4, 0, 0.5, 0.0) == [(4, 5)]  # Algorithm 1
    assert step_plan(5, 2, 2, 0.5, 0.0) == [(2, 5)]
    assert step_plan(3, 10, 2, 1.0, 0.0) == [(2, 15)]
    # a refine share buys `steps` latent steps per sampler run, the coarse share splits the rest
    assert step_plan(100, 10, 2, 0.5, 0.2) == [(2, 200), (10, 40), (0, 200)]


def test_dmb_coarse_phase_buys_adam_steps_at_the_same_sampler_budget(prior) -> None:
    z, case = head_case("lenet", Counting(prior))
    attack = DiffusionBased(iterations=4, sampler_steps=4, coarse_steps=2, coarse_share=0.5, checkpoint="off",
                            refine_share=0.0, restarts=1)
    result = attack.reconstruct(z, case)
    assert result.info["adam_steps"] == [(2, 4), (4, 2)]  # half of 4 K=4 runs is 4 two-step runs
    assert case.prior.samples == [2] * 4 + [4] * 2 + [4]  # the final pass scores through the full sampler
    assert len(result.trace["feature"]) == 7


def test_dmb_restarts_screen_candidates_in_the_coarse_phase(prior) -> None:
    z, case = head_case("lenet", Counting(prior))
    options = {"iterations": 4, "sampler_steps": 4, "coarse_steps": 2, "coarse_share": 0.5, "checkpoint": "off",
               "refine_share": 0.0, "pixel_steps": 0}
    result = DiffusionBased(restarts=3, **options).reconstruct(z, case)
    # screening: the coarse phase on 3 candidates per frame as one batch, then the rest on one per frame
    assert result.info["adam_steps"] == [(2, 4), (4, 2)]
    assert case.prior.samples == [2] * 4 + [4] + [4] * 2 + [4]
    single = DiffusionBased(restarts=1, **options).reconstruct(z, case)
    assert float(result.loss.sum()) <= float(single.loss.sum()) * 1.5  # screened starts fit no worse
    no_coarse = {**options, "coarse_steps": 0}  # Algorithm 1 has nothing to screen in: restarts do nothing
    assert torch.equal(DiffusionBased(restarts=3, **no_coarse).reconstruct(z, case).images,
                       DiffusionBased(restarts=1, **no_coarse).reconstruct(z, case).images)


def test_dmb_refines_the_sampled_latent_after_the_sampler(prior) -> None:
    z, case = head_case("lenet", Counting(prior))
    result = DiffusionBased(iterations=5, sampler_steps=4, coarse_steps=0, refine_share=0.4, checkpoint="off",
                            pixel_steps=0).reconstruct(z, case)
    assert result.info["adam_steps"] == [(4, 3), (0, 8)]  # 2 of 5 sampler runs buy 2 x 4 latent steps
    assert case.prior.samples == [4] * 4  # 3 Adam steps on v and the final pass; the refinement samples nothing
    feature = result.trace["feature"]
    assert len(feature) == 4 + 9 and feature[-1] < feature[3]  # refining lowered the sampled image's loss


def test_dmb_pixel_phase_fits_the_features_past_the_prior(prior) -> None:
    z, case = head_case("resnet18", Counting(prior))
    plain = DiffusionBased(iterations=2, sampler_steps=2, pixel_steps=0).reconstruct(z, case)
    calls = (list(case.prior.samples), case.prior.decodes)
    polished = DiffusionBased(iterations=2, sampler_steps=2, pixel_steps=60, pixel_lr=0.05).reconstruct(z, case)
    assert (case.prior.samples[len(calls[0]):], case.prior.decodes - calls[1]) == (calls[0], calls[1])  # it samples nothing
    assert float(polished.images.min()) >= 0 and float(polished.images.max()) <= 1
    assert (polished.loss < 0.5 * plain.loss).all()  # DO steps from the prior's image fit the features


def test_dmb_init_inverter_starts_from_the_inverters_guess(prior, tmp_path: Path) -> None:
    z, case = head_case("lenet", prior)
    options = {"iterations": 1, "sampler_steps": 2, "coarse_steps": 0, "refine_share": 0.0, "pixel_steps": 0,
               "query_source": "synthetic:48x40", "query_frames": 12, "cache_dir": str(tmp_path)}

    def tiny(attack):
        attack.guide.config = attack.guide.Config(inverter=attack.guide.config.inverter.__class__(
            iterations=3, width=8), query=attack.guide.config.query, cache_dir=str(tmp_path), progress=False)
        return attack

    guided = tiny(DiffusionBased(init="inverter", **options))
    drawn = DiffusionBased(**options).reconstruct(z, case)
    result = guided.reconstruct(z, case)
    assert not torch.equal(result.images, drawn.images) and torch.isfinite(result.images).all()
    (model, training), = guided.guide._inverters.values()
    assert training["cached"] is False
    again = tiny(DiffusionBased(init="inverter", **options))  # a second attack finds the inverter on disk
    assert torch.equal(again.reconstruct(z, case).images, result.images)
    assert next(iter(again.guide._inverters.values()))[1]["cached"] is True
    assert DiffusionBased().guide is None


def test_db_needs_a_latent_prior() -> None:
    z, case = head_case("lenet", make_tiny_prior(SIZE, latent=False))
    with pytest.raises(SplitleakError, match="VAE"):
        DecoderBased(iterations=1).reconstruct(z, case)
    assert DiffusionBased(**FAST).reconstruct(z, case).images.shape == (2, 3, SIZE, SIZE)  # a pixel prior works


def test_prior_attacks_need_a_prior() -> None:
    z, case = head_case("lenet", None)
    for attack in (DecoderBased(iterations=1), DiffusionBased(iterations=1), MultiFrameDiffusionBased(iterations=1)):
        with pytest.raises(SplitleakError, match="needs a diffusion prior"):
            attack.reconstruct(z, case)


@pytest.mark.slow
def test_unroll_checkpointing_is_really_on_in_eval_mode(prior) -> None:
    assert not prior.unet.training and not prior.vae.training
    v = torch.randn(1, *prior.latent_shape, generator=torch.Generator().manual_seed(1)).requires_grad_(True)

    def saved_bytes_and_grad(checkpoint: bool) -> tuple[int, torch.Tensor]:
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = prior.sample(v, steps=4, checkpoint=checkpoint)
        return total, torch.autograd.grad(out.square().sum(), v)[0]

    (kept, grad), (full, reference) = saved_bytes_and_grad(True), saved_bytes_and_grad(False)
    assert kept * 4 < full and torch.allclose(grad, reference, rtol=1e-4, atol=1e-6)
    z, case = head_case("lenet", prior, frames=1)
    auto = DiffusionBased(iterations=1, sampler_steps=2).reconstruct(z, case)
    forced = DiffusionBased(iterations=1, sampler_steps=2, checkpoint="on").reconstruct(z, case)
    assert auto.info["checkpointed"] is False and forced.info["checkpointed"] is True  # tiny prior on CPU


def test_dmb_multi_ties_latents_and_shares_noise(prior) -> None:
    z, case = head_case("lenet", prior, frames=3, stream="cam0")

    def spread(lambda_c: float) -> float:
        result = MultiFrameDiffusionBased(iterations=4, sampler_steps=2, lambda_c=lambda_c, fuse=0.0,
                                          refine_share=0.0, pixel_steps=0, restarts=1).reconstruct(z, case)
        return result.trace["tie"][-1] / lambda_c if lambda_c else 0.0

    assert MultiFrameDiffusionBased(window=8).frame_groups(3, case) == [[0, 1, 2]]
    assert spread(200.0) < spread(0.001)
    shared = MultiFrameDiffusionBased(iterations=1, sampler_steps=1, window=2, shared_init=True)
    fit = shared.open_fit(z, case, prior)
    assert fit.groups == [[0, 1], [2]]
    v = shared.draw(fit, 3, fit.groups)
    assert torch.equal(v[0], v[1]) and not torch.equal(v[0], v[2])


def test_dmb_multi_paper_preset_is_algorithm_2() -> None:
    config = MultiFrameDiffusionBased.from_options("paper").config
    assert (config.frames.lambda_c, config.frames.shared_init, config.frames.fuse) == (0.05, True, 0.0)
    assert (config.sampler.coarse_steps, config.refine.share, config.pixel.steps, config.start.restarts) == (0, 0, 0, 1)
    assert MultiFrameDiffusionBased.from_options("paper").fusion is None


def test_dmb_multi_frames_that_accept_nothing_refine_as_single_frame_dmb(prior) -> None:
    z, case = head_case("resnet18", prior, frames=3, stream="cam0")  # three different frames
    options = {"iterations": 4, "sampler_steps": 1, "refine_share": 0.5, "pixel_steps": 0}
    result = MultiFrameDiffusionBased(fuse=1e-9, **options).reconstruct(z, case)  # accepts no neighbour's pixel
    assert result.info["fused_share"] == [0.0, 0.0, 0.0]
    assert torch.equal(result.images, DiffusionBased(**options).reconstruct(z, case).images)


def test_dmb_multi_fuses_what_the_features_accept(prior) -> None:
    z, case = head_case("resnet18", prior, frames=1)
    z = z.repeat(3, 1, 1, 1)  # one frame seen three times: every neighbour explains it
    case.frames = (("cam0", 1), ("cam0", 2), ("cam0", 3))
    plain = MultiFrameDiffusionBased(fuse=0.0, **FAST).reconstruct(z, case)
    fused = MultiFrameDiffusionBased(fuse=1e6, **FAST).reconstruct(z, case)
    assert torch.equal(plain.images, DiffusionBased(**FAST).reconstruct(z, case).images)  # untied, unfused = single
    assert "fused_share" not in plain.info and fused.info["fused_share"] == [1.0, 1.0, 1.0]
    assert torch.allclose(fused.images, plain.images.mean(0, keepdim=True).expand_as(plain.images), atol=1e-5)


@pytest.mark.parametrize("refine_share", [0.0, 0.5], ids=["decided-at-the-end", "decided-on-the-samples"])
def test_dmb_multi_fuses_after_the_pixel_phase(prior, refine_share) -> None:
    z, case = head_case("resnet18", prior, frames=3, stream="cam0")  # three different frames
    result = MultiFrameDiffusionBased(iterations=2, sampler_steps=1, fuse=1e6, pixel_steps=5,
                                      refine_share=refine_share).reconstruct(z, case)
    x = result.images  # fuse 1e6 accepts every neighbour, and the fusion comes last: every frame is the mean
    assert torch.allclose(x[0], x[1], atol=1e-5) and torch.allclose(x[1], x[2], atol=1e-5)
    # resnet18 conv1 at 32 px holds more numbers than the image: the final acceptance is decided on the refined images
    assert result.info["acceptance_on"] == "refined"


def test_dmb_multi_reuses_the_samplers_acceptance_where_features_hold_fewer_numbers(prior) -> None:
    z, case = head_case("resnet18", prior, split="layer2", frames=3, stream="cam0")
    result = MultiFrameDiffusionBased(iterations=2, sampler_steps=1, fuse=2.0, refine_share=0.5,
                                      pixel_steps=2).reconstruct(z, case)
    assert result.info["acceptance_on"] == "sampler"


def test_fusion_averages_only_where_the_features_agree() -> None:
    """Two frames, same left half, different right half; each reconstruction is the truth plus
    noise the head (4x4 average pooling) cannot see. Fusion must halve the error variance on the
    left and leave the right alone."""
    gen = torch.Generator().manual_seed(0)
    truth = torch.rand(1, 3, 16, 16, generator=gen).repeat(2, 1, 1, 1)
    truth[1, :, :, 8:] = torch.rand(3, 16, 8, generator=gen)
    noise = torch.randn(2, 3, 16, 16, generator=gen) * 0.1
    noise -= F.interpolate(F.avg_pool2d(noise, 4), scale_factor=4)  # zero mean on every 4x4 block
    recon, pool = truth + noise, torch.nn.AvgPool2d(4)
    z = pool(truth)
    weights = fusion_weights(recon, pool, z, torch.ones_like(z, dtype=torch.bool), [[0, 1]], 2.0)
    fused, share = apply_fusion(recon, [[0, 1]], weights)
    left, right = (slice(None), slice(None), slice(None), slice(0, 4)), (..., slice(12, 16))
    err = (fused - truth) ** 2
    assert err[left].mean() < 0.6 * (noise ** 2)[left].mean()
    assert torch.allclose(fused[right], recon[right])
    assert 0.3 < float(share.min()) and float(share.max()) < 0.8
    maps = residual_maps(torch.zeros(2, 5), torch.ones(2, 5), torch.ones(2, 5, dtype=torch.bool))
    assert maps.shape == (2, 2, 1, 1, 1) and torch.allclose(maps, torch.ones_like(maps))


def make_recording(tmp: Path, frames: int = 2) -> tuple[Path, Path]:
    """A recording of a lenet head's features for random frames, and their truth folder."""
    from splitleak.recording import RecordingWriter
    from splitleak.video import frame_name, load_png, save_png

    model = build_split_model("lenet", "conv1", size=SIZE)
    rec, truth = tmp / "rec", tmp / "truth"
    rng = np.random.default_rng(0)
    with RecordingWriter(rec, {}) as writer:
        for seq in range(frames):
            save_png(truth / frame_name("cam0", seq), rng.uniform(0, 1, (3, SIZE, SIZE)).astype(np.float32))
            x = torch.from_numpy(load_png(truth / frame_name("cam0", seq)))[None]
            meta = {"stream_id": "cam0", "seq": str(seq), "capture_ts": 0.0, "model_id": model.name,
                    "split_point": model.split, "weights": model.weights, "input_size": model.size,
                    "num_classes": model.num_classes, "codec": {"name": "fp32"}}
            with torch.no_grad():
                writer.append("frame", meta, {"features": model.head(x).numpy()})
    return rec, truth


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["dmb", "dmb-multi"])
def test_run_attack_with_a_prior_folder(tmp_path: Path, prior, attack: str) -> None:
    from adversary.priors.io import save_prior
    from adversary.runner.run import run_attack
    from splitleak.video import frame_name

    folder = save_prior(prior, tmp_path / "prior")
    rec, truth = make_recording(tmp_path)
    out = tmp_path / "out"
    m = run_attack(str(rec), attack, str(out), truth=str(truth), iterations=2, options={"sampler_steps": "2"},
                   prior=str(folder), progress=False)
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(m))
    assert [(f["stream"], f["seq"]) for f in m["frames"]] == [("cam0", 0), ("cam0", 1)]
    assert all(f["psnr"] is not None and f["feature_loss"] is not None for f in m["frames"])
    assert m["config"]["prior"] == str(folder) and m["config"]["attack_config"]["sampler"]["steps"] == 2
    assert m["config"]["iterations"] == 2 and m["config"]["attack_run"]["adam_steps"]
    assert sorted(p.name for p in out.glob("cam0_*.png")) == [frame_name("cam0", s) for s in range(2)]


def test_prior_required_and_refused(tmp_path: Path) -> None:
    from adversary.runner.run import run_attack

    rec, _ = make_recording(tmp_path, frames=1)
    with pytest.raises(SplitleakError, match="needs a diffusion prior"):
        run_attack(str(rec), "dmb", str(tmp_path / "out"), iterations=1, progress=False)
    with pytest.raises(SplitleakError, match="takes no prior"):
        run_attack(str(rec), "do", str(tmp_path / "out"), iterations=1, progress=False, prior=str(tmp_path))
    with pytest.raises(SplitleakError, match="no such prior folder"):
        run_attack(str(rec), "db", str(tmp_path / "out"), iterations=1, progress=False,
                   prior=str(tmp_path / "missing"))


def test_screen_phase_draws_candidates_grouped_per_set_and_keeps_each_frames_best(prior) -> None:
    from adversary.feature.phases import Screen, Unroll

    z, case = head_case("lenet", prior, frames=3)
    fit = MultiFrameDiffusionBased(lambda_c=1.0, fuse=0.0, **FAST).open_fit(z, case, prior)
    fit.groups, fit.steps = [[0, 1], [2]], 2
    seen = []

    def draw(n, groups):
        seen.append((n, groups))
        return torch.randn((n, *prior.latent_shape), generator=torch.Generator().manual_seed(0))

    v0 = draw(3, fit.groups)
    picked = Screen(2, Unroll(0.1, "off"))(fit, v0.clone(), (1, 2), draw)
    # 2 candidates per frame, tied within their own candidate set
    assert seen[-1] == (6, [[0, 1], [2], [3, 4], [5]]) and picked.shape == v0.shape
    assert fit.plan_run == [(1, 2)] and "tie" in fit.trace
    assert torch.allclose(picked.flatten(1).mean(1), torch.zeros(3), atol=1e-5)  # normalised latents


def test_fusion_phase_restarts_the_frames_it_fused_from_their_fused_image(prior) -> None:
    from adversary.feature.fusion import Fusion

    z, case = head_case("resnet18", prior, frames=1)
    z = z.repeat(3, 1, 1, 1)  # one frame seen three times: a huge threshold accepts every neighbour
    fit = MultiFrameDiffusionBased(**FAST).open_fit(z, case, prior)
    fit.groups = [[0, 1, 2]]
    images = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    fit.best.update(torch.ones(3), images)
    latent = prior.encode(images)
    start = Fusion(1e6).before_refine(fit, latent.clone())
    assert torch.allclose(start[0], start[1], atol=1e-5) and torch.allclose(start[1], start[2], atol=1e-5)
    assert torch.isinf(fit.best.loss).all()  # the fused starts replace the samples as each frame's best
    assert fit.info["fused_share"] == [1.0, 1.0, 1.0] and fit.fused_weights is not None
    out = Fusion(1e6).finish(fit, images, lambda f, x: x)  # the final fusion, the pixel phase a no-op here
    assert torch.allclose(out, images.mean(0, keepdim=True).expand_as(images), atol=1e-5)
