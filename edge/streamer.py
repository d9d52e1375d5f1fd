"""Split inference at the edge: capture -> preprocess -> head F1 -> codec -> link -> gRPC."""
from __future__ import annotations

import numpy as np
import torch

from edge.link import LinkClosed
from edge.session import EdgeConfig, EdgeSession
from edge.uplink import INFER
from splitleak import codecs
from splitleak.errors import SplitleakError
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.video import to_model_input

__all__ = ["EdgeConfig", "EdgeStreamer", "fill_frame_meta"]


class EdgeStreamer(EdgeSession):
    """Streams a source through the head to the cloud; `run()` returns the summary dict."""

    method = INFER

    def __init__(self, config: EdgeConfig):
        if config.mode != "infer":
            raise SplitleakError(f"EdgeStreamer runs split inference, not {config.mode}")
        super().__init__(config)

    def _produce(self) -> None:
        for frame in self.source:
            if self.uplink.error:
                return
            try:
                self._send(frame.index, frame.image, frame.capture_ts)
            except LinkClosed:  # the uplink gave up while this frame waited for the window
                self.stats.on_lost([frame.index])
                return

    def _send(self, seq: int, image: np.ndarray, capture_ts: float) -> None:
        x = to_model_input(image, self.model.size)
        if self.truth:
            self.truth.write(self.config.stream_id, seq, x)
        with torch.inference_mode():
            z = self.model.head(torch.from_numpy(x)[None].to(self.config.device))
        message = pb.FeatureFrame()
        fill_frame_meta(message.meta, self, seq, capture_ts)
        message.codec.CopyFrom(codecs.encode(self.config.codec, z.float().cpu().numpy(), message.features))
        nbytes = message.ByteSize()
        self.stats.on_sent(seq, capture_ts, nbytes)
        self.link.send(message, nbytes)


def fill_frame_meta(meta: pb.FrameMeta, session: EdgeSession, seq: int, capture_ts: float) -> None:
    """Stream, sequence number, time, and the model and split the payload came through."""
    m = session.model
    meta.stream_id, meta.seq, meta.capture_ts = session.config.stream_id, seq, capture_ts
    meta.model_id, meta.split_point, meta.weights = m.name, m.split, m.weights
    meta.input_size, meta.num_classes = m.size, m.num_classes
