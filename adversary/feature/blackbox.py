"""Black-box feature inversion ("Unlocking Visual Secrets", eq. 11 and 13): bb-do, bb-db, bb-dmb.

The adversary cannot see F1's weights; it may only QUERY F1 with its own frames (footage it
has, `query_source`, e.g. a public clip while the victim streams another). It trains an
inversion U-Net G on query pairs (x_q, F1(x_q)) and inverts tapped features with one forward:
  bb-do:  x = G(z)                                (G -> pixels)
  bb-db:  x = D(G(z))                             (G -> the prior's VAE latent, trained on E(x_q))
  bb-dmb: x = D(DDIM_last_s(inv_s(G(z))))        (G -> a clean VAE latent, trained on E(x_q);
                                                   DDIM inversion takes it s steps up the LDM's
                                                   `steps`-step schedule and the LDM runs them)
bb-dmb's `start` s: with s = steps, G outputs the initial latent v, x = D(DDIM(normalise(v))), and
G is trained end to end through the unrolled sampler on the pixel loss; the default s = 1 and the
latent inverters' width are measured (docs/feature-inversion.md).
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

from adversary.configs import require
from adversary.feature.base import FeatureInversionAttack, FeatureResult, WhiteBoxCase, _CaseBase
from adversary.feature.fit import CHECK_EVERY, adam
from adversary.feature.groups import consecutive_groups
from adversary.feature.inverter import (
    CONFIG, FeatureInverter, InverterConfig, default_levels, load_inverter, save_inverter,
)
from adversary.losses import feature_loss, normalise
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

@dataclass(frozen=True)
class QueryConfig:
    """The footage the adversary queries F1 with (comma-separated sources), and how much of it."""

    source: str = DEFAULT_QUERY_SOURCE
    frames: int = 250  # at most this many frames of each source
    flip: bool = True  # add the mirrored frames

    def check(self) -> None:
        require(self.frames >= 1 and bool(self.source.strip()), "query frames must be >= 1 and the source named")


@dataclass(frozen=True)
class InverterTraining:
    """G's training: Adam on a cosine schedule; `width` is G's base width (default: the attack's)."""

    iterations: int = 500
    lr: float = 5e-3
    batch: int = 16
    width: int | None = None

    def check(self) -> None:
        require(self.iterations >= 1 and self.batch >= 1 and self.lr > 0, "inverter iterations and batch must be "
                ">= 1 and lr > 0")
        require(self.width is None or self.width >= 4, f"inverter width must be >= 4, got {self.width}")


@dataclass(frozen=True)
class BlackBoxConfig:
    """A black-box attack: its inverter, its queries, the temporal window (odd), the LDM's steps."""

    inverter: InverterTraining = field(default_factory=InverterTraining)
    query: QueryConfig = field(default_factory=QueryConfig)
    window: int = 1
    steps: int = 20
    text: str | None = None
    cache_dir: str | None = None
    progress: bool = True

    def check(self) -> None:
        require(self.window >= 1 and self.window % 2 == 1, f"window must be an odd number of frames >= 1, "
                f"got {self.window}")
        require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")


class BlackBoxAttack(FeatureInversionAttack):
    """Train (or load) G on query pairs, then invert tapped features with it.

    Subclasses say what G outputs (`output`) and how that becomes an image (`render`). Trained
    inverters are kept in memory by their cache key (a cache, not run state: the key names all
    that made them).
    """

    output: ClassVar[str] = "pixels"
    access: ClassVar[frozenset[str]] = frozenset({"features", "query"})
    Config = BlackBoxConfig
    # G's base width. Latent inverters default to twice the pixel one's: a 16x16 latent leaves G one
    # level fewer, and at 32 it has about the pixel G's parameters at 16 (0.54 M for resnet18 layer1).
    default_width: ClassVar[int] = 16

    def __init__(self, config: Any = None, **options: Any) -> None:
        super().__init__(config, **options)
        self._inverters: dict[str, tuple[FeatureInverter, dict[str, Any]]] = {}
        self._prior_ids: dict[int, str] = {}  # id(prior) -> its fingerprint (hashing a big prior takes a while)

    @property
    def width(self) -> int:
        return self.config.inverter.width or self.default_width

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "output": self.output, "width": self.width,
                "cache_dir": str(self.config.cache_dir or default_cache_dir())}

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

    def reconstruct(self, features: torch.Tensor, case: WhiteBoxCase | BlackBoxCase) -> FeatureResult:
        self.check_access(case)
        c, bb = self.config, as_blackbox(case)
        prior = self._prior(bb)
        fshape = tuple(bb.query(torch.zeros((1, *bb.input_shape))).shape[1:])
        model, training = self.inverter(bb, fshape, prior)
        z = features.to(bb.device, torch.float32)
        if c.window > 1 and tuple(z.shape[1:]) == fshape:
            frames = list(bb.frames) if bb.frames is not None and len(bb.frames) == z.shape[0] else None
            z = z[batch_windows(frames, z.shape[0], c.window).to(z.device)]
        elif tuple(z.shape[1:]) not in (fshape, (c.window, *fshape)):
            raise SplitleakError(f"features of shape {list(z.shape)} do not fit this head's {list(fshape)}")
        images = []
        with torch.no_grad():
            for chunk in z.split(c.inverter.batch):
                images.append(self.render(prior, model(chunk), bb.size).float())
        x = torch.cat(images)
        centre = z[:, c.window // 2] if z.dim() == len(fshape) + 2 else z
        mask = torch.isfinite(centre)
        loss = feature_loss(bb.query(x), torch.where(mask, centre, 0.0), mask).cpu()  # one query
        info = {"training": training, "inverter_parameters": sum(p.numel() for p in model.parameters())}
        return FeatureResult(x, loss, info=info)

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
        c = self.config
        return {"attack": self.name, "output": self.output, "head": probe_fingerprint(bb.query),
                "input_shape": list(bb.input_shape), "feature_shape": list(fshape),
                "prior": self._prior_id(prior),
                "steps": c.steps if self.output == "noise" else None, "text": c.text,
                "query_source": c.query.source, "query_frames": c.query.frames, "flip": c.query.flip,
                "window": c.window, "width": self.width, "iterations": c.inverter.iterations,
                "lr": c.inverter.lr, "batch": c.inverter.batch, "seed": bb.seed, "version": 1}

    def _prior_id(self, prior: Any) -> str | None:
        if prior is None:
            return None
        if id(prior) not in self._prior_ids:
            self._prior_ids[id(prior)] = module_fingerprint(prior.unet, prior.vae)
        return self._prior_ids[id(prior)]

    def inverter(self, bb: BlackBoxCase, fshape: tuple[int, ...],
                 prior: Any) -> tuple[FeatureInverter, dict[str, Any]]:
        """The trained G for this head, prior and settings (from memory, the disk cache, or trained
        now), and how it was trained or loaded."""
        key = self._key(bb, fshape, prior)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        if digest not in self._inverters:
            self._inverters[digest] = self._load_or_train(bb, fshape, prior, key, digest)
        return self._inverters[digest]

    def _load_or_train(self, bb: BlackBoxCase, fshape: tuple[int, ...], prior: Any, key: dict[str, Any],
                       digest: str) -> tuple[FeatureInverter, dict[str, Any]]:
        tag = re.sub(r"[^A-Za-z0-9_.-]+", "", bb.tag.replace(":", ""))
        folder = Path(self.config.cache_dir or default_cache_dir()) / "-".join(filter(None, (self.name, tag, digest)))
        if (folder / CONFIG).is_file():
            model, info = load_inverter(folder, bb.device)
            return model, {**info.get("training", {}), "cached": True, "folder": str(folder)}
        model, log = self.train(bb, fshape, prior)
        save_inverter(model, folder, {"key": key, "training": log})
        return model, {**log, "cached": False, "folder": str(folder)}

    def build(self, bb: BlackBoxCase, fshape: tuple[int, ...], prior: Any) -> FeatureInverter:
        channels, side = self.out_shape(prior, bb.size)
        config = InverterConfig(fshape, channels, side, self.output, self.config.window, self.width,
                                default_levels(side))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(bb.seed)
            return FeatureInverter(config)

    def train(self, bb: BlackBoxCase, fshape: tuple[int, ...], prior: Any) -> tuple[FeatureInverter, dict[str, Any]]:
        """Fit G on query pairs from `query_source`; returns G (eval mode) and a training log."""
        c, t = self.config, self.config.inverter
        started = time.perf_counter()
        x, starts = query_images(c.query.source, bb.size, c.query.frames, bb.seed)
        if c.query.flip:
            x, starts = torch.cat([x, x.flip(-1)]), starts + [len(x) + s for s in starts]
        z = torch.cat([bb.query(chunk) for chunk in x.split(32)])
        model = self.build(bb, fshape, prior)
        model.set_normalisation(z)
        model.to(bb.device).train()
        x, z = x.to(bb.device), z.to(bb.device)
        with torch.no_grad():
            target = torch.cat([self.targets(prior, c) for c in x.split(32)])
        idx = windows(len(x), c.window, starts).to(bb.device)
        opt = adam(model.parameters(), t.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * s / max(1, t.iterations))))
        gen = torch.Generator().manual_seed(bb.seed)
        # every step's batch drawn up front (the same draws as one per step) and moved once
        picks = torch.randint(len(x), (t.iterations, min(t.batch, len(x))), generator=gen).to(bb.device)
        pending: list[torch.Tensor] = []  # losses on the device, read back every CHECK_EVERY steps
        losses: list[float] = []
        bar = tqdm(range(t.iterations), desc=f"{self.name}: train inverter", unit="it",
                   disable=not c.progress, leave=False)
        for step in bar:
            pick = picks[step]
            zin = z[idx[pick]] if c.window > 1 else z[pick]
            loss = self.train_loss(prior, model(zin), target[pick], x[pick])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            pending.append(loss.detach())
            if len(pending) == CHECK_EVERY or step == t.iterations - 1:
                losses += torch.stack(pending).tolist()
                pending = []
                bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        model.eval()
        head = max(1, len(losses) // 10)
        log = {"query_images": len(x), "queries": bb.query.images, "iterations": t.iterations,
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


@dataclass(frozen=True)
class BBDMBConfig(BlackBoxConfig):
    """bb-dmb adds `start`: the DDIM steps the LDM runs from G's output (steps: end to end)."""

    start: int = 1

    def check(self) -> None:
        super().check()
        require(1 <= self.start <= self.steps, f"start must be between 1 and steps ({self.steps}), got {self.start}")


@register
class BlackBoxDMB(BlackBoxAttack):
    """bb-dmb: G maps features to a clean latent, DDIM inversion takes it `start` steps up the LDM's
    schedule and the LDM runs those steps; x = D(latent). start = steps: G -> the initial noise v,
    trained end to end through the unrolled sampler (checkpointed) and the decoder on the pixel loss."""

    name: ClassVar[str] = "bb-dmb"
    output: ClassVar[str] = "noise"
    default_width: ClassVar[int] = 32
    access: ClassVar[frozenset[str]] = frozenset({"features", "query", "prior"})

    Config = BBDMBConfig

    @property
    def end_to_end(self) -> bool:
        return self.config.start == self.config.steps

    def describe(self) -> dict[str, Any]:
        return {**super().describe(),
                "training_loss": "pixel mse through the sampler" if self.end_to_end else "mse to E(x_q)"}

    def _key(self, bb: BlackBoxCase, fshape: tuple[int, ...], prior: Any) -> dict[str, Any]:
        target = "pixels through the sampler" if self.end_to_end else "clean latent"
        return {**super()._key(bb, fshape, prior), "start": self.config.start, "target": target}

    def out_shape(self, prior: Any, size: int) -> tuple[int, int]:
        return int(prior.latent_shape[0]), int(prior.latent_shape[-1])

    def targets(self, prior: Any, x: torch.Tensor) -> torch.Tensor:
        return x if self.end_to_end else prior.encode(resize(x, prior.image_size)).float()

    def render(self, prior: Any, out: torch.Tensor, size: int) -> torch.Tensor:
        c, out = self.config, out.to(prior.dtype)
        if self.end_to_end:
            latent = prior.sample(normalise(out), steps=c.steps, text=c.text, checkpoint=torch.is_grad_enabled())
        else:
            start = prior.invert(out, steps=c.steps, upto=c.start, text=c.text)
            latent = prior.sample(start, steps=c.steps, text=c.text, checkpoint=False, last=c.start)
        return resize(prior.decode(latent).float(), size)

    def train_loss(self, prior: Any, out: torch.Tensor, target: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not self.end_to_end:
            return F.mse_loss(out, target)
        return F.mse_loss(self.render(prior, out, x.shape[-1]), x)
