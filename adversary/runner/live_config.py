"""attack-live's settings, apart from the loop so that each attack path can read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from splitleak.wire.channel import MAX_MESSAGE_BYTES, TlsFiles


@dataclass
class LiveConfig:
    """What to tap, which attack to run, where to write; defaults are the CLI's. `batch` /
    `batch_timeout` None: the attack path's (8 frames / 0.5 s for feature attacks, 64 / 1 s for the
    batched gradient engine, one update at a time for the other gradient attacks)."""

    cloud: str
    attack: str
    out: str
    truth: str | None = None
    batch: int | None = None
    batch_timeout: float | None = None  # seconds to wait for a batch to fill once its first item is in
    device: str = "cpu"
    token: str | None = None
    tls: TlsFiles = field(default_factory=TlsFiles)
    stream_ids: tuple[str, ...] = ()
    max_frames: int | None = None
    queue_size: int = 1024
    max_message_bytes: int = MAX_MESSAGE_BYTES  # the tap's receive limit (--max-message-mb)
    iterations: int | None = None
    seed: int = 0
    weights_path: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None
    config_file: str | None = None
    prior: str | None = None  # a prior folder or hub name, for attacks whose access includes "prior"
    connect_timeout: float = 10.0
    progress: bool = True
