"""Priors on disk: diffusers format, one sub-folder per component, plus prior.json.

A folder holds unet/ and scheduler/, optionally vae/, text_encoder/ (+ tokenizer/ for CLIP)
and prior.json (image size, latent shape, how it was trained). Any diffusers pipeline folder
with a UNet2D(Condition)Model loads too; its scheduler is re-read as DDIM.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import diffusers
import torch

from adversary.priors.diffusion import DiffusionPrior
from adversary.priors.text import load_text_encoder
from splitleak.errors import SplitleakError

log = logging.getLogger(__name__)
PRIOR_JSON = "prior.json"
_UNETS = {"UNet2DModel": diffusers.UNet2DModel, "UNet2DConditionModel": diffusers.UNet2DConditionModel}
_VAES = {"AutoencoderKL": diffusers.AutoencoderKL, "AutoencoderTiny": diffusers.AutoencoderTiny}
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def read_meta(folder: str | Path) -> dict:
    """prior.json of a folder ({} when absent); SplitleakError when unreadable."""
    path = Path(folder) / PRIOR_JSON
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SplitleakError(f"{path}: unreadable prior.json ({err})") from None


def save_prior(prior: DiffusionPrior, folder: str | Path, meta: dict | None = None) -> Path:
    """Write every component with save_pretrained, and prior.json (shape info + meta)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    prior.unet.save_pretrained(folder / "unet")
    prior.scheduler.save_pretrained(folder / "scheduler")
    if prior.vae is not None:
        prior.vae.save_pretrained(folder / "vae")
    if prior.text_encoder is not None and hasattr(prior.text_encoder, "save_pretrained"):
        prior.text_encoder.save_pretrained(folder / "text_encoder")
    info = {"format": "splitleak-prior", "version": 1, **(meta or {}), **prior.describe()}
    tmp = folder / (PRIOR_JSON + ".tmp")
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, folder / PRIOR_JSON)
    return folder


def _class_name(root: str | Path, subfolder: str) -> str | None:
    path = Path(root) / subfolder / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("_class_name")
    except (OSError, ValueError):
        raise SplitleakError(f"{path}: unreadable config") from None


def _load_local(folder: Path) -> DiffusionPrior:
    unet_name = _class_name(folder, "unet")
    if unet_name is None or not (folder / "scheduler").is_dir():
        raise SplitleakError(f"{folder}: not a prior folder (needs unet/config.json and scheduler/)")
    if unet_name not in _UNETS:
        raise SplitleakError(f"{folder}: unsupported UNet {unet_name!r} (want {' or '.join(_UNETS)})")
    unet = _UNETS[unet_name].from_pretrained(folder, subfolder="unet", low_cpu_mem_usage=False)
    scheduler = diffusers.DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    vae_name = _class_name(folder, "vae")
    if vae_name is not None and vae_name not in _VAES:
        raise SplitleakError(f"{folder}: unsupported VAE {vae_name!r} (want {' or '.join(_VAES)})")
    vae = _VAES[vae_name].from_pretrained(folder, subfolder="vae", low_cpu_mem_usage=False) if vae_name else None
    text_encoder = None
    if unet_name == "UNet2DConditionModel" and (folder / "text_encoder").is_dir():
        text_encoder = load_text_encoder(str(folder))
    meta = read_meta(folder)
    shape = meta.get("latent_shape")
    prior = DiffusionPrior(unet=unet, scheduler=scheduler, vae=vae, text_encoder=text_encoder,
                           image_size=1, latent_shape=tuple(shape) if shape else None)
    side = int(meta.get("image_size") or _sample_side(unet) * prior.vae_scale)
    prior.image_size = side
    if not shape:
        prior.latent_shape = (int(unet.config.in_channels), side // prior.vae_scale, side // prior.vae_scale)
    return prior


def _sample_side(unet: torch.nn.Module) -> int:
    size = unet.config.sample_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def _load_hub(name: str) -> DiffusionPrior:
    """Components of a hub pipeline by name (needs network or the local hub cache)."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
    kwargs = {"local_files_only": True} if offline else {}
    models = {**kwargs, "low_cpu_mem_usage": False}
    try:
        unet = diffusers.UNet2DConditionModel.from_pretrained(name, subfolder="unet", **models)
        scheduler = diffusers.DDIMScheduler.from_pretrained(name, subfolder="scheduler", **kwargs)
        vae = diffusers.AutoencoderKL.from_pretrained(name, subfolder="vae", **models)
        from huggingface_hub import snapshot_download

        root = snapshot_download(name, allow_patterns=["text_encoder/*", "tokenizer/*"], **kwargs)
        try:
            text_encoder = load_text_encoder(root)
        except SplitleakError as err:  # no transformers: prompts unavailable, embeddings still work
            log.warning("%s", err)
            text_encoder = None
    except Exception as err:  # network, missing repo, bad files: all one reason for the user
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise SplitleakError(f"cannot load prior {name!r} from the model hub ({reason}); "
                             f"without network, pass a local folder (splitleak train-prior)") from None
    prior = DiffusionPrior(unet=unet, scheduler=scheduler, vae=vae, text_encoder=text_encoder, image_size=1)
    prior.image_size = _sample_side(unet) * prior.vae_scale
    side = prior.image_size // prior.vae_scale
    prior.latent_shape = (int(unet.config.in_channels), side, side)
    return prior


def load_prior(source: str, device: str | torch.device = "cpu") -> DiffusionPrior:
    """A prior from a local folder (diffusers format) or, where there is network, a hub name."""
    if not isinstance(source, (str, Path)) or not str(source).strip():
        raise SplitleakError("empty prior source")
    path = Path(source).expanduser()
    if path.is_dir():
        try:
            prior = _load_local(path)
        except SplitleakError:
            raise
        except Exception as err:
            raise SplitleakError(f"{path}: cannot load prior ({type(err).__name__}: "
                                 f"{str(err).strip().splitlines()[0][:200] if str(err).strip() else ''})") from None
    elif path.exists():
        raise SplitleakError(f"{source}: a prior is a folder, not a file")
    elif (_HUB_NAME.fullmatch(str(source)) and not str(source).startswith((".", "/", "~"))
          and not path.parent.is_dir()):
        prior = _load_hub(str(source))
    else:
        raise SplitleakError(f"no such prior folder: {source}")
    if torch.device(device) != prior.device:
        prior.to(device)
    return prior
