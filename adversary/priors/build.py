"""Architectures of the priors the project builds itself: small diffusers UNets and VAEs."""

from __future__ import annotations

import diffusers

from adversary.priors.text import ByteTextEncoder

GROUPS = 8


def build_unet(side: int, channels: int, widths: tuple[int, ...] = (32, 64, 64), layers: int = 1,
               cross_attention_dim: int | None = None, head_dim: int = 8) -> diffusers.UNet2DModel:
    """A UNet over (channels, side, side), attention at the lowest resolution only.

    With `cross_attention_dim` a UNet2DConditionModel (cross-attention to text there).
    """
    n = len(widths)
    common = dict(sample_size=side, in_channels=channels, out_channels=channels, layers_per_block=layers,
                  block_out_channels=tuple(widths), norm_num_groups=GROUPS)
    if cross_attention_dim is None:
        return diffusers.UNet2DModel(
            down_block_types=("DownBlock2D",) * (n - 1) + ("AttnDownBlock2D",),
            up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (n - 1),
            attention_head_dim=head_dim, **common)
    return diffusers.UNet2DConditionModel(
        down_block_types=("DownBlock2D",) * (n - 1) + ("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * (n - 1),
        cross_attention_dim=cross_attention_dim, attention_head_dim=head_dim, **common)


def build_vae(channels: tuple[int, ...] = (32, 64, 64), latent_channels: int = 4) -> diffusers.AutoencoderKL:
    """A small AutoencoderKL: down-sampling 2 ** (len(channels) - 1)."""
    n = len(channels)
    return diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=tuple(channels),
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=1, norm_num_groups=GROUPS, sample_size=64)


def build_text_encoder(dim: int = 64, max_length: int = 32) -> ByteTextEncoder:
    """The project's fixed byte-level text encoder (see adversary.priors.text)."""
    return ByteTextEncoder(dim=dim, max_length=max_length, heads=max(1, dim // 16))


def make_scheduler(train: bool = False, pixel: bool = False, timesteps: int = 1000) -> diffusers.SchedulerMixin:
    """DDPM for training, DDIM for sampling; v-prediction, no clipping (keeps gradients).

    v-prediction keeps the predicted clean sample bounded at high noise (epsilon prediction
    divides its error by sqrt(alpha_bar) ~ 0.006 there, which wrecks few-step DDIM on a briefly
    trained model). Latent priors use Stable Diffusion's scaled-linear betas, pixel priors
    DDPM's linear ones.
    """
    betas = dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02) if pixel else \
        dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    config = dict(num_train_timesteps=timesteps, prediction_type="v_prediction", clip_sample=False, **betas)
    if train:
        return diffusers.DDPMScheduler(**config)
    return diffusers.DDIMScheduler(**config, set_alpha_to_one=False, steps_offset=1, timestep_spacing="trailing")
