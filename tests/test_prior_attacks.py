"""Prior-based feature inversion (db, dmb and its guidance variant, the text prior, dmb-multi) on tiny priors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adversary.feature import DecoderBased, DiffusionBased, MultiFrameDiffusionBased, WhiteBoxCase
from adversary.feature.dmb_multi import FUSE_STAGES
from adversary.feature.fusion import apply_fusion, fusion_weights, pair_flows, residual_maps
from adversary.feature.losses import consecutive_groups, group_tie, log_cosh, negentropy, normalise
from adversary.priors.diffusion import make_tiny_prior
from adversary.priors.io import save_prior
from adversary.run import run_attack
from adversary.cli.attack import option
from splitleak.errors import SplitleakError
from splitleak.models import build_split_model
from splitleak.recording import RecordingWriter
from splitleak.video import frame_name, load_png, save_png

SIZE = 32


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


def head_case(name: str, prior, split: str = "conv1", frames: int = 2, seed: int = 0):
    model = build_split_model(name, split, size=SIZE)
    for p in model.head.parameters():
        p.requires_grad_(False)
    x = torch.rand(frames, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        z = model.head(x)
    return z, WhiteBoxCase(model.head, tuple(model.input_shape), prior=prior)


@pytest.mark.parametrize("make,head", [
    (lambda: DecoderBased(iterations=4), "lenet"),
    (lambda: DiffusionBased(iterations=3, steps=2), "resnet18"),
    (lambda: DiffusionBased(iterations=4, steps=2, variant="guidance"), "lenet"),
    (lambda: MultiFrameDiffusionBased(iterations=3, steps=2), "lenet"),
], ids=["db", "dmb", "dmb-guidance", "dmb-multi"])
def test_attack_returns_images_and_lowers_the_feature_loss(prior, make, head: str) -> None:
    z, case = head_case(head, prior)
    attack = make()
    x = attack.reconstruct(z, case)
    assert x.shape == (2, 3, SIZE, SIZE) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    trace = attack.trace["feature"]
    assert attack.last_loss.shape == (2,) and float(attack.last_loss.mean()) < trace[0]
    if getattr(attack, "variant", "unroll") == "unroll":
        assert trace[-1] < trace[0]  # the final pass scores the final latent


@pytest.mark.slow
def test_dmb_resizes_to_the_head_and_is_repeatable() -> None:
    prior = make_tiny_prior(16)
    z, case = head_case("lenet", prior)
    a, b = DiffusionBased(iterations=2, steps=2), DiffusionBased(iterations=2, steps=2)
    x = a.reconstruct(z, case)
    assert x.shape == (2, 3, SIZE, SIZE)
    assert torch.equal(x, b.reconstruct(z, case))


@pytest.mark.slow
def test_text_prior_conditions_the_sampler_and_adds_negentropy() -> None:
    prior = make_tiny_prior(SIZE, conditional=True)
    z, case = head_case("lenet", prior)
    text = "a street with bikes"
    with_text, without = DiffusionBased(iterations=2, steps=2, text=text), DiffusionBased(iterations=2, steps=2)
    cond, empty = with_text.condition(prior), without.condition(prior)
    assert not torch.equal(cond, empty)
    v = torch.randn(1, *prior.latent_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.allclose(prior.sample(v, steps=2, text=cond), prior.sample(v, steps=2, text=empty))
    with_text.reconstruct(z, case)
    without.reconstruct(z, case)
    assert "txt" in with_text.trace and "txt" not in without.trace
    assert all(t < 0 for t in with_text.trace["txt"])
    assert with_text.config()["text"] == text
    with pytest.raises(SplitleakError, match="text-conditioned"):
        DiffusionBased(iterations=1, steps=1, text=text).reconstruct(*head_case("lenet", make_tiny_prior(SIZE)))


def test_negentropy_and_helpers() -> None:
    assert torch.allclose(negentropy(torch.zeros(2, 5)), torch.zeros(2))
    ones = torch.ones(1, 4)
    assert torch.allclose(negentropy(ones, 2.0), -(2 / 4) * torch.log(torch.cosh(torch.tensor(2.0))))
    assert torch.isfinite(log_cosh(torch.tensor([1e4, -1e4]))).all()
    v = normalise(torch.randn(3, 4, 5, 5) * 7 + 2)
    assert torch.allclose(v.flatten(1).mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(v.flatten(1).std(1), torch.ones(3), atol=1e-4)
    with pytest.raises(SplitleakError, match="alpha"):
        DiffusionBased(alpha=3.0)


def test_consecutive_groups_and_tie() -> None:
    frames = [("a", 1), ("a", 2), ("b", 1), ("a", 4), ("a", 3), ("b", 3), ("a", 5)]
    assert consecutive_groups(frames, 3) == [[0, 1, 4], [3, 6], [2], [5]]
    assert consecutive_groups(frames, 1) == [[0], [1], [4], [3], [6], [2], [5]]
    v = torch.tensor([[1.0, 1.0], [3.0, 3.0], [5.0, 5.0]])
    assert torch.allclose(group_tie(v, [[0, 1], [2]]), torch.tensor([1.0, 1.0, 0.0]))


@pytest.mark.slow
def test_dmb_multi_ties_latents(prior) -> None:
    z, case = head_case("lenet", prior, frames=3)
    case.frames = (("cam0", 4), ("cam0", 5), ("cam0", 6))

    def spread(lambda_c: float) -> float:
        attack = MultiFrameDiffusionBased(iterations=4, steps=2, lambda_c=lambda_c, shared_init=False,
                                          shared_phase=0.0)
        attack.reconstruct(z, case)
        assert attack.groups == [[0, 1, 2]]
        return float(group_tie(attack.last_latents, attack.groups).mean())

    assert spread(200.0) < 0.9 * spread(0.0)
    shared = MultiFrameDiffusionBased(iterations=1, steps=1, window=2, shared_init=True)
    shared.groups = shared.frame_groups(3, case)
    assert shared.groups == [[0, 1], [2]]
    v = shared.initial_noise(3, prior, case)
    assert torch.equal(v[0], v[1]) and not torch.equal(v[0], v[2])


@pytest.mark.slow
def test_dmb_multi_shared_phase_spends_the_per_frame_budget_on_one_latent_per_group(prior) -> None:
    z, case = head_case("lenet", prior, frames=3)
    case.frames = (("cam0", 4), ("cam0", 5), ("cam0", 9))  # groups [0, 1] and [2]
    only_shared = MultiFrameDiffusionBased(iterations=4, steps=1, shared_phase=1.0, shared_init=False)
    x = only_shared.reconstruct(z, case)
    assert only_shared.phase_iterations == (6, 0)  # 4 sampler runs per frame x 3 frames / 2 groups
    assert len(only_shared.trace["feature"]) == 6 + 1
    v = only_shared.last_latents
    assert torch.equal(v[0], v[1]) and not torch.equal(v[0], v[2])
    assert x.shape == (3, 3, SIZE, SIZE) and torch.isfinite(only_shared.last_loss).all()
    half = MultiFrameDiffusionBased(iterations=4, steps=1, shared_phase=0.5)
    half.reconstruct(z, case)
    assert half.phase_iterations == (3, 2) and len(half.trace["feature"]) == (3 + 1) + (2 + 1)
    with pytest.raises(SplitleakError, match="shared_phase"):
        MultiFrameDiffusionBased(shared_phase=1.5)


@pytest.mark.slow
def test_dmb_coarse_phase_buys_adam_steps_at_the_same_sampler_budget(prior) -> None:
    z, case = head_case("lenet", prior)
    calls = []
    sample = prior.sample

    def counting(v, steps=20, **kwargs):
        calls.append(kwargs.get("last") or steps)
        return sample(v, steps=steps, **kwargs)

    attack = DiffusionBased(iterations=4, steps=4, coarse_steps=2, coarse_share=0.5, checkpoint=False,
                            refine_share=0.0, restarts=1)
    prior.sample = counting
    try:
        x = attack.reconstruct(z, case)
    finally:
        del prior.sample
    assert attack.adam_steps == [(2, 4), (4, 2)]  # half of 4 K=4 runs is 4 two-step runs
    assert calls == [2] * 4 + [4] * 2 + [4]  # the final pass scores through the full sampler
    assert sum(calls[:-1]) == 4 * 4 and len(attack.trace["feature"]) == 7
    assert x.shape == (2, 3, SIZE, SIZE) and attack.config()["adam_steps"] == [(2, 4), (4, 2)]
    assert DiffusionBased(steps=4, coarse_steps=0, refine_share=0).step_plan(5) == [(4, 5)]  # Algorithm 1
    assert DiffusionBased(steps=2, coarse_steps=2, refine_share=0).step_plan(5) == [(2, 5)]
    assert DiffusionBased(steps=10, coarse_steps=2, coarse_share=1.0, refine_share=0).step_plan(3) == [(2, 15)]
    # a refine share of the budget buys `steps` latent steps per sampler run, the coarse share splits the rest
    assert DiffusionBased(steps=10, coarse_steps=2, refine_share=0.2).step_plan(100) == [(2, 200), (10, 40), (0, 200)]
    z3, case3 = head_case("lenet", prior, frames=3)
    case3.frames = (("cam0", 4), ("cam0", 5), ("cam0", 9))  # groups [0, 1] and [2]
    for tied, plan in ((0, [(2, 4), (4, 1), (4, 2)]), (1, [(2, 4), (4, 1), (2, 2), (4, 1)])):
        multi = MultiFrameDiffusionBased(iterations=4, steps=4, coarse_steps=2, coarse_share=0.5,
                                         shared_phase=0.5, checkpoint=False, coarse_tied=tied, refine_share=0)
        multi.reconstruct(z3, case3)
        assert multi.phase_iterations == (3, 2) and multi.adam_steps == plan
    multi = MultiFrameDiffusionBased(iterations=4, steps=4, coarse_steps=2, coarse_share=0.5, shared_phase=0.5,
                                     checkpoint=False, coarse_tied=0, refine_share=0.5)
    multi.reconstruct(z3, case3)  # the shared phase never refines; the per-frame phase ends with it
    assert multi.adam_steps == [(2, 4), (4, 1), (4, 1), (0, 4)]
    with pytest.raises(SplitleakError, match="coarse"):
        DiffusionBased(coarse_share=1.5)
    with pytest.raises(SplitleakError, match="refine_share"):
        DiffusionBased(refine_share=1.0)
    with pytest.raises(SplitleakError, match="coarse"):
        MultiFrameDiffusionBased(coarse_steps=-1)


def test_dmb_restarts_screen_latents_in_the_coarse_phase(prior, monkeypatch) -> None:
    z, case = head_case("lenet", prior)
    attack = DiffusionBased(iterations=4, steps=4, coarse_steps=2, coarse_share=0.5, checkpoint=False,
                            refine_share=0.0, pixel_steps=0, restarts=3)
    calls, unrolled = [], attack._unrolled

    def spy(v0, z_, *args, **kwargs):
        start = v0.detach().clone()  # Adam moves v0 in place
        loss = unrolled(v0, z_, *args, **kwargs)
        calls.append((start, kwargs["plan"], loss.clone(), attack.last_latents.clone()))
        return loss

    monkeypatch.setattr(attack, "_unrolled", spy)
    x = attack.reconstruct(z, case)
    (start1, plan1, loss1, last1), (start2, plan2, _, _) = calls
    assert start1.shape[0] == 6 and plan1 == [(2, 4)]  # the coarse phase on 3 latents per frame, as one batch
    assert start2.shape[0] == 2 and plan2 == [(4, 2)]  # the rest of the plan on one latent per frame
    assert torch.equal(start1[:2], attack.initial_noise(2, prior, case))  # the first candidates: the usual start
    pick = loss1.view(3, 2).argmin(0)  # each frame keeps the candidate whose K-step image fits best
    assert torch.equal(start2, last1.view(3, 2, *last1.shape[1:])[pick, torch.arange(2)])
    assert x.shape == (2, 3, SIZE, SIZE) and attack.config()["restarts"] == 3
    without_coarse = DiffusionBased(iterations=2, steps=2, coarse_steps=0, refine_share=0.0, pixel_steps=0,
                                    checkpoint=False, restarts=3)  # nothing to screen in: restarts do nothing
    plain = DiffusionBased(iterations=2, steps=2, coarse_steps=0, refine_share=0.0, pixel_steps=0, checkpoint=False)
    assert torch.equal(without_coarse.reconstruct(z, case), plain.reconstruct(z, case))
    with pytest.raises(SplitleakError, match="restarts"):
        DiffusionBased(restarts=0)


@pytest.mark.parametrize("cls", [DiffusionBased, MultiFrameDiffusionBased], ids=["dmb", "dmb-multi"])
def test_dmb_init_inverter_starts_from_the_inverters_guess(cls, prior, monkeypatch, tmp_path: Path) -> None:
    z, case = head_case("lenet", prior)

    def make() -> DiffusionBased:
        attack = cls(iterations=2, steps=2, coarse_steps=0, refine_share=0.0, pixel_steps=0,
                     checkpoint=False, init="inverter", query_source="synthetic:48x40", query_frames=12,
                     cache_dir=str(tmp_path))
        attack.guide.iterations, attack.guide.width, attack.guide.progress = 3, 8, False  # a tiny inverter
        return attack

    attack, starts = make(), []
    optimise = attack.optimise
    monkeypatch.setattr(attack, "optimise", lambda v0, *a: (starts.append(v0.detach().clone()), optimise(v0, *a)))
    x = attack.reconstruct(z, case)
    (model,) = attack.guide._inverters.values()
    with torch.no_grad():
        guess = prior.invert(model(z), steps=2)  # the clean latent it guesses, DDIM-inverted to the start
    assert torch.allclose(starts[0], guess) and not torch.allclose(starts[0], attack.initial_noise(2, prior, case))
    assert x.shape == (2, 3, SIZE, SIZE) and torch.isfinite(x).all()
    info = attack.config()["inverter"]
    assert info["query_source"] == "synthetic:48x40" and info["training"]["cached"] is False
    again = make()  # a second attack on the same head finds the inverter on disk
    again.reconstruct(z, case)
    assert again.config()["inverter"]["training"]["cached"] is True
    assert cls().config()["init"] == "noise" and cls().guide is None
    with pytest.raises(SplitleakError, match="unknown init"):
        cls(init="zeros")


def test_dmb_multi_restarts_group_and_tie_each_candidate_set(prior, monkeypatch) -> None:
    z3, case3 = head_case("lenet", prior, frames=3)
    case3.frames = (("cam0", 4), ("cam0", 5), ("cam0", 9))  # groups [0, 1] and [2]
    multi = MultiFrameDiffusionBased(iterations=4, steps=4, coarse_steps=2, coarse_share=0.5, checkpoint=False,
                                     refine_share=0.0, pixel_steps=0, lambda_c=1.0, restarts=2, fuse=0.0)
    seen, terms = [], multi.latent_terms

    def spy(v_n, case):
        seen.append((v_n.shape[0], [list(g) for g in multi.groups]))
        return terms(v_n, case)

    monkeypatch.setattr(multi, "latent_terms", spy)
    multi.reconstruct(z3, case3)
    assert seen[0] == (6, [[0, 1], [2], [3, 4], [5]])  # screening: 2 candidates per frame, tied within their set
    assert seen[-1] == (3, [[0, 1], [2]]) and multi.adam_steps == [(2, 4), (4, 2)]


def test_dmb_refines_the_sampled_latent_after_the_sampler(prior) -> None:
    z, case = head_case("lenet", prior)
    calls = []
    sample = prior.sample
    prior.sample = lambda v, steps=20, **kw: calls.append(steps) or sample(v, steps=steps, **kw)
    try:
        attack = DiffusionBased(iterations=5, steps=4, coarse_steps=0, refine_share=0.4, checkpoint=False, lr=0.1)
        x = attack.reconstruct(z, case)
    finally:
        del prior.sample
    assert attack.adam_steps == [(4, 3), (0, 8)]  # 2 of 5 sampler runs buy 2 x 4 latent steps
    assert calls == [4] * 4  # 3 Adam steps on v and the final scoring pass; the refinement samples nothing
    feature = attack.trace["feature"]
    assert len(feature) == 4 + 9 and feature[-1] < feature[3]  # refining lowered the sampled image's loss
    assert x.shape == (2, 3, SIZE, SIZE) and attack.config()["refine_share"] == 0.4


def test_dmb_pixel_phase_fits_the_features_past_the_prior(prior, monkeypatch) -> None:
    z, case = head_case("resnet18", prior)
    calls = []
    sample, decode = prior.sample, prior.decode
    monkeypatch.setattr(prior, "sample", lambda *a, **kw: calls.append("sample") or sample(*a, **kw))
    monkeypatch.setattr(prior, "decode", lambda *a, **kw: calls.append("decode") or decode(*a, **kw))
    plain = DiffusionBased(iterations=2, steps=2, pixel_steps=0)
    x_plain, plain_calls = plain.reconstruct(z, case), list(calls)
    calls.clear()
    polished = DiffusionBased(iterations=2, steps=2, pixel_steps=60, pixel_lr=0.05)
    x = polished.reconstruct(z, case)
    assert calls == plain_calls  # the pixel phase samples and decodes nothing
    assert x.shape == x_plain.shape and float(x.min()) >= 0 and float(x.max()) <= 1
    assert (polished.last_loss < 0.5 * plain.last_loss).all()  # DO steps from the prior's image fit the features
    assert polished.config()["pixel_steps"] == 60 and polished.config()["pixel_lr"] == 0.05
    with pytest.raises(SplitleakError, match="pixel_steps"):
        DiffusionBased(pixel_steps=-1)
    with pytest.raises(SplitleakError, match="pixel_lr"):
        MultiFrameDiffusionBased(pixel_lr=0)


def test_db_needs_a_latent_prior() -> None:
    z, case = head_case("lenet", make_tiny_prior(SIZE, latent=False))
    with pytest.raises(SplitleakError, match="VAE"):
        DecoderBased(iterations=1).reconstruct(z, case)
    x = DiffusionBased(iterations=1, steps=1).reconstruct(z, case)  # a pixel prior works for dmb
    assert x.shape == (2, 3, SIZE, SIZE)


def make_recording(tmp: Path, frames: int = 2) -> tuple[Path, Path]:
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


@pytest.mark.parametrize("attack", ["dmb", "dmb-multi"])
def test_run_attack_with_a_prior_folder(tmp_path: Path, prior, attack: str) -> None:
    folder = save_prior(prior, tmp_path / "prior")
    rec, truth = make_recording(tmp_path)
    out = tmp_path / "out"
    m = run_attack(str(rec), attack, str(out), truth=str(truth), iterations=2, options={"steps": 2},
                   prior=str(folder), progress=False)
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(m))
    assert [(f["stream"], f["seq"]) for f in m["frames"]] == [("cam0", 0), ("cam0", 1)]
    assert all(f["psnr"] is not None and f["feature_loss"] is not None for f in m["frames"])
    assert m["config"]["prior"] == str(folder) and m["config"]["attack_config"]["steps"] == 2
    assert sorted(p.name for p in out.glob("cam0_*.png")) == [frame_name("cam0", s) for s in range(2)]


def test_prior_required_and_refused(tmp_path: Path, prior) -> None:
    rec, _ = make_recording(tmp_path, frames=1)
    with pytest.raises(SplitleakError, match="needs a diffusion prior"):
        run_attack(str(rec), "dmb", str(tmp_path / "out"), iterations=1, progress=False)
    with pytest.raises(SplitleakError, match="takes no prior"):
        run_attack(str(rec), "do", str(tmp_path / "out"), iterations=1, progress=False, prior=str(tmp_path))
    with pytest.raises(SplitleakError, match="no such prior folder"):
        run_attack(str(rec), "db", str(tmp_path / "out"), iterations=1, progress=False,
                   prior=str(tmp_path / "missing"))
    z, case = head_case("lenet", None)
    for attack in (DecoderBased(iterations=1), DiffusionBased(iterations=1), MultiFrameDiffusionBased(iterations=1)):
        with pytest.raises(SplitleakError, match="needs a diffusion prior"):
            attack.reconstruct(z, case)
    with pytest.raises(SplitleakError, match="variant"):
        DiffusionBased(variant="fast")
    assert option("variant=guidance") == ("variant", "guidance") and option("steps=5") == ("steps", 5)


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
    auto, forced = DiffusionBased(iterations=1, steps=2), DiffusionBased(iterations=1, steps=2, checkpoint=1)
    auto.reconstruct(z, case)
    forced.reconstruct(z, case)
    assert auto.checkpointed is False and forced.checkpointed is True  # a tiny prior on CPU: no recomputation


def test_feature_benchmark_selects_rows() -> None:
    from benchmarks.feature_inversion import options, plan, selected, settings
    from benchmarks.footage import PUBLIC

    s = settings(quick=False)
    runs = plan(s)
    multi = [r for r in runs if selected(r, "multi")]
    assert {(r.frames, r.method, r.variant) for r in multi} == {("single", "dmb", "window"), ("multi", "dmb", "")}
    assert len(multi) == 2 * len(s.multi_heads)
    assert {r.frame_count(s) for r in multi} == {s.multi_frames} and s.multi_frames > s.frames
    assert {r.frame_count(s) for r in runs if r not in multi and r.setting == "white-box"} == {s.frames}
    black = [r for r in runs if selected(r, "black-box")]
    assert black and all(r.setting == "black-box" and r.frame_count(s) == s.bb_frames for r in black)
    assert len(black) == 8 * s.bb_seeds * len(s.bb_heads) and {r.seed for r in black} == set(range(s.bb_seeds))
    assert {(r.method, r.attack) for r in black if r.frames == "multi"} == {("do", "bb-do"), ("dmb", "bb-dmb")}
    public = [r for r in black if r.queries == "public"]  # single frames, bb-do / bb-db / bb-dmb, queried elsewhere
    assert len(public) == 3 * s.bb_seeds * len(s.bb_heads) and {r.frames for r in public} == {"single"}
    _, scene_opts = options(black[0], s, Path("cache"), 175)
    _, public_opts = options(public[0], s, Path("cache"), 175)
    assert scene_opts["query_source"] == "sample:bikes" and scene_opts["query_frames"] == 175
    assert public_opts["query_source"] == ",".join(PUBLIC) and public_opts["query_frames"] * len(PUBLIC) >= 175
    assert len({r.folder for r in black}) == len(black)  # each seed's inverters and images kept apart
    assert sum(selected(r, "all") for r in runs) == len(runs)
    assert any(r.variant == "alg1" for r in runs)
    init = [r for r in runs if selected(r, "init")]  # DMB from draws and init=inverter (the attacker's footage)
    assert len(init) == 2 * len(s.heads) and {(r.method, r.variant) for r in init} == {("dmb", ""), ("dmb", "init")}
    assert all(r.frame_count(s) == s.frames for r in init)
    _, init_opts = options(next(r for r in init if r.variant), s, Path("cache"), 175)
    assert init_opts["init"] == "inverter" and init_opts["query_source"] == "sample:bikes"
    single = [r for r in runs if selected(r, "single")]  # white-box single-frame rows, no multi-frame comparison
    assert single and all(r.setting == "white-box" and r.frames == "single" for r in single)
    assert all(r not in multi and selected(r, "white-box") for r in single)
    assert len(single) < sum(selected(r, "white-box") for r in runs)


def test_feature_benchmark_averages_black_box_rows_over_seeds() -> None:
    from benchmarks.feature_inversion import summary, settings

    s = settings(quick=False)
    head = s.bb_heads[0]
    base = dict(zip(("model", "split", "victim"), head), setting="black-box", frames="single", variant=None,
                n_frames=s.bb_frames)
    figures = {("do", 0): (20.0, 0.50), ("dmb", 0): (21.0, 0.55), ("db", 0): (20.5, 0.52),
               ("do", 1): (22.0, 0.60), ("dmb", 1): (21.5, 0.62), ("db", 1): (21.0, 0.58)}
    rows = [{**base, "method": m, "seed": k, "psnr": p, "ssim": q} for (m, k), (p, q) in figures.items()]
    (black,) = summary(rows, [], s)["bb_dmb_vs_bb_do"]
    assert black["seeds"] == [0, 1] and black["bb_do"] == pytest.approx(21.0) and black["bb_dmb"] == pytest.approx(21.25)
    assert black["gain_db"] == pytest.approx(0.25) and black["ssim_gain"] == pytest.approx(0.035)
    assert black["bb_db"] == pytest.approx(20.75) and black["seeds_won"] == 1  # seed 1: more SSIM, less PSNR
    public = [{**r, "queries": "public", "psnr": r["psnr"] - 3 * (r["method"] == "do")} for r in rows]
    summ = summary(rows + public, [], s)
    scene, other = summ["bb_dmb_vs_bb_do"]  # the settings are averaged apart
    assert (scene["queries"], other["queries"]) == ("scene", "public") and scene["gain_db"] == pytest.approx(0.25)
    assert other["gain_db"] == pytest.approx(3.25) and other["seeds_won"] == 2
    assert summ["bb_dmb_mean_gain_db"] == pytest.approx(0.25) and summ["bb_dmb_mean_gain_db_public"] == pytest.approx(3.25)


def test_feature_benchmark_gives_do_and_db_the_wall_time_dmb_took() -> None:
    from benchmarks.feature_inversion import Run, plan, settings, time_matched

    s = settings(quick=False)
    head = s.heads[0]
    timed = [r for r in plan(s) if r.variant == "time"]
    assert {r.head for r in timed} == set(s.heads) and {r.method for r in timed} == {"do", "db"}
    order = [(r.method, r.variant) for r in plan(s) if r.head == head]
    for method in ("do", "db"):
        assert order.index((method, "time")) > max(order.index((method, "")), order.index(("dmb", "")))
    row = dict(zip(("model", "split", "victim"), head), setting="white-box", frames="single", variant=None)
    rows = [{**row, "method": "db", "seconds_per_frame": 3.0}, {**row, "method": "dmb", "seconds_per_frame": 24.0},
            {**row, "method": "do", "seconds_per_frame": 0.5}]
    assert time_matched(Run(head, "db", "white-box", "single", "time"), rows, s) == 8 * s.iterations
    assert time_matched(Run(head, "do", "white-box", "single", "time"), rows, s) == 48 * s.iterations
    with pytest.raises(SystemExit, match="time-matched"):
        time_matched(Run(head, "db", "white-box", "single", "time"), rows[:1], s)


def test_multi_frame_benchmark_names_its_variants() -> None:
    from adversary.feature.dmb_multi import ALGORITHM_2
    from adversary.feature.losses import LAMBDA_C
    from benchmarks.multi_frame import head_spec, variant

    assert variant("single") == ("dmb", {}, None)
    assert variant("single170") == ("dmb", {}, 170)
    assert variant("phase50")[1]["shared_phase"] == 0.5 and variant("phase50")[1]["shared_init"] == 1
    assert variant("default") == ("dmb-multi", {}, None)
    _, opts, _ = variant("phase50/coarse_steps=0/coarse_share=0.8")
    assert opts["shared_phase"] == 0.5 and opts["coarse_steps"] == 0 and opts["coarse_share"] == 0.8
    assert variant("alg2/lambda_c=1") == ("dmb-multi", {**ALGORITHM_2, "lambda_c": 1}, None)
    assert variant("alg2") == ("dmb-multi", ALGORITHM_2, None)  # FIXED is not mutated
    assert variant("alg2")[1]["lambda_c"] == LAMBDA_C and variant("alg2")[1]["fuse"] == 0
    assert variant("default/fuse_order=before") == ("dmb-multi", {"fuse_order": "before"}, None)
    for bad in ("single/steps", "single/=3", "single/steps="):
        with pytest.raises(SystemExit, match="KEY=NUMBER"):
            variant(bad)
    assert head_spec("resnet18:layer3:trained") == ("resnet18", "layer3", "trained")
    for bad in ("phaseX", "triple", "single0"):
        with pytest.raises(SystemExit, match="unknown variant"):
            variant(bad)
    with pytest.raises(SystemExit, match="MODEL:SPLIT"):
        head_spec("resnet18:layer3")


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


def test_aligned_fusion_follows_motion() -> None:
    """Frame 1 is frame 0 moved 3 pixels right (the view pans left); each reconstruction is the truth
    plus independent noise. The flow between the reconstructions must find the move, and fusing the
    warped neighbour must accept more of it and err less than fusing it as it is (the head, 4x4
    average pooling, rejects the unwarped neighbour where the scene moved)."""
    gen = torch.Generator().manual_seed(0)
    scene = F.interpolate(torch.rand(1, 3, 8, 12, generator=gen), size=(40, 60), mode="bicubic",
                          align_corners=False).clamp(0, 1)
    truth = torch.cat([scene[..., 8:48], scene[..., 5:45]])  # (2, 3, 40, 40): the view pans 3 pixels
    noise = torch.randn(2, 3, 40, 40, generator=gen) * 0.03
    recon, pool = truth + noise, torch.nn.AvgPool2d(4)
    z, groups = pool(truth), [[0, 1]]
    flows = pair_flows(recon)
    inner = (slice(8, 32), slice(8, 32))
    assert abs(float(flows[1, 0][inner][..., 0].median()) - 3) < 0.5  # frame 0 at p shows what 1 shows at p + 3
    assert float(flows[1, 0][inner][..., 1].abs().median()) < 0.5 and not flows[0, 0].any()
    mask = torch.ones_like(z, dtype=torch.bool)
    out = {}
    for align in (False, True):
        fusions = fusion_weights(recon, pool, z, mask, groups, 2.0, align=align)
        assert (fusions[0].flows is not None) == align
        fused, share = apply_fusion(recon, groups, fusions)
        out[align] = float(((fused - truth)[..., 8:32, 8:32] ** 2).mean()), float(share.mean())
    assert out[True][1] > out[False][1] and out[True][0] < out[False][0]
    assert out[True][0] < 0.8 * float((noise[..., 8:32, 8:32] ** 2).mean())


def test_dmb_multi_frames_that_accept_nothing_refine_as_single_frame_dmb(prior) -> None:
    z, case = head_case("resnet18", prior, frames=3)  # three different frames
    case.frames = (("cam0", 1), ("cam0", 2), ("cam0", 3))
    options = {"iterations": 4, "steps": 1, "refine_share": 0.5, "pixel_steps": 0}
    multi = MultiFrameDiffusionBased(fuse=1e-9, fuse_stage=2, **options)  # accepts no neighbour's pixel
    x = multi.reconstruct(z, case)
    assert multi.fused_before and multi.fused_share == [0.0, 0.0, 0.0]
    assert torch.equal(x, DiffusionBased(**options).reconstruct(z, case))


def test_dmb_multi_fuse_reports_what_it_accepted(prior) -> None:
    z, case = head_case("resnet18", prior, frames=1)
    z = z.repeat(3, 1, 1, 1)  # one frame seen three times: every neighbour explains it
    case.frames = (("cam0", 1), ("cam0", 2), ("cam0", 3))
    plain = MultiFrameDiffusionBased(iterations=2, steps=1, fuse=0.0, pixel_steps=0)
    fused = MultiFrameDiffusionBased(iterations=2, steps=1, fuse=1e6, pixel_steps=0)
    x_plain, x_fused = plain.reconstruct(z, case), fused.reconstruct(z, case)
    assert torch.equal(x_plain, DiffusionBased(iterations=2, steps=1, pixel_steps=0).reconstruct(z, case))  # untied = single
    assert plain.fused_share is None and fused.fused_share == [1.0, 1.0, 1.0]
    assert torch.allclose(x_fused, x_plain.mean(0, keepdim=True).expand_as(x_plain), atol=1e-5)
    assert torch.isfinite(fused.last_loss).all() and fused.config()["fuse"] == 1e6
    aligned = MultiFrameDiffusionBased(iterations=2, steps=1, fuse=1e6, pixel_steps=0, align="flow")
    x_aligned = aligned.reconstruct(z, case)  # each neighbour warped onto the frame, then all accepted
    assert aligned.fused_share == [1.0, 1.0, 1.0] and aligned.config()["align"] == "flow"
    assert torch.isfinite(x_aligned).all() and not torch.allclose(x_aligned, x_fused, atol=1e-5)
    with pytest.raises(SplitleakError, match="fuse"):
        MultiFrameDiffusionBased(fuse=-1)
    with pytest.raises(SplitleakError, match="align"):
        MultiFrameDiffusionBased(align="warp")


@pytest.mark.parametrize("refine_share", [0.0, 0.5], ids=["decided-at-the-end", "decided-on-the-samples"])
def test_dmb_multi_fuses_before_or_after_the_pixel_phase(prior, refine_share) -> None:
    z, case = head_case("resnet18", prior, frames=3)  # three different frames
    case.frames = (("cam0", 1), ("cam0", 2), ("cam0", 3))
    for order in ("after", "before"):
        attack = MultiFrameDiffusionBased(iterations=2, steps=1, fuse=1e6, pixel_steps=5, refine_share=refine_share,
                                          fuse_order=order)
        x = attack.reconstruct(z, case)  # fuse 1e6 accepts every neighbour: fused last, every frame is the mean
        assert attack.fused_before == (refine_share > 0) and attack.fused_share == [1.0, 1.0, 1.0]
        same = torch.allclose(x[0], x[1], atol=1e-5) and torch.allclose(x[1], x[2], atol=1e-5)
        assert same == (order == "after") and attack.config()["fused_after_pixel_phase"] == (order == "after")
    # the acceptance reused from the sampler's images (auto: where the features hold fewer numbers than the image)
    auto = MultiFrameDiffusionBased()
    auto.weights = [None]  # as if fuse_stage 2 had decided one on the sampler's images
    assert auto.sampler_acceptance(torch.zeros(2, 3, 64, 64), torch.zeros(2, 256, 4, 4))  # resnet18 layer3 at 64 px
    assert not auto.sampler_acceptance(torch.zeros(2, 3, 64, 64), torch.zeros(2, 64, 16, 16))  # layer1
    assert not MultiFrameDiffusionBased(accept_on="sampler").sampler_acceptance(  # none decided there
        torch.zeros(2, 3, 64, 64), torch.zeros(2, 256, 4, 4))
    with pytest.raises(SplitleakError, match="accept_on"):
        MultiFrameDiffusionBased(accept_on="never")
    with pytest.raises(SplitleakError, match="fuse_order"):
        MultiFrameDiffusionBased(fuse_order="never")


def spy_on_fusion(attack: MultiFrameDiffusionBased, monkeypatch) -> tuple[list, list]:
    """Lists that collect every acceptance the attack decides and the weights of every fusion it applies."""
    decided, fusions, accept, fuse = [], [], attack.acceptance, attack.fused
    monkeypatch.setattr(attack, "acceptance", lambda *a: decided.append(accept(*a)) or decided[-1])
    monkeypatch.setattr(attack, "fused", lambda x, weights: fusions.append(weights) or fuse(x, weights))
    return decided, fusions


@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 1, 2])
def test_dmb_multi_refinement_starts_from_the_fused_frames_unless_stage_0(prior, monkeypatch, stage) -> None:
    z, case = head_case("resnet18", prior, frames=1)
    z = z.repeat(3, 1, 1, 1)  # one frame seen three times: fusion at 1e6 makes every frame the group's mean
    case.frames = (("cam0", 1), ("cam0", 2), ("cam0", 3))
    attack = MultiFrameDiffusionBased(iterations=2, steps=1, fuse=1e6, refine_share=0.5, fuse_stage=stage,
                                      accept_on="sampler")
    starts, optimise = [], attack.optimise_latent

    def spy(w, z, mask, case, prior, best, steps):
        starts.append((w.clone(), best.loss, steps))
        return optimise(w, z, mask, case, prior, best, steps)

    monkeypatch.setattr(attack, "optimise_latent", spy)
    decided, fusions = spy_on_fusion(attack, monkeypatch)
    x = attack.reconstruct(z, case)
    (w, seen, steps), = starts
    assert steps == 1 and x.shape == (3, 3, SIZE, SIZE) and attack.fused_before == (stage > 0)
    same = torch.allclose(w[0], w[1], atol=1e-6) and torch.allclose(w[1], w[2], atol=1e-6)
    assert same == (stage > 0)
    assert bool(torch.isinf(seen).all()) == (stage > 0)  # the fused starts replace the samples as the best
    # the acceptance is decided once: at the end (stage 0) or on the sampler's images, and stage 2 reuses it
    assert len(decided) == 1 and len(fusions) == (2 if stage == 2 else 1)
    assert all(weights is decided[0] for weights in fusions)
    assert attack.config()["fuse_stage"] == FUSE_STAGES[stage]
    assert attack.config()["final_acceptance_on"] == (None if stage == 1 else "sampler" if stage == 2 else "refined")
    with pytest.raises(SplitleakError, match="fuse_stage"):
        MultiFrameDiffusionBased(fuse_stage=3)


def test_dmb_multi_final_fusion_decided_on_the_refined_images(prior, monkeypatch) -> None:
    z, case = head_case("resnet18", prior, frames=3)
    case.frames = (("cam0", 1), ("cam0", 2), ("cam0", 3))
    attack = MultiFrameDiffusionBased(iterations=2, steps=1, fuse=2.0, refine_share=0.5, pixel_steps=3,
                                      accept_on="refined")
    decided, fusions = spy_on_fusion(attack, monkeypatch)
    x = attack.reconstruct(z, case)
    # one acceptance on the sampler's images (the refinement's start), a second one on the refined images
    assert len(decided) == 2 and len(fusions) == 2 and fusions[0] is decided[0] and fusions[1] is decided[1]
    assert x.shape == (3, 3, SIZE, SIZE) and attack.config()["final_acceptance_on"] == "refined"
    assert attack.config()["fused_after_pixel_phase"] is True


def test_benchmark_frames_must_be_held_out() -> None:
    from benchmarks import footage

    seqs, images = footage.held_out(2, 16, "sample:carphone", start=100)
    assert seqs == [100, 101] and images.shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="held out from 84"):
        footage.held_out(2, 16, "sample:carphone", start=10)  # the victim trained on these
    with pytest.raises(ValueError, match="cannot take"):
        footage.held_out(4, 16, "sample:carphone", start=118)  # past the end


def test_benchmark_prior_must_come_from_the_attackers_footage(tmp_path) -> None:
    from benchmarks import footage
    from benchmarks.feature_inversion import settings

    def prior_folder(name: str, source: str, frames: int):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "prior.json").write_text(json.dumps({"train": {"source": source, "frames": frames},
                                                       "steps": {"vae": 1, "decoder": 2, "unet": 3}}))
        return str(folder)

    ok = prior_folder("ok", footage.CLIP, 100)
    folder, info = footage.benchmark_prior(tmp_path, settings(True), given=ok)
    assert str(folder) == ok and info["given"] and info["steps"]["decoder"] == 2
    with pytest.raises(SystemExit, match="not a train-prior folder"):
        footage.benchmark_prior(tmp_path, settings(True), given=str(tmp_path))
    for name, source, frames in (("other", "sample:carphone", 100), ("held", footage.CLIP, 250)):
        with pytest.raises(SystemExit, match="attacker's footage"):  # would have seen the held-out frames
            footage.benchmark_prior(tmp_path, settings(True), given=prior_folder(name, source, frames))


@pytest.mark.slow
def test_benchmark_prior_with_a_tuned_decoder_derives_from_the_plain_one(tmp_path, same_weights) -> None:
    from adversary.priors import load_prior
    from benchmarks import footage

    tuned, info = footage.cached_prior(tmp_path, 32, 1, 1, 1, decoder_steps=2)
    plain, _ = footage.cached_prior(tmp_path, 32, 1, 1, 1)  # made on the way, and cached
    assert tuned != plain and info["steps"] == {"vae": 1, "decoder": 2, "unet": 1}
    a, b = load_prior(str(plain)), load_prior(str(tuned))
    assert same_weights(a.vae.encoder, b.vae.encoder) and same_weights(a.unet, b.unet)
    assert not same_weights(a.vae.decoder, b.vae.decoder)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([plain.name, tuned.name])


@pytest.mark.slow
def test_feature_benchmark_times_one_dmb_iteration_with_and_without_checkpointing(prior, tmp_path: Path) -> None:
    from benchmarks.feature_inversion import dmb_iteration, settings

    s = settings(quick=True)
    s.size, s.timing_steps, s.timing_iterations, s.timing_repeats = SIZE, 2, 1, 1
    folder = save_prior(prior, tmp_path / "prior")
    image = np.random.default_rng(0).random((3, SIZE, SIZE), dtype=np.float32)
    rows = dmb_iteration(folder, image, s)
    assert [(r["checkpoint"], r["checkpointed"]) for r in rows] == [(True, True), (False, False)]
    # an iteration is one unrolled sampler run: checkpointing recomputes every UNet call in backward
    assert [r["unet_calls_per_iteration"] for r in rows] == [2 * s.timing_steps, s.timing_steps]
    assert all(r["ddim_steps"] == s.timing_steps and r["unrolled_activation_mb_estimate"] > 0 for r in rows)
