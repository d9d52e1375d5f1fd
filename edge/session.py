"""What every edge run shares: its config, checks, model, source, truth writer, link and ledger."""
from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from edge.congestion import make_policy
from edge.defences import ClipNoise, parse_defence
from edge.link import LinkEmulator, LinkSpec
from edge.pacing import paced, source_fps
from edge.stats import StreamStats
from edge.uplink import Method, Uplink
from splitleak import codecs
from splitleak.checks import MAX_SIZE_PX, check_output_dir, check_output_file
from splitleak.errors import SplitleakError
from splitleak.models import build_split_model
from splitleak.video import TruthWriter, open_source
from splitleak.wire.channel import (
    MAX_MESSAGE_BYTES,
    TlsFiles,
    check_message_bytes,
    check_target,
    check_tls,
    over_limit,
)
from splitleak.wire.ids import check_stream_id



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
    classifier: str | None = None  # "simple" | "moderate": the tail is that classifier over the head's features
    stream_id: str = "edge0"
    token: str | None = None
    tls: TlsFiles = field(default_factory=TlsFiles)
    retry_for: float = 30.0
    progress: bool = True
    # learning modes
    mode: str = "infer"
    batch: int = 1
    local_steps: int = 1
    lr: float = 0.01
    label: int = 0
    labels: str | None = None
    # what leaves the edge: a defence (edge.defences) and the congestion policy (edge.congestion)
    defence: str = "none"
    on_congestion: str = "block"
    max_pending: int = 4
    realtime: bool = False  # pace frames at the source's rate once the cloud answered the first (edge.pacing)
    max_message_bytes: int = MAX_MESSAGE_BYTES  # gRPC's limit both ways (--max-message-mb)


class EdgeSession:
    """Checks the config and builds what a run needs; subclasses stream or train."""

    method: Method

    def __init__(self, config: EdgeConfig):
        check_target(config.cloud)
        codecs.check_name(config.codec)
        check_stream_id(config.stream_id)
        if config.frames is not None and config.frames < 1:
            raise SplitleakError("--frames must be at least 1")
        if config.size is not None and not 1 <= config.size <= MAX_SIZE_PX:
            raise SplitleakError(f"--size must be 1..{MAX_SIZE_PX} pixels per side, got {config.size}")
        if not (math.isfinite(config.retry_for) and config.retry_for >= 0):
            raise SplitleakError(f"--retry-for must be a finite number of seconds >= 0, got {config.retry_for}")
        check_message_bytes(config.max_message_bytes)
        check_tls(config.tls, server=False)  # here, not on the uplink's thread where it would go unreported
        check_output_dir(config.truth, "--truth")
        check_output_file(config.stats, "--stats")
        self.config = config
        self.spec = LinkSpec.parse(config.link)
        self.defence = parse_defence(config.defence, mode=config.mode, seed=config.seed)
        if isinstance(self.defence, ClipNoise) and config.frames:  # the accountant's sampling rate
            self.defence.sample_rate = min(1.0, config.batch / config.frames)
        if config.on_congestion != "block" and config.mode != "infer":
            raise SplitleakError(f"--on-congestion {config.on_congestion} applies to --mode infer (a learning "
                                 "step waits for its answer)")
        self.congestion = make_policy(config.on_congestion, config.codec, lambda: len(self.stats.pending()),
                                      config.max_pending)
        self.model = build_split_model(config.model, config.split, size=config.size, weights=config.weights,
                                       num_classes=config.num_classes, device=config.device,
                                       classifier=config.classifier)
        self.source = open_source(config.source, frames=config.frames, seed=config.seed)
        self.answered = threading.Event()  # the cloud answered a first message: its pipeline is up
        self.truth = TruthWriter(config.truth) if config.truth else None
        self.stats = StreamStats()
        self.link = LinkEmulator(self.spec, seed=config.seed,
                                 on_drop=lambda message: self.stats.on_lost([self.method.seq_of(message)]))

    def run(self) -> dict[str, Any]:
        """Run to the end of the source; write and return the summary; raise if the cloud was lost."""
        self.stats.started = time.time()
        self.bar = tqdm(total=self._expected_answers(), unit=self.unit, desc=f"edge {self.config.stream_id}",
                        disable=not self.config.progress, leave=False)
        self.uplink = Uplink(self.config.cloud, self.link, self.stats, method=self.method, tls=self.config.tls,
                             token=self.config.token, retry_for=self.config.retry_for,
                             on_answer=self._on_answer, max_message_bytes=self.config.max_message_bytes).start()
        try:
            with self.source:
                self._produce()
        finally:
            self.link.close()
            self.uplink.join()
            self.bar.close()
            self.stats.finish()
        summary = self.summary()
        if self.config.stats:
            Path(self.config.stats).parent.mkdir(parents=True, exist_ok=True)
            Path(self.config.stats).write_text(json.dumps(summary, indent=2))
        if self.uplink.error:
            raise SplitleakError(self.uplink.error)
        if summary["sent"] and not summary["acked"]:  # nothing delivered is a failure, whatever the cause
            why = summary["errors"][0] if summary["errors"] else f"{summary['lost']} lost"
            raise SplitleakError(f"the cloud acknowledged none of the {summary['sent']} {self.unit}s sent ({why})")
        return summary

    unit = "frame"
    skipped = 0  # frames captured and never sent (congestion skip, subsampling)

    def _expected_answers(self) -> int | None:
        per_message = self.model.clip_len if self.model.input_kind == "clip" else 1
        return None if self.config.frames is None else self.config.frames // per_message

    def _produce(self) -> None:
        raise NotImplementedError

    def check_message_size(self, nbytes: int, what: str) -> None:
        """SplitleakError, before sending, for a message the wire's limit would refuse."""
        if nbytes > self.config.max_message_bytes:
            raise SplitleakError(over_limit(what, nbytes, self.config.max_message_bytes))

    def _on_answer(self, answer: Any) -> None:
        self.answered.set()
        self.bar.update(1)

    def frames(self) -> Iterable[Any]:
        """The source's frames; with `realtime`, at its frame rate once the first has been answered."""
        if not self.config.realtime:
            return self.source
        return paced(self.source, source_fps(self.source), self._wait_first_answer)

    def _wait_first_answer(self) -> None:
        """Until the first message is answered, lost (nothing awaits an answer) or the uplink gave up."""
        while not self.answered.wait(0.05) and not self.uplink.error and self.stats.pending():
            pass

    def summary(self) -> dict[str, Any]:
        out = self.stats.summary()
        out.update(model=self.model.name, split=self.model.split, size=self.model.size, codec=self.config.codec,
                   link=str(self.spec), source=self.config.source, stream_id=self.config.stream_id,
                   mode=self.config.mode, skipped=self.skipped, defence=self.defence.report(),
                   congestion=self.congestion.report())
        if self.uplink.error:
            out["error"] = self.uplink.error
        return out
