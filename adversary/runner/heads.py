"""Rebuild the head F1 the white-box threat model grants, from a frame's metadata."""

from __future__ import annotations

from splitleak.errors import SplitleakError
from splitleak.models import SplitModel, build_split_model

from adversary.runner.meta import HeadKey


def weights_source(tag: str, weights_path: str | None) -> str:
    """What build_split_model needs to rebuild weights `tag`: the tag, a torchvision name, or the file."""
    kind, _, value = tag.partition(":")
    if kind == "seed":
        return tag
    if kind == "tv" and value:
        return value
    if kind == "file" and value:
        if weights_path is None:
            raise SplitleakError(f"the recording's head uses weights {tag}, which cannot be rebuilt from the tag; "
                                 f"pass the head's state-dict file with --weights PATH")
        return weights_path
    raise SplitleakError(f"unknown weights tag {tag!r} in the recording; expected seed:N, file:HASH or tv:NAME")


def build_head(key: HeadKey, device: str, weights_path: str | None = None) -> SplitModel:
    """The split model whose head made frames of `key`; refuses a weights file whose tag differs."""
    source = weights_source(key.weights, weights_path)
    try:
        model = build_split_model(key.model, key.split, size=key.size, weights=source,
                                  num_classes=key.num_classes, device=device, classifier=key.classifier or None)
    except SplitleakError as err:
        raise SplitleakError(f"cannot rebuild the head {key.model}/{key.split} at {key.size}px: {err}") from None
    if model.weights != key.weights:
        raise SplitleakError(f"--weights {weights_path} is {model.weights}, but the recording's head uses "
                             f"{key.weights}; pass the file the edge ran")
    for p in model.head.parameters():
        p.requires_grad_(False)
    return model


def check_weights_path(keys: set[HeadKey], weights_path: str | None) -> None:
    """Refuse --weights when no head in the recording was loaded from a file (it would be ignored)."""
    if weights_path is not None and not any(k.weights.startswith("file:") for k in keys):
        tags = ", ".join(sorted({k.weights for k in keys}))
        raise SplitleakError(f"--weights {weights_path} given, but the recording's heads use {tags}, "
                             f"not a weights file")
