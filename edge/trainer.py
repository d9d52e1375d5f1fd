"""Collaborative learning at the edge: FedSGD, FedAvg and split learning over the wire.

Each step takes a batch of B samples with their labels: a sample is a frame, or for a clip model
a clip of clip_len consecutive frames (grouped as for inference; its label is its first frame's,
a partial clip at the end of the source is not trained on). fedsgd sends the gradient of the
loss w.r.t. the trained parameters; fedavg runs E local SGD steps and sends the weight
delta; split sends F1's activations and the labels and applies the dL/dz it gets back to
its head. The cloud answers each update with the new global state (or dL/dz); a step whose
update was lost keeps the local model as it was.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

from edge.labels import Labels
from edge.link import LinkClosed
from edge.session import EdgeConfig, EdgeSession
from edge.streamer import fill_frame_meta
from edge.uplink import TRAIN
from splitleak import codecs, learning
from splitleak.errors import SplitleakError
from splitleak.tensors import to_numpy
from splitleak.v1 import splitleak_pb2 as pb
from splitleak.wire import serde
from splitleak.video import to_model_input

MODES = ("fedsgd", "fedavg", "split")
ACTIVATIONS, GRAD = "activations", "grad"


class EdgeTrainer(EdgeSession):
    method = TRAIN
    unit = "update"

    def __init__(self, config: EdgeConfig):
        if config.mode not in MODES:
            raise SplitleakError(f"unknown mode {config.mode!r}; choose infer or one of {', '.join(MODES)}")
        if config.batch < 1 or config.local_steps < 1 or not config.lr > 0:
            raise SplitleakError("--batch and --local-steps must be >= 1 and --lr > 0")
        super().__init__(config)
        self.per_sample = self.model.clip_len if self.model.input_kind == "clip" else 1
        if config.frames is not None and config.frames < self.per_sample:
            raise SplitleakError(f"{config.model} trains on clips of {self.per_sample} frames; "
                                 f"--frames {config.frames} makes none")
        self.module = learning.trained_module(self.model)
        self.names = learning.parameter_names(self.module)
        self.labels = Labels(config.label, self.model.num_classes, config.labels)
        self.round = 0
        self._answers: dict[int, pb.UpdateAck] = {}
        self._answered = threading.Condition()
        self._cosines: list[float] = []  # defended vs clean update, one per step (utility)

    def _expected_answers(self) -> int | None:
        if self.config.frames is None:
            return None
        return -(-(self.config.frames // self.per_sample) // self.config.batch)

    def _produce(self) -> None:
        batch: list[list[Any]] = []
        sample: list[Any] = []
        for frame in self.frames():
            sample.append(frame)
            if len(sample) < self.per_sample:
                continue
            batch.append(sample)
            sample = []
            if len(batch) == self.config.batch:
                if not self._step(batch):
                    return
                batch = []
        self.skipped += len(sample)  # the frames of a partial clip: captured, never trained on
        if batch:
            self._step(batch)

    def _input(self, sample: list[Any]) -> np.ndarray:
        """A frame (3, H, W), or a clip (3, T, H, W); each frame is written to the truth folder."""
        xs = [to_model_input(f.image, self.model.size) for f in sample]
        if self.truth:
            for f, xi in zip(sample, xs):
                self.truth.write(self.config.stream_id, f.index, xi)
        return xs[0] if self.per_sample == 1 else np.stack(xs, axis=1)

    def _step(self, samples: list[list[Any]]) -> bool:
        """One update for a batch of frames or clips; False once the cloud is gone for good."""
        if self.uplink.error:
            return False
        first = samples[0][0]
        seq = first.index
        x = torch.from_numpy(np.stack([self._input(sample) for sample in samples])).to(self.config.device)
        y = torch.tensor([self.labels(sample[0].index) for sample in samples], dtype=torch.int64,
                         device=self.config.device)
        update, z = self._update(x, y)
        fill_frame_meta(update.meta.frame, self, seq, first.capture_ts)
        meta = update.meta
        meta.mode, meta.round, meta.batch_size = self.config.mode, self.round, len(samples)
        meta.learning_rate, meta.local_steps = self.config.lr, self.config.local_steps
        update.codec.name = self.config.codec
        nbytes = update.ByteSize()
        self.check_message_size(nbytes, f"update {seq} ({meta.mode})")
        self.stats.on_sent(seq, first.capture_ts, nbytes)
        try:
            self.link.send(update, nbytes)
        except LinkClosed:
            self.stats.on_lost([seq])
            return False
        answer = self._wait(seq)
        if answer is not None:
            self._apply(answer, z)
        return True

    def _update(self, x: torch.Tensor, y: torch.Tensor) -> tuple[pb.ModelUpdate, torch.Tensor | None]:
        update = pb.ModelUpdate()
        mode = self.config.mode
        if mode == "split":
            z = self.model.head(x) if self.model.split != "none" else x
            self._add(update, {ACTIVATIONS: self._defended({ACTIVATIONS: z.detach()})[ACTIVATIONS]})
            self._add_labels(update, y)
            return update, z
        with torch.no_grad():
            features = self.model.head(x)
        if mode == "fedsgd":
            tensors = self._defended_gradients(features, y)
        else:
            tensors = self._defended(self._local_delta(features, y))
        update.meta.param_names[:] = self.names
        self._add(update, tensors)
        return update, None

    def _defended_gradients(self, features: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        def gradients_of(inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
            return learning.gradients(self.module, inputs, labels, names=self.names)

        defended = self.defence.update(features, y, gradients_of)
        if self.defence.NAME != "none":
            self._cosines.append(update_cosine(defended, gradients_of(features, y)))
        return defended

    def _defended(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A per-tensor defence (noise, top-k) on an update or activations, its cosine to the clean one kept."""
        if self.defence.NAME == "none":
            return tensors
        defended = {n: self.defence.features(t) for n, t in tensors.items()}
        self._cosines.append(update_cosine(defended, tensors))
        return defended

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        if self._cosines:
            out["defence"]["update_cosine"] = round(float(np.mean(self._cosines)), 6)
        return out

    def _local_delta(self, features: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """FedAvg: E local SGD steps from the global weights; the update is the change."""
        params = dict(self.module.named_parameters())
        before = {n: params[n].detach().clone() for n in self.names}
        for _ in range(self.config.local_steps):
            grads = learning.gradients(self.module, features, y, names=self.names)
            with torch.no_grad():
                for n, g in grads.items():
                    params[n] -= self.config.lr * g
        with torch.no_grad():
            delta = {n: params[n].detach() - before[n] for n in self.names}
            for n in self.names:  # the global model decides: go back until the new state arrives
                params[n].copy_(before[n])
        return delta

    def _add(self, update: pb.ModelUpdate, tensors: dict[str, torch.Tensor]) -> None:
        for name, t in tensors.items():
            named = update.tensors.add(name=name)
            named.codec.CopyFrom(codecs.encode(self.config.codec, to_numpy(t.float()), named.tensor))

    def _add_labels(self, update: pb.ModelUpdate, y: torch.Tensor) -> None:
        serde.to_proto(to_numpy(y), update.labels)

    def _wait(self, seq: int) -> pb.UpdateAck | None:
        """Block until the update is answered, or known lost."""
        with self._answered:
            while seq not in self._answers and seq in self.stats.pending() and not self.uplink.error:
                self._answered.wait(0.05)
            return self._answers.pop(seq, None)

    def _on_answer(self, answer: pb.UpdateAck) -> None:
        super()._on_answer(answer)
        with self._answered:
            self._answers[answer.seq] = answer
            self._answered.notify_all()

    def _apply(self, answer: pb.UpdateAck, z: torch.Tensor | None) -> None:
        if answer.HasField("error"):
            return
        # states and dL/dz come back uncoded, each tensor at its own dtype
        tensors = {t.name: torch.from_numpy(serde.from_proto(t.tensor).copy()) for t in answer.state.tensors}
        self.round = answer.round
        if self.config.mode == "split":
            if z is not None and z.requires_grad and GRAD in tensors:
                self._step_head(z, tensors[GRAD].to(z.device))
            return
        self.module.load_state_dict({k: v.to(self.config.device) for k, v in tensors.items()})

    def _step_head(self, z: torch.Tensor, dz: torch.Tensor) -> None:
        head_params = [p for p in self.model.head.parameters() if p.requires_grad]
        grads = torch.autograd.grad(z, head_params, grad_outputs=dz, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(head_params, grads):
                if g is not None:
                    p -= self.config.lr * g


def update_cosine(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Cosine similarity of two updates, all tensors flattened together (1.0 for identical ones)."""
    x = torch.cat([a[n].detach().flatten().float() for n in sorted(a)])
    y = torch.cat([b[n].detach().flatten().float() for n in sorted(a)])
    return float(torch.nn.functional.cosine_similarity(x, y, dim=0))
