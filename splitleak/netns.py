"""Real traffic shaping: two network namespaces joined by a veth pair, the kernel's tc on the path.

`tc_path(rate, delay, jitter, loss)` makes namespaces "cloud" and "edge", gives the veth ends
10.77.0.1 (cloud) and 10.77.0.2 (edge), and shapes what the edge sends to the cloud (the
direction features and updates travel; answers come back unshaped, as with the application's
emulator): tbf for the rate; netem for delay, jitter (uniform +-, the emulator's) and loss where
the kernel has netem, with tbf under it for the rate. A kernel without netem can still shape
rate; delay, jitter or loss then are a one-line error. Needs root and iproute2 (`ip`, `tc`).
Processes run inside with `ip netns exec` (`TcPath.command`).
"""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from splitleak.errors import SplitleakError

CLOUD_IP, EDGE_IP, PREFIX = "10.77.0.1", "10.77.0.2", 30
SIDES = ("cloud", "edge")
TBF_LATENCY_MS = 200  # how long a packet may wait in tbf's queue before it is dropped (TCP then backs off)
_counter = itertools.count()


@dataclass
class TcPath:
    """A shaped path between two namespaces; `qdiscs` says which qdiscs ran on the edge's egress."""

    namespaces: dict[str, str]
    ips: dict[str, str]
    qdiscs: list[str] = field(default_factory=list)
    shown: str = ""  # `tc qdisc show` of the shaped device, as the kernel reports it

    def command(self, side: str, argv: Sequence[str]) -> list[str]:
        """`argv` to run inside the `side` namespace ("cloud" or "edge")."""
        if side not in SIDES:
            raise SplitleakError(f"no namespace {side!r}: choose cloud or edge")
        return ["ip", "netns", "exec", self.namespaces[side], *argv]

    def run(self, side: str, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(side, argv), **kwargs)


def check_tc_available() -> None:
    """SplitleakError saying why this machine cannot shape with tc (not root, no iproute2)."""
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        raise SplitleakError(f"--link-backend tc needs iproute2 ({' and '.join(missing)} not found; "
                             "apt-get install iproute2)")
    if os.geteuid() != 0:
        raise SplitleakError("--link-backend tc needs root: it creates network namespaces and tc qdiscs")


def tc_args(rate: float | None, delay: float, jitter: float, loss: float, netem: bool) -> list[list[str]]:
    """The `tc qdisc add` argument lists (after `dev DEV`) for the edge's egress, outermost first."""
    shaped_time = delay > 0 or jitter > 0 or loss > 0
    if shaped_time and not netem:
        raise SplitleakError("this kernel has no netem qdisc (tc: 'Specified qdisc kind is unknown'): "
                             "--link-backend tc can shape only rate here (tbf); drop delay, jitter and loss "
                             "from the link spec or use the application's emulator")
    out = []
    if shaped_time:
        spec = ["delay", f"{delay * 1e3:.3f}ms"] + ([f"{jitter * 1e3:.3f}ms"] if jitter else [])
        out.append(["root", "handle", "1:", "netem", *spec, "loss", f"{loss * 100:.4f}%", "limit", "10000"])
    if rate is not None:
        burst = max(int(rate / 8 / 100), 16 * 1024)  # 10 ms of rate, at least a few full-size packets
        parent = ["parent", "1:", "handle", "2:"] if shaped_time else ["root", "handle", "1:"]
        out.append([*parent, "tbf", "rate", f"{int(rate)}bit", "burst", str(burst), "latency", f"{TBF_LATENCY_MS}ms"])
    return out


def _ip(*args: str) -> None:
    _run(["ip", *args])


def _run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise SplitleakError(f"{' '.join(cmd)}: {why}")
    return done.stdout


def has_netem(namespace: str, device: str) -> bool:
    """Whether the kernel knows netem: try it on the device, then take it off again."""
    probe = subprocess.run(["ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev", device, "root", "netem"],
                           capture_output=True, text=True)
    if probe.returncode == 0:
        _run(["ip", "netns", "exec", namespace, "tc", "qdisc", "del", "dev", device, "root"])
        return True
    if "unknown" in probe.stderr.lower():
        return False
    raise SplitleakError(f"tc qdisc add netem: {probe.stderr.strip() or 'failed'}")


@contextmanager
def tc_path(rate: float | None = None, delay: float = 0.0, jitter: float = 0.0,
            loss: float = 0.0) -> Iterator[TcPath]:
    """Two namespaces joined by a shaped veth pair; removed on exit. Rate in bit/s, times in s, loss 0..1."""
    check_tc_available()
    if rate is not None and not rate > 0:
        raise SplitleakError(f"tc rate must be > 0 bit/s, got {rate}")
    if not (delay >= 0 and jitter >= 0 and 0 <= loss < 1):
        raise SplitleakError("tc delay and jitter must be >= 0 s and loss within 0..100% (exclusive)")
    tag = f"{os.getpid() % 100000}{next(_counter)}"
    names = {side: f"slk{tag}{side[0]}" for side in SIDES}  # interface names stay under 15 characters
    path = TcPath(namespaces={side: f"splitleak-{tag}-{side}" for side in SIDES},
                  ips={"cloud": CLOUD_IP, "edge": EDGE_IP})
    made: list[str] = []
    try:
        for side in SIDES:
            _ip("netns", "add", path.namespaces[side])
            made.append(path.namespaces[side])
        _ip("link", "add", names["cloud"], "type", "veth", "peer", "name", names["edge"])
        for side in SIDES:
            ns, dev = path.namespaces[side], names[side]
            _ip("link", "set", dev, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{path.ips[side]}/{PREFIX}", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        shape(path, names["edge"], rate, delay, jitter, loss)
        yield path
    finally:
        for ns in made:  # deleting a namespace deletes its end of the veth, and so the pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def shape(path: TcPath, device: str, rate: float | None, delay: float, jitter: float, loss: float) -> None:
    """Add the qdiscs to the edge's egress and record which ran."""
    ns = path.namespaces["edge"]
    wants_netem = delay > 0 or jitter > 0 or loss > 0
    for args in tc_args(rate, delay, jitter, loss, netem=has_netem(ns, device) if wants_netem else False):
        _run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", device, *args])
        path.qdiscs.append(args[args.index("netem") if "netem" in args else args.index("tbf")])
    path.shown = _run(["ip", "netns", "exec", ns, "tc", "qdisc", "show", "dev", device]).strip()
