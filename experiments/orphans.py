"""Children that die with the runner: a SIGKILLed `splitleak run` must not leave clouds and edges behind.

On Linux each child asks the kernel for SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG); the
cloud closes its recording on SIGTERM. libc is loaded here, before any fork, so the child only makes
one system call between fork and exec. Elsewhere this is a no-op.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from typing import Callable

PR_SET_PDEATHSIG = 1


def _linux_hook() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request was in place
            os._exit(1)

    return die_with_parent


def child_options() -> dict[str, Callable[[], None]]:
    """Keyword arguments for subprocess.Popen / run that tie the child's life to this process."""
    hook = _linux_hook()
    return {"preexec_fn": hook} if hook else {}
