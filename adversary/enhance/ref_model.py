"""Reference-based super-resolution in TTSR's spirit, small enough to train on this CPU.

Both the low frame and the references are brought to the same blur level at the references'
scale: the low frame is upsampled (bicubic), the references are degraded (area-downsampled, as
recovered frames are) and upsampled again. Relevance embedding: normalised inner products of
unfolded k x k patches of the two, on the low frame's grid (one position per low-res pixel).
Hard attention: per position, the index of the best-matching patch across ALL references.
Soft attention: its relevance. The high-resolution reference patch at that index (and its
blurred twin) is folded back into a texture map; a small fusion network decides, per pixel,
how much of the texture's detail (reference minus its blurred twin) to add to the upsampled
frame, and corrects what remains.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# at most this many relevance entries (query positions x reference positions) at once (~256 MB)
RELEVANCE_CHUNK = 64 * 1024 * 1024


@dataclass(frozen=True)
class RefConfig:
    """What a reference-SR weight file needs to rebuild its network."""

    scale: int = 4
    channels: int = 48
    blocks: int = 4
    patch: int = 3  # matching patch side, in low-res pixels

    def to_dict(self) -> dict:
        return asdict(self)


def degrade(high: torch.Tensor, scale: int) -> torch.Tensor:
    """What `to_model_input`'s area resize does to a frame scale times larger: average pooling."""
    return F.avg_pool2d(high, scale)


def upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


def match_embedding(x_up: torch.Tensor, scale: int, patch: int) -> torch.Tensor:
    """(B, 3, H, W) frames at the references' scale -> unit-norm patch vectors (B, 3*patch^2, L),
    one per low-res grid position. Each frame is centred on its own mean colour, so the inner
    product compares structure and colour contrast rather than absolute brightness."""
    grid = F.avg_pool2d(x_up, scale)
    grid = grid - grid.mean(dim=(2, 3), keepdim=True)
    cols = F.unfold(grid, patch, padding=patch // 2)
    return F.normalize(cols, dim=1, eps=1e-6)


def hard_soft_attention(query: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """query (N, D, L), keys (R, D, M) -> (index (N, L) into the R*M reference patches, reference r's
    patch m at r*M + m; relevance (N, L) of that best match). One matmul per chunk of frames."""
    n, d, length = query.shape
    flat = keys.permute(1, 0, 2).reshape(d, -1)  # (D, R*M)
    per_frame = length * flat.shape[1]
    step = max(1, RELEVANCE_CHUNK // max(per_frame, 1))
    best, index = [], []
    for i in range(0, n, step):
        relevance = torch.matmul(query[i:i + step].transpose(1, 2), flat)  # (n, L, R*M)
        s, j = relevance.max(dim=-1)
        best.append(s)
        index.append(j)
    return torch.cat(index), torch.cat(best)


def transfer(source: torch.Tensor, index: torch.Tensor, scale: int, patch: int) -> torch.Tensor:
    """Fold the high-res patches of `source` (R, C, H, W) picked by `index` (N, L) into (N, C, H, W).
    Patch m of a reference covers (patch*scale)^2 pixels around grid position m; overlaps average."""
    r, c, h, w = source.shape
    kernel, pad = patch * scale, (patch // 2) * scale
    cols = F.unfold(source, kernel, stride=scale, padding=pad)  # (R, C*k*k, M)
    flat = cols.permute(1, 0, 2).reshape(cols.shape[1], -1)  # (C*k*k, R*M)
    n, length = index.shape
    picked = flat[:, index.reshape(-1)].reshape(-1, n, length).permute(1, 0, 2)
    folded = F.fold(picked, (h, w), kernel, stride=scale, padding=pad)
    weight = F.fold(torch.ones_like(picked[:1, :kernel * kernel]), (h, w), kernel, stride=scale, padding=pad)
    return folded / weight


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class GridFusion(nn.Module):
    """High-res maps -> high-res output through convolutions on the low-res grid: pixel-unshuffle
    (lossless) by `scale`, residual blocks, pixel-shuffle back. Cheap: every conv runs at h x w."""

    def __init__(self, in_channels: int, out_channels: int, scale: int, channels: int, blocks: int):
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(in_channels * scale * scale, channels, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(channels) for _ in range(blocks)])
        self.tail = nn.Conv2d(channels, out_channels * scale * scale, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.head(F.pixel_unshuffle(x, self.scale)))
        return F.pixel_shuffle(self.tail(self.body(y)), self.scale)


@dataclass
class Texture:
    """What the attention found for each low frame, at the references' scale."""

    up: torch.Tensor  # the low frame upsampled (N, 3, H, W)
    texture: torch.Tensor  # reference patches at the best matches (N, 3, H, W)
    detail: torch.Tensor  # texture minus its blurred twin: what the low frame lacks (N, 3, H, W)
    confidence: torch.Tensor  # soft attention, upsampled (N, 1, H, W)
    index: torch.Tensor  # hard attention (N, L)


def find_texture(low: torch.Tensor, refs: torch.Tensor, scale: int, patch: int) -> Texture:
    """Relevance embedding, hard and soft attention and texture transfer (no learned weights)."""
    up = upsample(low, scale)
    refs_blur = upsample(degrade(refs, scale), scale)
    index, best = hard_soft_attention(match_embedding(up, scale, patch), match_embedding(refs_blur, scale, patch))
    texture = transfer(refs, index, scale, patch)
    detail = texture - transfer(refs_blur, index, scale, patch)
    grid = best.reshape(low.shape[0], 1, low.shape[2], low.shape[3])
    confidence = F.interpolate(grid, scale_factor=scale, mode="nearest")
    return Texture(up, texture, detail, confidence, index)


class RefSR(nn.Module):
    """Texture search (fixed) + fusion (learned): out = up + gate * detail + residual; the untrained
    net is the analytic fusion, so training starts from it."""

    def __init__(self, config: RefConfig = RefConfig()):
        super().__init__()
        self.config = config
        self.fusion = GridFusion(10, 4, config.scale, config.channels, config.blocks)

    def forward(self, low: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
        t = find_texture(low, refs, self.config.scale, self.config.patch)
        return self.fuse(t)

    @staticmethod
    def from_config(config: dict) -> "RefSR":
        """The net a train-sr folder's config.json describes (its "net" entry)."""
        return RefSR(RefConfig(**config["net"]))

    def fuse(self, t: Texture) -> torch.Tensor:
        """The analytic fusion, corrected: the net adds to its gate and a residual (both start at 0)."""
        out = self.fusion(torch.cat([t.up, t.texture, t.detail, t.confidence], dim=1))
        gate = (analytic_gate(t.confidence) + out[:, :1]).clamp(0, 1)
        return t.up + gate * t.detail + out[:, 1:]


def analytic_gate(confidence: torch.Tensor, threshold: float = 0.6, full: float = 0.95) -> torch.Tensor:
    """How much reference detail to trust: none below `threshold` relevance, all above `full`."""
    return ((confidence - threshold) / (full - threshold)).clamp(0, 1)


def analytic_fuse(t: Texture) -> torch.Tensor:
    """Fusion without weights: add the detail where the soft attention is confident."""
    return t.up + analytic_gate(t.confidence) * t.detail
