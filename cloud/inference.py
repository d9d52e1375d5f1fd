"""Split inference at the cloud: check a frame at the door, decode it, run the tail, answer top-k.

Every frame gets one answer: a prediction, or an error naming the frame (stream id and seq,
where readable). A frame the cloud refuses is never tapped, so never recorded: what the
cloud records is always one finite sample of a model it could run.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, Iterator

import grpc
import numpy as np
import torch

from cloud.errors import Refused, code_of
from cloud.tails import TailCache
from cloud.tap import TapBus, TapEvent
from splitleak import codecs
from splitleak.errors import SplitleakError
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.wire.ids import SeqWindow, check_frame_ids
from splitleak.wire.tolerant import Malformed

log = logging.getLogger(__name__)
TOP_K = 5


def always_open() -> None:
    """The default gate: frames are always admitted (no recorder that could have failed)."""


class InferenceService:
    """Answers every frame: a prediction, or an error for that frame alone.

    `gate()` raises Refused while the cloud cannot take frames (its recorder failed).
    """

    def __init__(self, tails: TailCache, tap: TapBus, device: str = "cpu", gate: Callable[[], None] = always_open):
        self.tails = tails
        self.tap = tap
        self.device = device
        self.gate = gate
        self.frames = 0
        self.rejected = 0

    def Infer(self, requests: Iterable[pb.FeatureFrame | Malformed], context: grpc.ServicerContext) -> Iterator[pb.FrameResult]:
        seqs = SeqWindow()  # duplicates are refused per stream within a call
        for request in requests:
            yield self.answer(request, seqs)

    def answer(self, request: pb.FeatureFrame | Malformed, seqs: SeqWindow | None = None) -> pb.FrameResult:
        if isinstance(request, Malformed):
            result = pb.FrameResult(stream_id=request.stream_id, seq=request.seq)
            return self._error(result, grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        meta = request.meta
        result = pb.FrameResult(stream_id=meta.stream_id, seq=meta.seq)
        seqs = seqs or SeqWindow()
        try:
            features, logits = self._infer(request, seqs)
        except SplitleakError as err:
            return self._error(result, code_of(err), str(err))
        except Exception as err:  # a bug must cost one frame, never the server
            log.exception("frame %r/%s failed", meta.stream_id[:64], meta.seq)
            return self._error(result, grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}")
        seqs.accept(meta.stream_id, meta.seq)
        self.frames += 1
        if self.tap.active:
            self.tap.publish(TapEvent("frame", meta.stream_id, meta, request.codec, {"features": features}))
        fill_top_k(result.prediction, logits)
        result.cloud_ts = time.time()
        return result

    def _infer(self, request: pb.FeatureFrame, seqs: SeqWindow) -> tuple[np.ndarray, torch.Tensor]:
        meta = request.meta
        check_frame_ids(meta.stream_id, meta.seq, meta.capture_ts)
        seqs.check(meta.stream_id, meta.seq)
        self.gate()
        key = self.tails.key(meta)
        features = codecs.decode(request.codec, request.features)
        tail, expected = self.tails.get(key)
        if features.shape != (1, *expected):
            raise Refused(f"features of shape {list(features.shape)} do not fit {key.model}/{key.split} "
                          f"at {key.size}px: expected [1, {', '.join(map(str, expected))}] (one sample per frame)")
        with torch.inference_mode():
            logits = tail(torch.from_numpy(features).to(self.device))
        if not torch.isfinite(logits).all():
            raise Refused("the features drive the model to non-finite outputs")
        return features, logits

    def _error(self, result: pb.FrameResult, code: grpc.StatusCode, message: str) -> pb.FrameResult:
        self.rejected += 1
        result.error.code = code.value[0]
        result.error.message = message
        result.cloud_ts = time.time()
        return result


def fill_top_k(prediction: pb.Prediction, logits: torch.Tensor, k: int = TOP_K) -> None:
    """Top-k of the sample's softmax (a frame carries exactly one sample)."""
    probs = torch.softmax(logits[0].float(), dim=0)
    scores, classes = probs.topk(min(k, probs.numel()))
    prediction.classes[:] = classes.tolist()
    prediction.scores[:] = scores.tolist()
