"""The cloud's own recorder: a tap subscriber that writes to disk on its own thread.

A write that fails (any exception, not only a full disk) stops the recording for good, and
says so at once: logged, `failure` set (the cloud then refuses the frames and updates it can
no longer record, with UNAVAILABLE), a status item to every tap subscriber, and the summary
counts every item the cloud accepted but did not write. After the failure the queue is
drained and counted, never left to fill: memory stays bounded.
"""
from __future__ import annotations

import logging
import threading

import grpc

from cloud.errors import Refused
from cloud.tap import TapBus, TapEvent
from splitleak.recording import RecordingWriter
from splitleak.wire.tapitems import write_event

log = logging.getLogger(__name__)
QUEUE = 4096  # deep enough to ride out a slow disk; anything beyond is counted as dropped
QUEUE_BYTES = 256 << 20  # and at most this much decoded data waiting for the disk
STATUS = "status"


class Recorder:
    def __init__(self, bus: TapBus, folder: str, config: dict):
        self.writer = RecordingWriter(folder, config)
        self.bus = bus
        self.sub = bus.subscribe(QUEUE, max_bytes=QUEUE_BYTES)
        self.failure: str | None = None  # why recording stopped, once it has
        self.not_written = 0  # items the cloud accepted that were not written after the failure
        self.refused = 0  # frames and updates the cloud refused because it could not record them
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def admit(self) -> None:
        """The services' gate: Refused (UNAVAILABLE) once the recording has failed."""
        if self.failure is None:
            return
        with self._lock:
            self.refused += 1
        raise Refused(f"{self.failure}; the cloud refuses what it cannot record", grpc.StatusCode.UNAVAILABLE)

    def _run(self) -> None:
        while True:
            event = self.sub.get(timeout=0.5)
            if event is None:
                if self.sub.closed:
                    return
                continue
            if event.kind == STATUS:
                continue
            if self.failure is not None:
                self.not_written += 1
                continue
            try:
                write_event(self.writer, event.kind, event.meta, event.codec, event.tensors)
            except Exception as err:  # noqa: BLE001 - whatever stops the disk stops the recording, loudly
                self._fail(f"recording to {self.writer.folder} failed: {type(err).__name__}: {err}")

    def _fail(self, reason: str) -> None:
        self.failure = reason
        self.not_written += 1
        log.error("%s; no more frames are accepted", reason)
        self.bus.publish(TapEvent(STATUS, "", reason, None, {}))

    def close(self) -> None:
        """Drain what is queued, then close the recording with its drop and loss counts."""
        self.bus.unsubscribe(self.sub)
        self._thread.join()
        self.writer.dropped = self.sub.dropped
        extra = {"not_written": self.not_written}
        if self.failure:
            extra.update(error=self.failure, refused=self.refused)
        try:
            self.writer.close(**extra)
        except Exception as err:  # noqa: BLE001 - the summary cannot be written where the data could not
            log.error("cannot write the recording's summary: %s: %s", type(err).__name__, err)
