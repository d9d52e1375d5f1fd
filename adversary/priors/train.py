"""`splitleak train-prior`: a small diffusion prior trained on footage the attacker has.

Pixel prior: a DDPM (UNet2DModel, v-prediction) on frames in [-1, 1]. Latent prior
(`latent=True`): first a small AutoencoderKL (L1 + L2 reconstruction + a small KL), then
(`decoder_steps`) its decoder alone, the encoder frozen, as Stable Diffusion's ft-MSE decoder:
sharper images from the same latent space, so the UNet is unaffected; then a latent DDPM on
its scaled latents; with `text` the UNet is a UNet2DConditionModel trained on
the caption's embedding from the project's fixed ByteTextEncoder (the empty caption 10% of
the time, for classifier-free guidance). The UNet saved for sampling is an EMA of the
trained weights; the raw weights and optimiser states sit in train_state.pt (tensors and
numbers only) so `resume` continues where a run stopped.
"""

from __future__ import annotations

import copy
import csv
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from adversary.priors.build import build_text_encoder, build_unet, build_vae, make_scheduler
from adversary.priors.diffusion import DiffusionPrior
from adversary.priors.io import PRIOR_JSON, read_meta, save_prior
from splitleak.errors import SplitleakError
from splitleak.video import open_source, save_png, to_model_input

STATE = "train_state.pt"
READ_BACK = 25  # training steps between read-backs of their losses (host syncs)
LOG = "train_log.csv"
# The training objective's version: bump it when a change makes older priors a different
# model (2: v-prediction; 1 was epsilon). Resume and the benchmarks' caches key on it.
RECIPE = 2
# What makes two runs the same run: --resume refuses a folder that differs in any of these.
IDENTITY = ("source", "latent", "size", "text", "seed", "frames", "vae_down", "vae_widths", "widths", "recipe")


