"""Black-box feature inversion ("Unlocking Visual Secrets", eq. 11 and 13): bb-do, bb-db, bb-dmb.

The adversary cannot see F1's weights; it may only QUERY F1 with its own frames (footage it
has, `query_source`, e.g. a public clip while the victim streams another). It trains an
inversion U-Net G on query pairs (x_q, F1(x_q)) and inverts tapped features with one forward:
  bb-do:  x = G(z)                                (G -> pixels)
  bb-db:  x = D(G(z))                             (G -> the prior's VAE latent, trained on E(x_q))
  bb-dmb: x = D(DDIM_last_s(inv_s(G(z))))        (G -> a clean VAE latent, trained on E(x_q);
                                                   DDIM inversion takes it s steps up the LDM's
                                                   `steps`-step schedule and the LDM runs them)
bb-dmb's `start` s: with s = steps, G outputs the initial latent v, x = D(DDIM(normalise(v))),
and G is trained end to end through the unrolled sampler on the pixel loss. The default s = 1
is measured (4 held-out bikes frames, resnet18 trained victim, 120 training steps, 10 DDIM
steps): layer1 20.7 / layer3 16.3 dB, where G -> v end to end gave 15.0 / 15.4, G regressed onto
the fully inverted noise 14.3 / 14.6 (too irregular a target for a small U-Net) and onto the
latent inverted one step 20.1 / 16.3. With s < steps bb-dmb is bb-db's G plus s LDM steps: the
LDM moved PSNR by +0.1 / -0.1 dB at s = 1 and -0.0 / -0.2 at s = 3. Trained longer (500 steps)
bb-dmb reaches 21.3 / 17.0 dB, and bb-do 22.5 / 16.6: the latent inverters converge sooner but
level off lower on layer1. Part of that was capacity: a latent G has one up-sampling level fewer,
so at the same width it had a quarter of the pixel G's parameters (0.14 M against 0.55 M on
layer1). At width 32 (the latent inverters' default, 0.54 M) bb-dmb reaches 22.2 / 17.6 dB
against bb-do's 22.5 / 16.6; width 64 (2.1 M) gave no more (22.1 at psnr@64).
What the prior is worth here depends on what it knows that the query pairs do not (benchmark,
resnet18 trained victim, 48 held-out bikes frames x 3 inverter seeds, PSNR @128 / SSIM; the prior
trained on bikes 0..174):
  queries = the prior's own footage (bikes 0..174): bb-do 22.13 / 0.534, bb-dmb 22.20 / 0.534 on
    layer1, 16.17 / 0.334 against 16.34 / 0.326 on layer3: a tie.
  queries = other clips (bigbuckbunny, carphone; as many images): bb-do 18.26 / 0.438, bb-db
    20.37 / 0.485, bb-dmb 20.37 / 0.495 on layer1; 11.04 / 0.201, 13.07 / 0.260, 12.99 / 0.266 on
    layer3: +2.1 / +2.0 dB, on every seed.
The lead is the VAE's: bb-db has it too. The LDM's steps add SSIM (+0.01), not PSNR: start 1, 2, 4, 6
read 20.66 / 20.62 / 20.55 / 20.44 dB (layer1) and 12.45 / 12.44 / 12.47 / 12.55 (layer3), seed 0.
`window=K` (odd) is the video variant: G reads K consecutive frames' features through a
pointwise temporal convolution (eq. 13) and reconstructs the centre one.

The case hands the head over only as a `QueryOracle`: a callable with no parameters, no
module, no gradient. A white-box case is accepted and downgraded to one (weights imply
queries). Trained inverters are cached on disk, keyed by what the oracle answers to a fixed
probe (so by model, split, size and weights), the prior, the query set and the training
settings, and reused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from adversary.feature.base import FeatureInversionAttack, WhiteBoxCase, _CaseBase
from adversary.feature.do import feature_loss
from adversary.feature.inverter import (
    CONFIG, FeatureInverter, InverterConfig, default_levels, load_inverter, save_inverter,
)
from adversary.feature.losses import consecutive_groups, normalise
from adversary.registry import register
from splitleak.errors import SplitleakError
from splitleak.video import open_source, to_model_input

BLACKBOX_GRANTS = frozenset({"features", "query", "input_size"})
DEFAULT_QUERY_SOURCE = "sample:bigbuckbunny"


class QueryOracle:
    """Query access to F1: images (B, *input_shape) in [0, 1] -> features, detached, nothing else.

    Holds the head in a closure: no parameters, no module, no autograd graph come out of it.
    `calls` and `images` count the queries made.
    """

    __slots__ = ("_query", "input_shape", "calls", "images")

    def __init__(self, head: Callable[[torch.Tensor], torch.Tensor], input_shape: tuple[int, ...]) -> None:
        device = next((p.device for p in getattr(head, "parameters", lambda: iter(()))()), torch.device("cpu"))

        def query(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return head(x.detach().to(device, torch.float32)).detach().float().clone()

        self._query = query
        self.input_shape, self.calls, self.images = tuple(input_shape), 0, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise SplitleakError(f"queries must be images of shape [B, {', '.join(map(str, self.input_shape))}], "
                                 f"got {list(x.shape)}")
        self.calls, self.images = self.calls + 1, self.images + int(x.shape[0])
        return self._query(x.clamp(0, 1)).to(x.device)

    def __reduce__(self) -> Any:  # no pickling the head out either
        raise TypeError("a QueryOracle cannot be pickled")


@dataclass
class BlackBoxCase(_CaseBase):
    """Black-box feature inversion: the tapped features, query access to F1, the input size, and
    (like WhiteBoxCase) an optional prior, which adds the "prior" grant, and the batch's (stream, seq)."""

    query: QueryOracle
    input_shape: tuple[int, ...]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    grants: frozenset[str] = BLACKBOX_GRANTS
    prior: Any = None
    frames: tuple[tuple[str, int], ...] | None = None
    tag: str = ""  # what the wire metadata says the head is (model-split-size-weights): cache folder names


