"""`splitleak train-prior`: train a small diffusion prior on footage the attacker has."""
from __future__ import annotations

import argparse

from splitleak.checks import check_output_dir
from splitleak.cli.common import (
    add_device,
    add_threads,
    apply_threads,
    batch_size,
    int_in,
    learning_rate,
    non_negative_int,
    positive_int,
    resolve_device,
    seed,
    size_px,
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train-prior", help="train a diffusion prior on footage",
        description="Train a pixel DDPM (default) or a small VAE + latent DDPM (--latent) on frames of SRC; "
        "save it in diffusers format (unet/, scheduler/, vae/, prior.json, train_log.csv, samples.png) "
        "for attacks that take --prior DIR.")
    train.add_argument("--source", required=True, metavar="SRC",
                       help="footage: a video file, a folder of images, sample:NAME, synthetic[:WxH], camera:N")
    train.add_argument("--out", required=True, metavar="DIR", help="output folder (new, or with --resume)")
    train.add_argument("--latent", action="store_true", help="a latent prior: train a small VAE first")
    train.add_argument("--size", type=size_px, default=64, help="image side in pixels (default 64)")
    train.add_argument("--steps", type=positive_int, default=800,
                       help="diffusion training steps in total (default 800: minutes on a CPU)")
    train.add_argument("--vae-steps", type=positive_int, help="VAE steps with --latent (default: steps / 2)")
    train.add_argument("--decoder-steps", type=non_negative_int, default=0,
                       help="with --latent: then fine-tune the VAE's decoder alone, encoder frozen (sharper images "
                            "from the same latents, as Stable Diffusion's ft-MSE decoder; default 0)")
    train.add_argument("--vae-widths", type=widths, metavar="C1,C2,...",
                       help="with --latent: VAE block widths, one per level (default 16,32,32; the VAE's "
                            "reconstruction bounds every latent attack's quality)")
    train.add_argument("--vae-down", type=int, choices=(4, 8), default=4, help="VAE down-sampling (default 4)")
    train.add_argument("--batch", type=batch_size, default=8, help="batch size (default 8)")
    train.add_argument("--lr", type=learning_rate, default=1e-3, help="UNet learning rate (default 1e-3)")
    train.add_argument("--frames", type=positive_int, default=512, help="use at most N frames (default 512)")
    train.add_argument("--widths", type=widths, metavar="C1,C2,...",
                       help="UNet block widths, multiples of 8 (default by size, e.g. 32,64,64)")
    train.add_argument("--text", metavar="CAPTION",
                       help="train a text-conditioned UNet on this caption (project's own byte-level encoder)")
    train.add_argument("--seed", type=seed, default=0, help="seed (default 0)")
    train.add_argument("--save-every", type=positive_int, default=250, help="checkpoint every N steps")
    train.add_argument("--preview", type=int_in(0, 64, " (sample images)"), default=8,
                       help="samples in samples.png at the end (0: none)")
    train.add_argument("--resume", action="store_true", help="continue the run saved in --out up to --steps")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device(train)
    add_threads(train)
    train.set_defaults(run=run_train_prior)


def widths(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or any(v < 8 or v % 8 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated multiples of 8, e.g. 32,64,64; got {text!r}")
    return values


def run_train_prior(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")
    from adversary.priors.train import TrainConfig, train_prior

    apply_threads(args)
    cfg = TrainConfig(source=args.source, out=args.out, latent=args.latent, size=args.size, steps=args.steps,
                      vae_steps=args.vae_steps, decoder_steps=args.decoder_steps, vae_down=args.vae_down,
                      batch=args.batch, lr=args.lr, frames=args.frames, text=args.text, widths=args.widths or [],
                      vae_widths=args.vae_widths or [], seed=args.seed, save_every=args.save_every,
                      preview=args.preview, resume=args.resume, device=resolve_device(args.device))
    meta = train_prior(cfg, show=not args.quiet)
    timing = ", ".join(f"{phase} {seconds:.3f} s/step" for phase, seconds in meta["seconds_per_step"].items())
    steps = ", ".join(f"{phase} {n}" for phase, n in meta["steps"].items() if n)
    losses = ", ".join(f"{phase} {loss:.4f}" for phase, loss in meta["losses"].items())
    print(f"prior saved to {args.out}: steps {steps}; final losses {losses}; measured {timing or 'no new steps'}")
    return 0