@dataclass
class TrainConfig:
    """Everything a training run depends on; written into prior.json."""

    source: str
    out: str
    latent: bool = False
    size: int = 64
    steps: int = 800  # diffusion (UNet) steps, in total: minutes on a CPU
    vae_steps: int | None = None  # latent only; default: steps // 2
    decoder_steps: int = 0  # latent only: decoder-only fine-tuning after the VAE (encoder frozen)
    batch: int = 8
    lr: float = 1e-3
    vae_lr: float = 1e-3
    decoder_lr: float = 5e-4
    kl_weight: float = 1e-4  # per latent element, against per-pixel L1 + L2
    frames: int = 512  # at most this many frames of footage
    device: str = "cpu"
    seed: int = 0
    text: str | None = None
    vae_down: int = 4  # 4 or 8
    widths: list[int] = field(default_factory=list)  # UNet block widths; default by side
    vae_widths: list[int] = field(default_factory=list)  # VAE block widths (latent); default 16,32,32(,32)
    ema: float = 0.995
    save_every: int = 250
    preview: int = 8  # samples written to samples.png at the end (0: none)
    resume: bool = False
    recipe: int = RECIPE

    def check(self) -> None:
        if self.size < 16 or self.size % 8:
            raise SplitleakError(f"--size must be a multiple of 8 and >= 16, got {self.size}")
        if self.vae_down not in (4, 8):
            raise SplitleakError(f"vae down-sampling must be 4 or 8, got {self.vae_down}")
        if self.latent and (self.size // self.vae_down) % 4:
            raise SplitleakError(f"--size {self.size} with {self.vae_down}x VAE gives a latent side not "
                                 f"divisible by 4; use a multiple of {4 * self.vae_down}")
        for name in ("steps", "batch", "frames"):
            if getattr(self, name) < 1:
                raise SplitleakError(f"--{name} must be >= 1")
        if self.latent and self.vae_widths and len(self.vae_widths) != int(math.log2(self.vae_down)) + 1:
            raise SplitleakError(f"--vae-widths needs {int(math.log2(self.vae_down)) + 1} widths with "
                                 f"{self.vae_down}x down-sampling, got {len(self.vae_widths)}")
        if self.decoder_steps < 0 or (self.decoder_steps and not self.latent):
            raise SplitleakError(f"--decoder-steps must be >= 0 and needs --latent, got {self.decoder_steps}")
        if self.text is not None and not self.text.strip():
            raise SplitleakError("--text must not be empty")

    @property
    def total_vae_steps(self) -> int:
        if not self.latent:
            return 0
        return self.vae_steps if self.vae_steps is not None else max(1, self.steps // 2)


def default_vae_widths(vae_down: int) -> list[int]:
    """The VAE's block widths: one level per halving, 16 then 32s."""
    return [16] + [32] * int(math.log2(vae_down))


def default_widths(side: int, latent: bool) -> list[int]:
    """UNet widths by the side of the diffusion variable: lowest resolution 8 (pixels) or 4."""
    if latent:
        return [32, 64] if side <= 8 else [32, 64, 64]
    return {16: [32, 64], 32: [32, 64, 64]}.get(side, [16, 32, 64, 64])


# ----- footage ----------------------------------------------------------------------------

def load_footage(source: str, size: int, frames: int, seed: int) -> torch.Tensor:
    """Up to `frames` frames of the source as (N, 3, S, S) floats in [0, 1], S = size * 9 / 8."""
    side = size + size // 8
    with open_source(source, frames=frames, seed=seed) as stream:
        images = [to_model_input(frame.image, side) for frame in stream]
    if not images:
        raise SplitleakError(f"source {source!r} gave no frames")
    return torch.from_numpy(np.stack(images))


def augment(footage: torch.Tensor, batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """A batch of random frames, each randomly cropped to size x size and maybe flipped."""
    index = torch.randint(len(footage), (batch,), generator=generator)
    slack = footage.shape[-1] - size
    offsets = torch.randint(slack + 1, (batch, 2), generator=generator)
    flips = torch.rand(batch, generator=generator) < 0.5
    span = torch.arange(size)
    rows = (offsets[:, 0, None] + span)[:, :, None]  # (B, size, 1)
    cols = offsets[:, 1, None] + span  # (B, size)
    cols = torch.where(flips[:, None], cols.flip(-1), cols)[:, None, :]  # a flip reads the columns backwards
    crops = footage[index[:, None, None], :, rows, cols]  # (B, size, size, C)
    return crops.permute(0, 3, 1, 2).contiguous()


# ----- the run folder ---------------------------------------------------------------------

def check_out(cfg: TrainConfig) -> dict | None:
    """The saved state to resume from (None: a fresh run); refuses to clobber another run."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise SplitleakError(f"--out {out} is a file, not a folder")
    meta = read_meta(out) if out.is_dir() else {}
    if not cfg.resume:
        if meta:
            raise SplitleakError(f"{out} already holds a prior; pass --resume to continue it, or another --out")
        if out.is_dir() and any(out.iterdir()):
            raise SplitleakError(f"--out {out} is not empty; choose a new folder")
        return None
    if not meta:
        if out.is_dir() and any(out.iterdir()):
            raise SplitleakError(f"--resume: {out} is not a prior folder (no {PRIOR_JSON})")
        return None
    if not (out / STATE).is_file():
        raise SplitleakError(f"--resume: {out} has no {STATE} to continue from")
    saved = meta.get("train", {})
    if not cfg.widths and saved.get("widths"):
        cfg.widths = list(saved["widths"])
    if saved.get("latent") and not saved.get("vae_widths"):  # a prior from before --vae-widths: the default
        saved = {**saved, "vae_widths": default_vae_widths(int(saved.get("vae_down", 4)))}
    if cfg.latent and not cfg.vae_widths:
        cfg.vae_widths = list(saved.get("vae_widths") or default_vae_widths(cfg.vae_down))
    ours = asdict(cfg)
    for key in IDENTITY:
        if saved.get(key) != ours[key]:
            raise SplitleakError(f"--resume: {out} was trained with {key}={saved.get(key)!r}, "
                                 f"not {ours[key]!r}; use another --out")
    try:
        return torch.load(out / STATE, map_location="cpu", weights_only=True)
    except Exception as err:
        raise SplitleakError(f"--resume: cannot read {out / STATE} ({type(err).__name__})") from None


def refuse_moving_latents(cfg: TrainConfig, state: dict | None) -> None:
    """A resume may not add VAE steps once the decoder or the UNet has trained on the VAE's latents:
    the encoder would move the latent space under them."""
    if not (state and cfg.latent) or cfg.total_vae_steps <= int(state["vae_step"]):
        return
    later = [name for name in ("decoder", "unet") if int(state.get(f"{name}_step", 0))]
    if later:
        raise SplitleakError(f"--resume: {cfg.out} trained its {' and '.join(later)} on the latents of "
                             f"{int(state['vae_step'])} VAE steps; more VAE steps ({cfg.total_vae_steps}) would move "
                             f"them; use another --out")


class Log:
    """train_log.csv, appended: phase, step, loss, elapsed seconds."""

    def __init__(self, path: Path) -> None:
        new = not path.is_file()
        self.file = path.open("a", newline="")
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(["phase", "step", "loss", "seconds"])

    def write(self, phase: str, step: int, loss: float, seconds: float) -> None:
        self.writer.writerow([phase, step, f"{loss:.6f}", f"{seconds:.3f}"])
        if step % 20 == 0:
            self.file.flush()

    def close(self) -> None:
        self.file.close()


# ----- training ---------------------------------------------------------------------------

class Trainer:
    """Holds the models, the optimisers and the counters of one run."""

    def __init__(self, cfg: TrainConfig, state: dict | None) -> None:
        cfg.check()
        self.cfg, self.out = cfg, Path(cfg.out)
        self.device = torch.device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        if cfg.latent:
            cfg.vae_widths = list(cfg.vae_widths) or default_vae_widths(cfg.vae_down)
        self.vae = build_vae(tuple(cfg.vae_widths)) if cfg.latent else None
        side = cfg.size // cfg.vae_down if cfg.latent else cfg.size
        channels = 4 if cfg.latent else 3
        cfg.widths = list(cfg.widths) or default_widths(side, cfg.latent)
        self.text_encoder = build_text_encoder(dim=64).eval().requires_grad_(False) if cfg.text else None
        self.unet = build_unet(side, channels, tuple(cfg.widths), cross_attention_dim=64 if cfg.text else None)
        self.ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.noise = make_scheduler(train=True, pixel=not cfg.latent)
        self.latent_shape = (channels, side, side)
        self.scaling = 1.0
        self.vae_step = self.unet_step = self.decoder_step = 0
        self.losses: dict[str, float] = {}
        self.timing: dict[str, float] = {}
        # fused AdamW on CUDA (one launch per step); the models move there below, before any step
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.vae_opt = torch.optim.AdamW(self.vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0, **fused) \
            if self.vae else None
        self.unet_opt = torch.optim.AdamW(self.unet.parameters(), lr=cfg.lr, weight_decay=0.0, **fused)
        self.decoder_opt = torch.optim.AdamW(self.decoder_parameters(), lr=cfg.decoder_lr, weight_decay=0.0,
                                             **fused) if self.vae else None
        if state is not None:
            self.load_state(state)
        for module in (self.vae, self.unet, self.ema, self.text_encoder):
            if module is not None:
                module.to(self.device)
        for opt in (self.vae_opt, self.unet_opt, self.decoder_opt):
            moves_step = bool(opt and opt.defaults.get("fused"))  # fused keeps its step counter on the device
            for slot in (opt.state.values() if opt else []):
                for key, value in slot.items():
                    if torch.is_tensor(value) and (key != "step" or moves_step):
                        slot[key] = value.to(self.device)

    # state ----------------------------------------------------------------------------------

    def load_state(self, state: dict) -> None:
        self.vae_step, self.unet_step = int(state["vae_step"]), int(state["unet_step"])
        self.decoder_step = int(state.get("decoder_step", 0))  # absent in states from before the phase
        self.scaling = float(state["scaling"])
        self.losses = dict(state.get("losses", {}))
        self.unet.load_state_dict(state["unet"])
        self.ema.load_state_dict(state["ema"])
        self.unet_opt.load_state_dict(state["unet_opt"])
        if self.vae is not None:
            self.vae.load_state_dict(state["vae"])
            self.vae_opt.load_state_dict(state["vae_opt"])
            if "decoder_opt" in state:
                self.decoder_opt.load_state_dict(state["decoder_opt"])
            self.vae.register_to_config(scaling_factor=self.scaling)
        if self.text_encoder is not None:
            self.text_encoder.load_state_dict(state["text_encoder"])
        self.generator.set_state(state["generator"])

    def state(self) -> dict:
        cpu = lambda module: {k: v.detach().cpu() for k, v in module.state_dict().items()}  # noqa: E731
        state = {"vae_step": self.vae_step, "unet_step": self.unet_step, "decoder_step": self.decoder_step,
                 "scaling": self.scaling,
                 "losses": self.losses, "unet": cpu(self.unet), "ema": cpu(self.ema),
                 "unet_opt": self.unet_opt.state_dict(), "generator": self.generator.get_state()}
        if self.vae is not None:
            state.update(vae=cpu(self.vae), vae_opt=self.vae_opt.state_dict(),
                         decoder_opt=self.decoder_opt.state_dict())
        if self.text_encoder is not None:
            state["text_encoder"] = cpu(self.text_encoder)
        return state

    def prior(self) -> DiffusionPrior:
        """The prior as it stands: EMA UNet, DDIM scheduler, VAE with its scaling factor."""
        if self.vae is not None:
            self.vae.register_to_config(scaling_factor=self.scaling)
        return DiffusionPrior(unet=copy.deepcopy(self.ema), scheduler=make_scheduler(pixel=not self.cfg.latent),
                              vae=copy.deepcopy(self.vae) if self.vae is not None else None,
                              text_encoder=self.text_encoder, image_size=self.cfg.size,
                              latent_shape=self.latent_shape, scaling_factor=self.scaling)

    def save(self, footage: int) -> dict:
        """prior components + prior.json + train_state.pt, written so a crash leaves the last good set."""
        meta = {"train": asdict(self.cfg), "footage": {"source": self.cfg.source, "frames": footage},
                "steps": {"vae": self.vae_step, "decoder": self.decoder_step, "unet": self.unet_step},
                "losses": self.losses, "seconds_per_step": self.timing,
                "text_encoder": "ByteTextEncoder: fixed random byte-level encoder (no CLIP offline)"
                if self.cfg.text else None}
        tmp = self.out / (STATE + ".tmp")
        torch.save(self.state(), tmp)
        tmp.replace(self.out / STATE)
        prior = self.prior()
        save_prior(prior, self.out, meta)
        return meta

    # steps ----------------------------------------------------------------------------------

    def vae_loss(self, x: torch.Tensor) -> torch.Tensor:
        x = x * 2 - 1
        posterior = self.vae.encode(x).latent_dist
        recon = self.vae.decode(posterior.sample()).sample
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        return (recon - x).abs().mean() + F.mse_loss(recon, x) + self.cfg.kl_weight * kl

    def decoder_parameters(self) -> list[torch.nn.Parameter]:
        return [*self.vae.decoder.parameters(), *self.vae.post_quant_conv.parameters()]

    def decoder_loss(self, x: torch.Tensor) -> torch.Tensor:
        """L1 + L2 of the decoded posterior mean: the encoder (and so the latent space) stays as it is."""
        x = x * 2 - 1
        with torch.no_grad():
            mean = self.vae.encode(x).latent_dist.mean
        recon = self.vae.decode(mean).sample
        return (recon - x).abs().mean() + F.mse_loss(recon, x)

    @torch.no_grad()
    def measure_scaling(self, footage: torch.Tensor) -> float:
        """1 / std of the VAE latents over the footage (as Stable Diffusion's 0.18215)."""
        self.vae.eval()
        x = footage[:256, :, : self.cfg.size, : self.cfg.size].to(self.device) * 2 - 1
        latents = torch.cat([self.vae.encode(chunk).latent_dist.mean for chunk in x.split(32)])
        self.vae.train()
        return float(1.0 / latents.std().clamp(min=1e-6))

    def diffusion_variable(self, x: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return x * 2 - 1
        with torch.no_grad():
            return self.vae.encode(x * 2 - 1).latent_dist.sample() * self.scaling

    def unet_loss(self, x: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        z = self.diffusion_variable(x)
        noise = torch.randn(z.shape, generator=self.generator).to(self.device)
        t = torch.randint(self.noise.config.num_train_timesteps, (z.shape[0],), generator=self.generator)
        t = t.to(self.device)
        noisy = self.noise.add_noise(z, noise, t)
        if condition is None:
            pred = self.unet(noisy, t).sample
        else:
            pred = self.unet(noisy, t, encoder_hidden_states=condition).sample
        if self.noise.config.prediction_type == "v_prediction":
            return F.mse_loss(pred, self.noise.get_velocity(z, noise, t))
        return F.mse_loss(pred, noise)

    def conditions(self, batch: int) -> torch.Tensor | None:
        """Caption embeddings, with the empty caption for ~10% of the batch."""
        if self.text_encoder is None:
            return None
        with torch.no_grad():
            caption, empty = self.text_encoder([self.cfg.text, ""])
        drop = (torch.rand(batch, generator=self.generator) < 0.1).to(self.device)[:, None, None]
        return torch.where(drop, empty, caption).expand(batch, *caption.shape)

    @torch.no_grad()
    def update_ema(self) -> None:
        decay = min(self.cfg.ema, (1 + self.unet_step) / (10 + self.unet_step))
        torch._foreach_lerp_(list(self.ema.parameters()), list(self.unet.parameters()), 1 - decay)  # one launch per dtype
        for ema, raw in zip(self.ema.buffers(), self.unet.buffers()):
            ema.copy_(raw)


def _phase(trainer: Trainer, name: str, total: int, footage: torch.Tensor, log: Log, show: bool) -> None:
    """Run one phase ('vae', 'decoder' or 'unet') from its saved step up to `total`. Each step's loss stays
    on the device; they are read back (logged, checked finite, shown) every READ_BACK steps, at a save
    and at the end, so a GPU step does not wait on the host."""
    cfg = trainer.cfg
    counter = f"{name}_step"
    start = getattr(trainer, counter)
    if start >= total:
        return
    model, opt = (trainer.unet, trainer.unet_opt) if name == "unet" else (trainer.vae, getattr(trainer, f"{name}_opt"))
    losses = {"vae": trainer.vae_loss, "decoder": trainer.decoder_loss,
              "unet": lambda x: trainer.unet_loss(x, trainer.conditions(cfg.batch))}
    model.train()
    bar = tqdm(total=total, initial=start, desc=f"train-prior {name}", disable=not show, unit="step")
    clock = _Clock()
    pending: list[torch.Tensor] = []
    for step in range(start, total):
        if step == start + 1:  # time from the second step: the first pays for warm-up
            _read_back(trainer, name, step, pending, log, bar, clock)
            clock.restart()
        x = augment(footage, cfg.batch, cfg.size, trainer.generator).to(trainer.device)
        loss = losses[name](x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        pending.append(loss.detach())
        setattr(trainer, counter, step + 1)
        if name == "unet":
            trainer.update_ema()
        last = step + 1 == total
        saving = (step + 1) % cfg.save_every == 0 and not last
        if last or saving or len(pending) >= READ_BACK:
            _read_back(trainer, name, step + 1, pending, log, bar, clock)
        if name == "vae" and last:
            trainer.scaling = trainer.measure_scaling(footage)
        if saving:
            trainer.save(len(footage))
    bar.close()
    model.eval()


class _Clock:
    """Seconds since the timing started, the steps it covers, and the phase's smoothed loss."""

    def __init__(self) -> None:
        self.smooth: float | None = None
        self.restart()

    def restart(self) -> None:
        self.began, self.steps = time.perf_counter(), 0

    def seconds(self) -> float:
        return time.perf_counter() - self.began


def _read_back(trainer: Trainer, name: str, done: int, pending: list[torch.Tensor], log: Log, bar: tqdm,
               clock: _Clock) -> None:
    """Read the pending losses of the steps up to `done` back in one sync: log them, check them finite,
    update the smoothed loss, the seconds per step and the progress bar; empties `pending`."""
    if not pending:
        return
    values = torch.stack(pending).float().tolist()
    first = done - len(values)
    seconds = clock.seconds()  # after the read-back: the steps' device work is done
    clock.steps += len(values)
    for i, value in enumerate(values):
        if not math.isfinite(value):
            raise SplitleakError(f"{name} loss became {value} at step {first + i}; try a lower learning rate")
        clock.smooth = value if clock.smooth is None else 0.98 * clock.smooth + 0.02 * value
        log.write(name, first + i + 1, value, seconds)
    smooth = clock.smooth
    trainer.losses[name] = round(smooth, 6)
    trainer.timing[name] = round(seconds / max(1, clock.steps), 4)
    pending.clear()
    bar.update(len(values))
    bar.set_postfix(loss=f"{smooth:.4f}", s_per_step=trainer.timing[name])


def write_preview(prior: DiffusionPrior, path: Path, count: int, seed: int, text: str | None,
                  footage: torch.Tensor) -> None:
    """samples.png: a row of DDIM samples (20 steps) over a row of real footage."""
    with torch.no_grad():
        latents = prior.random_latents(count, seed=seed)
        images = prior.decode(prior.sample(latents, steps=20, text=text, checkpoint=False)).cpu()
    real = footage[:count, :, : prior.image_size, : prior.image_size]
    rows = [torch.cat(list(images), dim=-1), torch.cat(list(real), dim=-1)]
    width = max(row.shape[-1] for row in rows)
    grid = torch.cat([F.pad(row, (0, width - row.shape[-1])) for row in rows], dim=-2)
    save_png(path, grid.numpy())


def train_prior(cfg: TrainConfig, show: bool = True) -> dict:
    """Train (or resume) a prior into cfg.out; returns what prior.json holds."""
    cfg.check()
    state = check_out(cfg)
    refuse_moving_latents(cfg, state)
    footage = load_footage(cfg.source, cfg.size, cfg.frames, cfg.seed)
    trainer = Trainer(cfg, state)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / LOG)
    try:
        if cfg.latent:
            _phase(trainer, "vae", cfg.total_vae_steps, footage, log, show)
            _phase(trainer, "decoder", cfg.decoder_steps, footage, log, show)
        _phase(trainer, "unet", cfg.steps, footage, log, show)
    except KeyboardInterrupt:
        trainer.save(len(footage))
        raise
    finally:
        log.close()
    meta = trainer.save(len(footage))
    if cfg.preview:
        write_preview(trainer.prior(), out / "samples.png", cfg.preview, cfg.seed,
                      cfg.text, footage)
    return meta
