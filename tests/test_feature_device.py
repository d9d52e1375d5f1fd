"""The feature attacks and priors on a device: no host read-back inside their loops (counted on the CPU
by adversary.sync_count, on CUDA by torch's sync debug mode), the DDIM sampler against diffusers' own
step, the prior loading quietly; and, where a CUDA device is present (`pytest -m gpu`), tiny runs there
that agree with the CPU's."""

from __future__ import annotations

import warnings

import pytest
import torch

from adversary.feature import DecoderBased, DiffusionBased, DirectOptimisation, WhiteBoxCase
from adversary.feature.fit import Trace
from adversary.priors.diffusion import make_tiny_prior
from adversary.sync_count import count_host_syncs
from splitleak.models import build_split_model

SIZE = 32
TINY_DMB = {"sampler_steps": 2, "pixel_steps": 3, "restarts": 2}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prior():
    return make_tiny_prior(SIZE)


def case_on(device: str, prior=None, frames: int = 2):
    model = build_split_model("lenet", "conv1", size=SIZE, device=device)
    for p in model.head.parameters():
        p.requires_grad_(False)
    x = torch.rand(frames, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3)).to(device)
    with torch.no_grad():
        z = model.head(x)
    if prior is not None:
        prior.to(device)
    return z, WhiteBoxCase(model.head, tuple(model.input_shape), torch.device(device), prior=prior)


def test_count_host_syncs_counts_read_backs_but_not_torchs_own_bookkeeping() -> None:
    def reads(t):
        return t.sum().item(), float(t.mean()), t.tolist(), bool(t.any()), t.cpu(), t.numpy()

    _, count = count_host_syncs(reads, torch.ones(3))
    assert count == 6
    w = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.1)  # reads its CPU step counter with .item() inside torch
    w.grad = torch.ones(3)
    _, count = count_host_syncs(opt.step)
    assert count == 0


def test_trace_reads_back_once_per_check_every_steps() -> None:
    trace = Trace(every=4)

    def log(n):
        for i in range(n):
            trace.log(feature=torch.tensor([float(i), float(i) + 2]), total=torch.tensor(float(-i)))

    _, syncs = count_host_syncs(log, 9)
    assert syncs == 2  # after steps 4 and 8
    assert trace.flush() == {"feature": [i + 1.0 for i in range(9)], "total": [-float(i) for i in range(9)]}


@pytest.mark.parametrize("make", [
    lambda n, k: DirectOptimisation(iterations=n),
    lambda n, k: DecoderBased(iterations=n, check_every=k),
    lambda n, k: DiffusionBased(iterations=n, check_every=k, **TINY_DMB),
], ids=["do", "db", "dmb"])
def test_feature_attacks_read_nothing_back_between_read_backs(prior, make) -> None:
    """More iterations, no more read-backs while check_every is not reached; with check_every=1 the trace
    is read back every step, so the count would see a sync inside the loop."""
    z, case = case_on("cpu", prior)
    make(1, 1000).reconstruct(z, case)  # warm-up: the prior builds its DDIM schedules once
    few, many = (count_host_syncs(make(n, 1000).reconstruct, z, case)[1] for n in (4, 12))
    assert few == many
    if not isinstance(make(1, 1), DirectOptimisation):  # DO keeps no trace
        assert count_host_syncs(make(12, 1).reconstruct, z, case)[1] > many


def test_sampler_matches_diffusers_ddim_step(prior) -> None:
    """The precomputed linear step against diffusers' DDIMScheduler.step (eta 0), step for step."""
    import diffusers

    v = prior.random_latents(2, seed=4)
    scheduler = diffusers.DDIMScheduler.from_config(prior.scheduler.config)
    scheduler.set_timesteps(5)
    x = v
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(prior.unet(x, t).sample, t, x, eta=0.0).prev_sample
        ours = prior.sample(v, steps=5, checkpoint=False)
    assert torch.allclose(ours, x, atol=1e-4)


def test_moving_a_prior_prints_no_float32_warning(capfd) -> None:
    make_tiny_prior(16).to("cpu")
    assert "should be kept in float32" not in capfd.readouterr().err


# ----- on a CUDA device (pytest -m gpu) -----------------------------------------------------------------

def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a.float().cpu() - b.float().cpu()) ** 2).mean().clamp_min(1e-12)))


@pytest.mark.gpu
@pytest.mark.parametrize("make", [
    lambda n: DirectOptimisation(iterations=n),
    lambda n: DiffusionBased(iterations=n, check_every=1000, **TINY_DMB),
], ids=["do", "dmb"])
def test_feature_attack_runs_on_cuda_without_syncs_in_its_loop(make) -> None:
    """On CUDA: images on the device, finite, and torch's sync debug mode sees as many synchronisations
    in a run of 4 iterations as in one of 12 (none inside the loop)."""
    z, case = case_on("cuda", make_tiny_prior(SIZE))

    def syncs(attack) -> int:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                result = attack.reconstruct(z, case)
                torch.cuda.synchronize()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        assert result.images.device.type == "cuda" and torch.isfinite(result.images).all()
        return sum("synchroniz" in str(w.message) for w in seen)

    syncs(make(2))  # warm-up: first calls (kernel loading, cuDNN's choices) may sync once
    assert syncs(make(4)) == syncs(make(12))


@pytest.mark.gpu
@pytest.mark.parametrize("make", [
    lambda: DirectOptimisation(iterations=30),
    lambda: DiffusionBased(iterations=4, amp=False, **TINY_DMB),
], ids=["do", "dmb"])
def test_cuda_and_cpu_reconstruct_the_same_images(make) -> None:
    """Same seed, float32: the CUDA run's images within 30 dB PSNR of the CPU run's."""
    images = []
    for device in ("cpu", "cuda"):
        z, case = case_on(device, make_tiny_prior(SIZE))
        images.append(make().reconstruct(z, case).images)
    assert psnr(images[0], images[1]) > 30


@pytest.mark.gpu
def test_train_prior_takes_a_step_on_cuda(tmp_path) -> None:
    from adversary.priors.io import load_prior
    from adversary.priors.train import TrainConfig, train_prior

    cfg = TrainConfig(source="synthetic", out=str(tmp_path / "prior"), latent=True, size=32, steps=2, vae_steps=1,
                      decoder_steps=1, frames=4, batch=2, device="cuda", preview=0)
    meta = train_prior(cfg, show=False)
    assert meta["steps"] == {"vae": 1, "decoder": 1, "unet": 2}
    prior = load_prior(cfg.out, "cuda")
    assert prior.device.type == "cuda"