def as_blackbox(case: WhiteBoxCase | BlackBoxCase) -> BlackBoxCase:
    """The black-box view of a case: a white-box one keeps only query access to its head (and its prior)."""
    if isinstance(case, BlackBoxCase):
        return case
    return BlackBoxCase(QueryOracle(case.head, case.input_shape), tuple(case.input_shape), case.device, case.seed,
                        prior=getattr(case, "prior", None), frames=getattr(case, "frames", None))


def make_case(attack: FeatureInversionAttack, head: torch.nn.Module, input_shape: tuple[int, ...],
              device: str | torch.device, seed: int = 0, prior: Any = None,
              tag: str = "") -> WhiteBoxCase | BlackBoxCase:
    """The case `attack` runs in: white-box if it needs the head's weights, else query access only
    (`tag`: the head as the wire metadata names it, e.g. resnet18-layer1-64-seed0)."""
    dev = torch.device(device)
    if "head_weights" in attack.access:
        return WhiteBoxCase(head, tuple(input_shape), dev, seed, prior=prior)
    return BlackBoxCase(QueryOracle(head, input_shape), tuple(input_shape), dev, seed, prior=prior, tag=tag)


# ----- query set ----------------------------------------------------------------------------

def query_images(source: str, size: int, frames: int, seed: int = 0) -> tuple[torch.Tensor, list[int]]:
    """Up to `frames` frames (N, 3, size, size) from each comma-separated source, in order, and
    where each source's frames start (windows never cross a source boundary)."""
    images, starts = [], []
    for spec in [s.strip() for s in source.split(",") if s.strip()]:
        starts.append(len(images))
        with open_source(spec, frames=frames, seed=seed) as src:
            images.extend(to_model_input(f.image, size) for f in src)
    if not images:
        raise SplitleakError(f"query source {source!r} gave no frames")
    return torch.from_numpy(np.stack(images)), starts


