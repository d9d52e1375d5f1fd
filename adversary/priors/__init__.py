"""Priors for feature inversion: diffusion priors built from diffusers components.

`DiffusionPrior` (sample / decode / encode / encode_text), `load_prior` (a local diffusers
folder or a hub name), `make_tiny_prior` (tests), `save_prior`; `splitleak train-prior`
trains one on the attacker's footage (adversary.priors.train).
"""

from adversary.priors.diffusion import DiffusionPrior, make_tiny_prior
from adversary.priors.io import load_prior
from adversary.priors.io import save_prior

__all__ = ["DiffusionPrior", "load_prior", "make_tiny_prior", "save_prior"]
