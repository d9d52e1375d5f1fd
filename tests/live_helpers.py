"""Helpers of the live-attack tests: a live run in this thread while an edge streams in another."""
from __future__ import annotations

import _thread
import threading
import time
from typing import Any, Callable


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "condition never held"
        time.sleep(0.02)


def run_while_edge(cloud: Any, run: Callable[[], Any], edge: Callable[[], Any],
                   ctrl_c_when: Callable[[], bool] | None = None) -> tuple[Any, Any]:
    """(run's result, edge's result): `run` (the live attack) runs in this thread, since the CLI sets a
    signal handler; `edge` starts in another once the tap is subscribed. With `ctrl_c_when`, Ctrl-C
    once it holds after the edge is done. An edge that fails interrupts the run and is re-raised."""
    outcome: dict[str, Any] = {}

    def edge_thread() -> None:
        try:
            wait_for(lambda: cloud.bus.active)
            outcome["edge"] = edge()
            if ctrl_c_when is not None:
                wait_for(ctrl_c_when)
                _thread.interrupt_main()  # what Ctrl-C does
        except BaseException as err:  # noqa: BLE001  (re-raised below)
            outcome["error"] = err
            _thread.interrupt_main()

    helper = threading.Thread(target=edge_thread, daemon=True)
    helper.start()
    result = run()
    helper.join(30)
    if "error" in outcome:
        raise outcome["error"]
    return result, outcome.get("edge")
