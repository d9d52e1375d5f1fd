"""A SIGKILLed experiment runner takes its services with it (they would hold ports and CPU otherwise)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from experiments.orphans import child_options

PARENT = """
import subprocess, sys
from experiments.orphans import child_options
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], **child_options())
print(child.pid, flush=True)
time_ = __import__("time"); time_.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for init to reap it counts as dead
        return f.read().split()[2] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_child_dies_when_the_runner_is_killed():
    assert child_options(), "on Linux the children are tied to the runner"
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)
