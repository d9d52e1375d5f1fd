"""The feature-inversion and multi-frame benchmarks' plumbing: which rows they run, how they summarise,
where their prior and frames come from (no inversion of any length runs here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from adversary.priors.diffusion import make_tiny_prior
from adversary.priors.io import save_prior

SIZE = 32


@pytest.fixture(scope="module")
def prior():
    return make_tiny_prior(SIZE)


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
    from adversary.configs import presets
    from adversary.feature.dmb_multi import MultiConfig
    from benchmarks.multi_frame import head_spec, variant

    paper = dict(presets(MultiConfig)["paper"])
    assert variant("single") == ("dmb", {}, None)
    assert variant("single170") == ("dmb", {}, 170)
    assert variant("default") == ("dmb-multi", {}, None)
    assert variant("alg2") == ("dmb-multi", paper, None) and paper["frames.fuse"] == 0
    assert variant("alg2/lambda_c=1") == ("dmb-multi", {**paper, "lambda_c": "1"}, None)
    assert variant("alg2") == ("dmb-multi", paper, None)  # FIXED is not mutated
    assert variant("default/fuse=3.0") == ("dmb-multi", {"fuse": "3.0"}, None)  # the attack parses the text
    for bad in ("single/steps", "single/=3", "single/steps="):
        with pytest.raises(SystemExit, match="KEY=VALUE"):
            variant(bad)
    assert head_spec("resnet18:layer3:trained") == ("resnet18", "layer3", "trained")
    for bad in ("phase50", "triple", "single0"):
        with pytest.raises(SystemExit, match="unknown variant"):
            variant(bad)
    with pytest.raises(SystemExit, match="MODEL:SPLIT"):
        head_spec("resnet18:layer3")


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
