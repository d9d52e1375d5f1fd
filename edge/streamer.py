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
        self.top1: dict[int, int] = {}  # seq -> the cloud's top-1 class (utility against an undefended run)

    def _produce(self) -> None:
        """One message per frame, or per clip of clip_len frames for a clip model (seq = first frame)."""
        per_message = self.model.clip_len if self.model.input_kind == "clip" else 1
        pending: list = []
        for frame in self.frames():
            if self.uplink.error:
                return
            if per_message == 1 and not self._admit(frame):
                continue
            pending.append(frame)
            if len(pending) < per_message:
                continue
            try:
                self._send(pending)
            except LinkClosed:  # the uplink gave up while this message waited for the window
                self.stats.on_lost([pending[0].index])
                return
            pending = []

    def _admit(self, frame) -> bool:
        """Whether the defence and the congestion policy let this frame go; a frame kept back is still
        truth (it was captured: the adversary simply never sees it)."""
        if self.defence.keep_frame(frame.index) and self.congestion.admit():
            return True
        self.skipped += 1
        if self.truth:
            self.truth.write(self.config.stream_id, frame.index, to_model_input(frame.image, self.model.size))
        return False

    def _on_answer(self, answer) -> None:
        super()._on_answer(answer)
        self.congestion.on_answer(answer.seq)
        if answer.HasField("prediction") and answer.prediction.classes:
            self.top1[answer.seq] = int(answer.prediction.classes[0])

    def summary(self) -> dict:
        return {**super().summary(), "top1": {str(seq): c for seq, c in sorted(self.top1.items())}}

    def _send(self, frames: list) -> None:
        seq, capture_ts = frames[0].index, frames[0].capture_ts
        xs = [to_model_input(f.image, self.model.size) for f in frames]
        if self.truth:
            for f, x in zip(frames, xs):
                self.truth.write(self.config.stream_id, f.index, x)
        # an image model takes (1, 3, H, W); a clip model (1, 3, T, H, W)
        x = xs[0][None] if len(xs) == 1 else np.stack(xs, axis=1)[None]
        with torch.inference_mode():
            z = self.defence.features(self.model.head(torch.from_numpy(x).to(self.config.device)))
        message = pb.FeatureFrame()
        fill_frame_meta(message.meta, self, seq, capture_ts)
        codec = self.congestion.codec()
        message.codec.CopyFrom(codecs.encode(codec, z.float().cpu().numpy(), message.features))
        nbytes = message.ByteSize()
        self.check_message_size(nbytes, f"frame {seq}")
        self.stats.on_sent(seq, capture_ts, nbytes)
        self.congestion.on_sent(seq, nbytes, codec)
        self.link.send(message, nbytes)


def fill_frame_meta(meta: pb.FrameMeta, session: EdgeSession, seq: int, capture_ts: float) -> None:
    """Stream, sequence number, time, and the model and split the payload came through."""
    m = session.model
    meta.stream_id, meta.seq, meta.capture_ts = session.config.stream_id, seq, capture_ts
    meta.model_id, meta.split_point, meta.weights = m.name, m.split, m.weights
    meta.input_size, meta.num_classes, meta.classifier = m.size, m.num_classes, m.classifier or ""
