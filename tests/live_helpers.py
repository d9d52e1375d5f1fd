"""Helpers of the live-attack tests: a live run in this thread while an edge streams in another."""
from __future__ import annotations

import _thread
import threading
import time
from typing import Any, Callable


CTRL_C_REPEAT_S = 20.0  # longer than a stopping live run takes to join its tap (2 + 8 s)


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
    returned = threading.Event()

    def ctrl_c() -> None:
        """Ctrl-C, repeated every CTRL_C_REPEAT_S until the run returns: a simulated SIGINT that lands in a
        finaliser on the main thread is swallowed there (and a user would press Ctrl-C again)."""
        while True:
            _thread.interrupt_main()
            if returned.wait(CTRL_C_REPEAT_S):
                return

    def edge_thread() -> None:
        try:
            wait_for(lambda: cloud.bus.active)
            outcome["edge"] = edge()
            if ctrl_c_when is not None:
                wait_for(ctrl_c_when)
                ctrl_c()
        except BaseException as err:  # noqa: BLE001  (re-raised below)
            outcome["error"] = err
            ctrl_c()

    helper = threading.Thread(target=edge_thread, daemon=True)
    helper.start()
    try:
        result = run()
    except KeyboardInterrupt as err:  # never let a test's Ctrl-C reach pytest, which would end the session
        raise AssertionError("a Ctrl-C escaped the live run instead of stopping it") from err
    finally:
        returned.set()
    helper.join(30)
    if "error" in outcome:
        raise outcome["error"]
    return result, outcome.get("edge")
