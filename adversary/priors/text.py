"""A tiny text encoder of the project's own: no CLIP weights exist offline.

`ByteTextEncoder` embeds the UTF-8 bytes of a caption (plus positions) and runs one small
transformer layer. It is initialised from a seed and kept fixed while a prior trains: it tells
captions apart but carries no language knowledge, so a prior trained with it follows only the
captions it was trained on. Where `transformers` is installed, a CLIP-style folder
(text_encoder/ + tokenizer/) loads instead through `load_text_encoder`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from splitleak.errors import SplitleakError


class ByteTextEncoder(ModelMixin, ConfigMixin):
    """prompts (list[str]) -> (B, max_length, dim) embeddings, byte level, fixed length."""

    @register_to_config
    def __init__(self, dim: int = 64, max_length: int = 32, heads: int = 4, layers: int = 1) -> None:
        super().__init__()
        self.tokens = nn.Embedding(257, dim, padding_idx=0)
        self.positions = nn.Parameter(torch.randn(1, max_length, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Byte ids + 1 (0 pads), truncated or padded to max_length."""
        length = self.config.max_length
        ids = torch.zeros(len(prompts), length, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            data = list(prompt.encode("utf-8"))[:length]
            if data:
                ids[row, : len(data)] = torch.tensor(data, dtype=torch.long) + 1
        return ids

    def forward(self, prompts: list[str]) -> torch.Tensor:
        if isinstance(prompts, str):
            prompts = [prompts]
        ids = self.tokenize(list(prompts)).to(self.positions.device)
        x = self.tokens(ids).to(self.positions.dtype) + self.positions
        return self.norm(self.encoder(x))


class ClipTextEncoder:
    """A transformers CLIP text model + tokenizer as a callable prompts -> last hidden states."""

    def __init__(self, model: nn.Module, tokenizer: object) -> None:
        self.model, self.tokenizer = model, tokenizer

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> ClipTextEncoder:
        self.model.to(device=device, dtype=dtype)
        return self

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                                max_length=self.tokenizer.model_max_length, return_tensors="pt")
        device = next(self.model.parameters()).device
        return self.model(tokens.input_ids.to(device))[0]


def load_text_encoder(root: str, subfolder: str = "text_encoder", **kwargs: object) -> object:
    """Our ByteTextEncoder, or a CLIP text model (needs transformers), from root/subfolder."""
    config = Path(root) / subfolder / "config.json"
    if config.is_file() and '"ByteTextEncoder"' in config.read_text():
        encoder = ByteTextEncoder.from_pretrained(root, subfolder=subfolder, low_cpu_mem_usage=False, **kwargs)
        return encoder.eval().requires_grad_(False)
    try:
        from transformers import AutoTokenizer, CLIPTextModel
    except ImportError:
        raise SplitleakError(f"{root}: its text encoder needs the transformers package "
                             f"(pip install transformers)") from None
    model = CLIPTextModel.from_pretrained(root, subfolder=subfolder, **kwargs).eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(root, subfolder="tokenizer", **kwargs)
    return ClipTextEncoder(model, tokenizer)
