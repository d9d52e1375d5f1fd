"""The cloud's own recorder: a tap subscriber that writes to disk on its own thread."""
from __future__ import annotations

import logging
import threading

from cloud.tap import TapBus
from splitleak.recording import RecordingWriter
from splitleak.wire.tapitems import write_event

log = logging.getLogger(__name__)
QUEUE = 4096  # deep enough to ride out a slow disk; anything beyond is counted as dropped


class Recorder:
    def __init__(self, bus: TapBus, folder: str, config: dict):
        self.writer = RecordingWriter(folder, config)
        self.bus = bus
        self.sub = bus.subscribe(QUEUE)
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            event = self.sub.get(timeout=0.5)
            if event is None:
                if self.sub.closed:
                    return
                continue
            try:
                write_event(self.writer, event.kind, event.meta, event.codec, event.tensors)
            except OSError as err:
                log.error("recording stopped: %s", err)
                return

    def close(self) -> None:
        """Drain what is queued, then close the recording with its drop count."""
        self.bus.unsubscribe(self.sub)
        self._thread.join()
        self.writer.dropped = self.sub.dropped
        self.writer.close()
