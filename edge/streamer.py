"""The edge pipeline: capture -> preprocess -> head F1 -> codec -> link -> gRPC uplink."""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from edge.link import LinkClosed, LinkEmulator, LinkSpec
from edge.stats import StreamStats
from edge.uplink import Uplink
from splitleak import codecs
from splitleak.errors import SplitleakError
from splitleak.models import build_split_model
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.video import TruthWriter, open_source, to_model_input
from splitleak.wire.channel import TlsFiles, check_target

STREAM_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass
class EdgeConfig:
    cloud: str
    source: str
    model: str
    split: str
    frames: int | None = None
    size: int | None = None
    codec: str = "fp32"
    link: str = ""
    truth: str | None = None
    stats: str | None = None
    device: str = "cpu"
    seed: int = 0
    weights: str = "seed:0"
    num_classes: int = 0
    stream_id: str = "edge0"
    token: str | None = None
    tls: TlsFiles = field(default_factory=TlsFiles)
    retry_for: float = 30.0
    progress: bool = True


class EdgeStreamer:
    """Streams a source through the head to the cloud; `run()` returns the summary dict."""

    def __init__(self, config: EdgeConfig):
        check_target(config.cloud)
        codecs.check_name(config.codec)
        if not STREAM_ID.match(config.stream_id):
            raise SplitleakError(f"stream id {config.stream_id!r} must be 1-64 of [A-Za-z0-9._-]")
        if config.frames is not None and config.frames < 1:
            raise SplitleakError("--frames must be at least 1")
        self.config = config
        self.spec = LinkSpec.parse(config.link)
        self.model = build_split_model(config.model, config.split, size=config.size, weights=config.weights,
                                       num_classes=config.num_classes, device=config.device)
        if self.model.input_kind != "image":
            raise SplitleakError(f"{config.model} takes clips; the edge streams single frames (use an image model)")
        self.source = open_source(config.source, frames=config.frames, seed=config.seed)
        self.truth = TruthWriter(config.truth) if config.truth else None
        self.stats = StreamStats()
        self.link = LinkEmulator(self.spec, seed=config.seed, on_drop=lambda frame: self.stats.on_lost([frame.meta.seq]))

    def run(self) -> dict[str, Any]:
        self.stats.started = time.time()
        bar = tqdm(total=self.config.frames, unit="frame", desc=f"edge {self.config.stream_id}",
                   disable=not self.config.progress, leave=False)
        uplink = Uplink(self.config.cloud, self.link, self.stats, tls=self.config.tls, token=self.config.token,
                        retry_for=self.config.retry_for, on_answer=lambda: bar.update(1)).start()
        try:
            with self.source:
                for frame in self.source:
                    if uplink.error:
                        break
                    try:
                        self._send(frame.index, frame.image, frame.capture_ts)
                    except LinkClosed:  # the uplink gave up while this frame waited for the window
                        self.stats.on_lost([frame.index])
                        break
        finally:
            self.link.close()
            uplink.join()
            bar.close()
            self.stats.finish()
        summary = self._summary(uplink.error)
        if self.config.stats:
            Path(self.config.stats).parent.mkdir(parents=True, exist_ok=True)
            Path(self.config.stats).write_text(json.dumps(summary, indent=2))
        if uplink.error:
            raise SplitleakError(uplink.error)
        return summary

    def _send(self, seq: int, image: np.ndarray, capture_ts: float) -> None:
        x = to_model_input(image, self.model.size)
        if self.truth:
            self.truth.write(self.config.stream_id, seq, x)
        with torch.inference_mode():
            z = self.model.head(torch.from_numpy(x)[None].to(self.config.device))
        message = self._message(seq, capture_ts, z.float().cpu().numpy())
        nbytes = message.ByteSize()
        self.stats.on_sent(seq, capture_ts, nbytes)
        self.link.send(message, nbytes)

    def _message(self, seq: int, capture_ts: float, z: np.ndarray) -> pb.FeatureFrame:
        m = self.model
        message = pb.FeatureFrame()
        message.meta.stream_id = self.config.stream_id
        message.meta.seq = seq
        message.meta.capture_ts = capture_ts
        message.meta.model_id, message.meta.split_point, message.meta.weights = m.name, m.split, m.weights
        message.meta.input_size, message.meta.num_classes = m.size, m.num_classes
        message.codec.CopyFrom(codecs.encode(self.config.codec, z, message.features))
        return message

    def _summary(self, error: str | None) -> dict[str, Any]:
        out = self.stats.summary()
        out.update(model=self.model.name, split=self.model.split, size=self.model.size, codec=self.config.codec,
                   link=str(self.spec), source=self.config.source, stream_id=self.config.stream_id)
        if error:
            out["error"] = error
        return out