def windows(n: int, k: int, starts: list[int] | None = None) -> torch.Tensor:
    """(n, k) indices of the k frames centred on each frame, clamped inside its segment."""
    bounds = sorted(set(starts or [0]) | {0}) + [n]
    rows = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        for i in range(lo, hi):
            rows.append([min(max(i + d, lo), hi - 1) for d in range(-(k // 2), k // 2 + 1)])
    return torch.tensor(rows, dtype=torch.long).view(n, k)


def batch_windows(frames: list[tuple[str, int]] | None, n: int, k: int) -> torch.Tensor:
    """(n, k) window indices inside a batch: runs of consecutive seq of one stream (from the wire
    metadata) are clamped separately; without metadata the batch is taken as one run, in order."""
    if frames is None:
        return windows(n, k)
    idx = torch.arange(n).view(n, 1).repeat(1, k)
    for run in consecutive_groups(frames, n):
        local = windows(len(run), k)
        idx[run] = torch.tensor(run)[local]
    return idx


def probe_fingerprint(oracle: QueryOracle, seed: int = 1234) -> str:
    """What F1 answers to two fixed random images, hashed (fp16-rounded): identifies the head."""
    gen = torch.Generator().manual_seed(seed)
    z = oracle(torch.rand((2, *oracle.input_shape), generator=gen))
    return hashlib.sha256(torch.nan_to_num(z).half().numpy().tobytes()).hexdigest()[:16]


def module_fingerprint(*modules: Any) -> str:
    """Hash of every tensor of the given modules (None and non-modules are skipped)."""
    h = hashlib.sha256()
    for module in modules:
        if isinstance(module, torch.nn.Module):
            for name, t in sorted(module.state_dict().items()):
                h.update(name.encode())
                h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Square images to size x size (antialiased when shrinking); a no-op at that size."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=x.shape[-1] > size).clamp(0, 1)


def default_cache_dir() -> Path:
    """Where inverters are cached unless `cache_dir` is given: $SPLITLEAK_CACHE/inverters."""
    return Path(os.environ.get("SPLITLEAK_CACHE", Path.home() / ".cache" / "splitleak")) / "inverters"


# ----- the attacks --------------------------------------------------------------------------

class BlackBoxAttack(FeatureInversionAttack):
    """Train (or load) G on query pairs, then invert tapped features with it.

    Subclasses say what G outputs (`output`) and how that becomes an image (`render`).
    `iterations` are G's training steps.
    """

    output: ClassVar[str] = "pixels"
    access: ClassVar[frozenset[str]] = frozenset({"features", "query"})
    # G's base width. Latent inverters default to twice the pixel one's: a 16x16 latent leaves G one
    # level fewer, and at 32 it has about the pixel G's parameters at 16 (0.54 M for resnet18 layer1).
    default_width: ClassVar[int] = 16

    def __init__(self, iterations: int = 500, lr: float = 5e-3, batch: int = 16,
                 query_source: str = DEFAULT_QUERY_SOURCE, query_frames: int = 250, flip: int = 1,
                 window: int = 1, width: int | None = None, steps: int = 20, text: str | None = None,
                 cache_dir: str | None = None, progress: int = 1) -> None:
        width = self.default_width if width is None else width
        if iterations < 1 or batch < 1 or query_frames < 1 or steps < 1 or width < 4:
            raise SplitleakError("iterations, batch, query_frames and steps must be >= 1 and width >= 4")
        if window < 1 or window % 2 == 0:
            raise SplitleakError(f"window must be an odd number of frames >= 1, got {window}")
        self.iterations, self.lr, self.batch = int(iterations), float(lr), int(batch)
        self.query_source, self.query_frames, self.flip = str(query_source), int(query_frames), bool(flip)
        self.window, self.width, self.steps, self.text = int(window), int(width), int(steps), text
        self.cache_dir, self.progress = cache_dir, bool(progress)
        self._inverters: dict[str, FeatureInverter] = {}
        self._prior_ids: dict[int, str] = {}  # id(prior) -> its fingerprint (hashing a big prior takes a while)
        self.training: dict[str, Any] | None = None  # how the inverter in use was trained / loaded
        self.inverter_parameters: int | None = None  # the inverter in use: its parameter count
        self.last_loss: torch.Tensor | None = None  # per-frame feature loss of F1(recon) vs z (one query)

    def config(self) -> dict[str, object]:
        return {"iterations": self.iterations, "lr": self.lr, "batch": self.batch, "query_source": self.query_source,
                "query_frames": self.query_frames, "flip": self.flip, "window": self.window, "width": self.width,
                "output": self.output, "steps": self.steps if self.output == "noise" else None,
                "text": self.text, "cache_dir": str(self.cache_dir or default_cache_dir()),
                "optimizer": "adam", "schedule": "cosine", "training": self.training,
                "inverter_parameters": self.inverter_parameters}

    def check_access(self, case: WhiteBoxCase | BlackBoxCase) -> None:
        if "prior" in self.access and getattr(case, "prior", None) is None:
            raise SplitleakError(f"attack {self.name!r} needs a diffusion prior: pass --prior DIR "
                                 f"(a folder from `splitleak train-prior`, or a diffusers pipeline)")
        super().check_access(as_blackbox(case))

    # -- what G outputs and how it becomes an image (subclasses) --

    def out_shape(self, prior: Any, size: int) -> tuple[int, int]:
        """(channels, side) of G's output."""
        return 3, size

    def targets(self, prior: Any, x: torch.Tensor) -> torch.Tensor:
        """What G is regressed onto for query images x (pixels: x itself)."""
        return x

    def render(self, prior: Any, out: torch.Tensor, size: int) -> torch.Tensor:
        """G's output -> images (B, 3, size, size) in [0, 1]."""
        return out

    def train_loss(self, prior: Any, out: torch.Tensor, target: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(out, target)

    # -- the verb --

    def reconstruct(self, features: torch.Tensor, case: WhiteBoxCase | BlackBoxCase) -> torch.Tensor:
        self.check_access(case)
        bb = as_blackbox(case)
        prior = self._prior(bb)
        fshape = tuple(bb.query(torch.zeros((1, *bb.input_shape))).shape[1:])
        model = self.inverter(bb, fshape, prior)
        z = features.to(bb.device, torch.float32)
        if self.window > 1 and tuple(z.shape[1:]) == fshape:
            frames = list(bb.frames) if bb.frames is not None and len(bb.frames) == z.shape[0] else None
            z = z[batch_windows(frames, z.shape[0], self.window).to(z.device)]
        elif tuple(z.shape[1:]) not in (fshape, (self.window, *fshape)):
            raise SplitleakError(f"features of shape {list(z.shape)} do not fit this head's {list(fshape)}")
        images = []
        with torch.no_grad():
            for chunk in z.split(self.batch):
                images.append(self.render(prior, model(chunk), bb.size).float())
        x = torch.cat(images)
        centre = z[:, self.window // 2] if z.dim() == len(fshape) + 2 else z
        mask = torch.isfinite(centre)
        self.last_loss = feature_loss(bb.query(x), torch.where(mask, centre, 0.0), mask).cpu()
        return x

    def _prior(self, case: BlackBoxCase) -> Any:
        if "prior" not in self.access:
            return None
        prior = case.prior
        if prior.vae is None and self.output == "latent":
            raise SplitleakError(f"attack {self.name!r} needs a latent prior (with a VAE); this one is a pixel prior")
        if prior.device != case.device:
            prior.to(case.device)
        return prior

    # -- training and the cache --

    def _key(self, bb: BlackBoxCase, fshape: tuple[int, ...], prior: Any) -> dict[str, Any]:
        return {"attack": self.name, "output": self.output, "head": probe_fingerprint(bb.query),
                "input_shape": list(bb.input_shape), "feature_shape": list(fshape),
                "prior": self._prior_id(prior),
                "steps": self.steps if self.output == "noise" else None, "text": self.text,
                "query_source": self.query_source, "query_frames": self.query_frames, "flip": self.flip,
                "window": self.window, "width": self.width, "iterations": self.iterations, "lr": self.lr,
                "batch": self.batch, "seed": bb.seed, "version": 1}

    def _prior_id(self, prior: Any) -> str | None:
        if prior is None:
            return None
        if id(prior) not in self._prior_ids:
            self._prior_ids[id(prior)] = module_fingerprint(prior.unet, prior.vae)
        return self._prior_ids[id(prior)]

    def inverter(self, bb: BlackBoxCase, fshape: tuple[int, ...], prior: Any) -> FeatureInverter:
        """The trained G for this head, prior and settings: from memory, the disk cache, or trained now."""
        key = self._key(bb, fshape, prior)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        if digest not in self._inverters:
            self._inverters[digest] = self._load_or_train(bb, fshape, prior, key, digest)
        model = self._inverters[digest]
        self.inverter_parameters = sum(p.numel() for p in model.parameters())
        return model

    def _load_or_train(self, bb: BlackBoxCase, fshape: tuple[int, ...], prior: Any, key: dict[str, Any],
                       digest: str) -> FeatureInverter:
        tag = re.sub(r"[^A-Za-z0-9_.-]+", "", bb.tag.replace(":", ""))
        folder = Path(self.cache_dir or default_cache_dir()) / "-".join(filter(None, (self.name, tag, digest)))
        if (folder / CONFIG).is_file():
            model, info = load_inverter(folder, bb.device)
            self.training = {**info.get("training", {}), "cached": True, "folder": str(folder)}
        else:
            model, log = self.train(bb, fshape, prior)
            self.training = {**log, "cached": False, "folder": str(folder)}
            save_inverter(model, folder, {"key": key, "training": log})
        return model

    def build(self, bb: BlackBoxCase, fshape: tuple[int, ...], prior: Any) -> FeatureInverter:
        channels, side = self.out_shape(prior, bb.size)
        config = InverterConfig(fshape, channels, side, self.output, self.window, self.width, default_levels(side))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(bb.seed)
            return FeatureInverter(config)

    def train(self, bb: BlackBoxCase, fshape: tuple[int, ...], prior: Any) -> tuple[FeatureInverter, dict[str, Any]]:
        """Fit G on query pairs from `query_source`; returns G (eval mode) and a training log."""
        started = time.perf_counter()
        x, starts = query_images(self.query_source, bb.size, self.query_frames, bb.seed)
        if self.flip:
            x, starts = torch.cat([x, x.flip(-1)]), starts + [len(x) + s for s in starts]
        z = torch.cat([bb.query(chunk) for chunk in x.split(32)])
        model = self.build(bb, fshape, prior)
        model.set_normalisation(z)
        model.to(bb.device).train()
        x, z = x.to(bb.device), z.to(bb.device)
        with torch.no_grad():
            target = torch.cat([self.targets(prior, c) for c in x.split(32)])
        idx = windows(len(x), self.window, starts).to(bb.device)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * s / max(1, self.iterations))))
        gen = torch.Generator().manual_seed(bb.seed)
        losses: list[float] = []
        bar = tqdm(range(self.iterations), desc=f"{self.name}: train inverter", unit="it",
                   disable=not self.progress, leave=False)
        for _ in bar:
            pick = torch.randint(len(x), (min(self.batch, len(x)),), generator=gen).to(bb.device)
            zin = z[idx[pick]] if self.window > 1 else z[pick]
            loss = self.train_loss(prior, model(zin), target[pick], x[pick])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        model.eval()
        head = max(1, len(losses) // 10)
        log = {"query_images": len(x), "queries": bb.query.images, "iterations": self.iterations,
               "first_loss": float(np.mean(losses[:head])), "final_loss": float(np.mean(losses[-head:])),
               "loss_every_10": [round(v, 6) for v in losses[::10]], "seconds": time.perf_counter() - started}
        return model, log


@register
class BlackBoxDO(BlackBoxAttack):
    """bb-do: G maps features straight to pixels."""

    name: ClassVar[str] = "bb-do"
    output: ClassVar[str] = "pixels"


@register
class BlackBoxDB(BlackBoxAttack):
    """bb-db: G maps features to the prior's VAE latent; the decoder makes the image."""

    name: ClassVar[str] = "bb-db"
    output: ClassVar[str] = "latent"
    default_width: ClassVar[int] = 32
    access: ClassVar[frozenset[str]] = frozenset({"features", "query", "prior"})

    def out_shape(self, prior: Any, size: int) -> tuple[int, int]:
        return int(prior.latent_shape[0]), int(prior.latent_shape[-1])

    def targets(self, prior: Any, x: torch.Tensor) -> torch.Tensor:
        return prior.encode(resize(x, prior.image_size)).float()

    def render(self, prior: Any, out: torch.Tensor, size: int) -> torch.Tensor:
        return resize(prior.decode(out).float(), size)


BB_DMB_START = 1  # DDIM steps the LDM runs from G's output (see the module docstring)


@register
class BlackBoxDMB(BlackBoxAttack):
    """bb-dmb: G maps features to a clean latent, DDIM inversion takes it `start` steps up the LDM's
    schedule and the LDM runs those steps; x = D(latent). start = steps: G -> the initial noise v,
    trained end to end through the unrolled sampler (checkpointed) and the decoder on the pixel loss."""

    name: ClassVar[str] = "bb-dmb"
    output: ClassVar[str] = "noise"
    default_width: ClassVar[int] = 32
    access: ClassVar[frozenset[str]] = frozenset({"features", "query", "prior"})

    def __init__(self, iterations: int = 500, lr: float = 5e-3, batch: int = 16,
                 query_source: str = DEFAULT_QUERY_SOURCE, query_frames: int = 250, flip: int = 1,
                 window: int = 1, width: int | None = None, steps: int = 20, text: str | None = None,
                 cache_dir: str | None = None, progress: int = 1, start: int = BB_DMB_START) -> None:
        super().__init__(iterations, lr, batch, query_source, query_frames, flip, window, width, steps, text,
                         cache_dir, progress)
        if not 1 <= start <= self.steps:
            raise SplitleakError(f"start must be between 1 and steps ({self.steps}), got {start}")
        self.start = int(start)

    @property
    def end_to_end(self) -> bool:
        return self.start == self.steps

    def config(self) -> dict[str, object]:
        return {**super().config(), "start": self.start,
                "training_loss": "pixel mse through the sampler" if self.end_to_end else "mse to E(x_q)"}

    def _key(self, bb: BlackBoxCase, fshape: tuple[int, ...], prior: Any) -> dict[str, Any]:
        target = "pixels through the sampler" if self.end_to_end else "clean latent"
        return {**super()._key(bb, fshape, prior), "start": self.start, "target": target}

    def out_shape(self, prior: Any, size: int) -> tuple[int, int]:
        return int(prior.latent_shape[0]), int(prior.latent_shape[-1])

    def targets(self, prior: Any, x: torch.Tensor) -> torch.Tensor:
        return x if self.end_to_end else prior.encode(resize(x, prior.image_size)).float()

    def render(self, prior: Any, out: torch.Tensor, size: int) -> torch.Tensor:
        out = out.to(prior.dtype)
        if self.end_to_end:
            latent = prior.sample(normalise(out), steps=self.steps, text=self.text, checkpoint=torch.is_grad_enabled())
        else:
            start = prior.invert(out, steps=self.steps, upto=self.start, text=self.text)
            latent = prior.sample(start, steps=self.steps, text=self.text, checkpoint=False, last=self.start)
        return resize(prior.decode(latent).float(), size)

    def train_loss(self, prior: Any, out: torch.Tensor, target: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not self.end_to_end:
            return F.mse_loss(out, target)
        return F.mse_loss(self.render(prior, out, x.shape[-1]), x)
