"""Split inference at the cloud: decode a frame, check it, run the tail, answer with top-k."""
from __future__ import annotations

import logging
import time
from typing import Iterable, Iterator

import grpc
import numpy as np
import torch

from cloud.tails import TailCache
from cloud.tap import TapBus, TapEvent
from splitleak import codecs
from splitleak.errors import SplitleakError
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.wire.tolerant import Malformed

log = logging.getLogger(__name__)
MAX_BATCH = 64
TOP_K = 5


class InferenceService:
    """Answers every frame: a prediction, or an error for that frame alone."""

    def __init__(self, tails: TailCache, tap: TapBus, device: str = "cpu"):
        self.tails = tails
        self.tap = tap
        self.device = device
        self.frames = 0
        self.rejected = 0

    def Infer(self, requests: Iterable[pb.FeatureFrame | Malformed], context: grpc.ServicerContext) -> Iterator[pb.FrameResult]:
        for request in requests:
            yield self.answer(request)

    def answer(self, request: pb.FeatureFrame | Malformed) -> pb.FrameResult:
        if isinstance(request, Malformed):
            return self._error(pb.FrameResult(), grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        result = pb.FrameResult(stream_id=request.meta.stream_id, seq=request.meta.seq)
        try:
            features = self._decode(request)
            logits = self._run_tail(request.meta, features)
        except SplitleakError as err:
            return self._error(result, grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except Exception as err:  # a bug must cost one frame, never the server
            log.exception("frame %s/%s failed", request.meta.stream_id, request.meta.seq)
            return self._error(result, grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}")
        self.frames += 1
        if self.tap.active:
            self.tap.publish(TapEvent("frame", request.meta.stream_id, request.meta, request.codec, {"features": features}))
        fill_top_k(result.prediction, logits)
        result.cloud_ts = time.time()
        return result

    def _decode(self, request: pb.FeatureFrame) -> np.ndarray:
        meta = request.meta
        if not meta.stream_id:
            raise SplitleakError("frame has no stream id")
        if not meta.model_id or not meta.split_point:
            raise SplitleakError("frame names no model or split point")
        return codecs.decode(request.codec, request.features)

    def _run_tail(self, meta: pb.FrameMeta, features: np.ndarray) -> torch.Tensor:
        tail, expected = self.tails.get(meta.model_id, meta.split_point, meta.input_size, meta.weights or "seed:0", meta.num_classes)
        if features.shape[1:] != expected or not 1 <= features.shape[0] <= MAX_BATCH:
            raise SplitleakError(
                f"features of shape {list(features.shape)} do not fit {meta.model_id}/{meta.split_point} "
                f"at {meta.input_size}px: expected [B<={MAX_BATCH}, {', '.join(map(str, expected))}]"
            )
        with torch.inference_mode():
            return tail(torch.from_numpy(features).to(self.device))

    def _error(self, result: pb.FrameResult, code: grpc.StatusCode, message: str) -> pb.FrameResult:
        self.rejected += 1
        result.error.code = code.value[0]
        result.error.message = message
        result.cloud_ts = time.time()
        return result


def fill_top_k(prediction: pb.Prediction, logits: torch.Tensor, k: int = TOP_K) -> None:
    """Top-k of the first sample's softmax (a batch answers for its first frame)."""
    probs = torch.softmax(logits[0].float(), dim=0)
    scores, classes = probs.topk(min(k, probs.numel()))
    prediction.classes[:] = classes.tolist()
    prediction.scores[:] = scores.tolist()
