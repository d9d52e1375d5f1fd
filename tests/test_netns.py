"""Real traffic shaping with tc between two network namespaces (splitleak/netns.py).

The qdisc arguments and the refusals are checked everywhere; the namespaces themselves only
where this process is root and iproute2 is installed (else those tests skip and say why).
"""
import os
import shutil
import subprocess
import sys

import pytest

from splitleak import netns
from splitleak.errors import SplitleakError


def test_rate_alone_is_one_tbf_at_the_root():
    (args,) = netns.tc_args(10e6, 0, 0, 0, netem=False)
    assert args[:3] == ["root", "handle", "1:"] and args[3] == "tbf"
    assert args[args.index("rate") + 1] == "10000000bit"


def test_delay_jitter_loss_go_to_netem_with_tbf_under_it():
    netem, tbf = netns.tc_args(10e6, 0.02, 0.005, 0.01, netem=True)
    assert netem[3:] == ["netem", "delay", "20.000ms", "5.000ms", "loss", "1.0000%", "limit", "10000"]
    assert tbf[:4] == ["parent", "1:", "handle", "2:"] and tbf[4] == "tbf"


@pytest.mark.parametrize("delay, jitter, loss", [(0.02, 0, 0), (0, 0.005, 0), (0, 0, 0.01)])
def test_without_netem_delay_jitter_and_loss_are_refused(delay, jitter, loss):
    with pytest.raises(SplitleakError, match="no netem qdisc"):
        netns.tc_args(10e6, delay, jitter, loss, netem=False)


def test_not_root_or_no_iproute2_is_one_line(monkeypatch):
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(netns.shutil, "which", lambda tool: f"/usr/sbin/{tool}")
    with pytest.raises(SplitleakError, match="needs root"):
        netns.check_tc_available()
    monkeypatch.setattr(netns.shutil, "which", lambda tool: None)
    with pytest.raises(SplitleakError, match=r"needs iproute2 \(ip and tc not found"):
        with netns.tc_path(rate=1e6):
            pass


def can_make_namespaces() -> str | None:
    """None when this machine can run the namespace tests, else why not."""
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "iproute2 (ip, tc) is not installed"
    if os.geteuid() != 0:
        return "not root: network namespaces need root"
    probe = subprocess.run(["ip", "netns", "add", "splitleak-probe"], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "del", "splitleak-probe"], capture_output=True)
    return None if probe.returncode == 0 else f"cannot create a network namespace: {probe.stderr.strip()}"


WHY_NOT = can_make_namespaces()
needs_namespaces = pytest.mark.skipif(WHY_NOT is not None, reason=str(WHY_NOT))

SERVER = """
import socket
s = socket.create_server((IP, 0)); print(s.getsockname()[1], flush=True)
c, _ = s.accept(); n = 0
while (b := c.recv(65536)): n += len(b)
c.sendall(str(n).encode()); c.close()
"""
CLIENT = """
import socket, sys
c = socket.create_connection((IP, int(sys.argv[1])), timeout=30); c.sendall(b"x" * 200000); c.shutdown(socket.SHUT_WR)
print(c.recv(100).decode())
"""


def namespaces() -> set[str]:
    return set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())


@needs_namespaces
def test_edge_reaches_cloud_through_the_shaped_veth_and_all_is_removed_after():
    before = namespaces()
    with netns.tc_path(rate=50e6) as path:
        assert path.qdiscs == ["tbf"] and "tbf" in path.shown and "50Mbit" in path.shown
        assert set(path.namespaces.values()) <= namespaces()
        ip = repr(path.ips["cloud"])
        server = subprocess.Popen(path.command("cloud", [sys.executable, "-c", f"IP = {ip}\n" + SERVER]),
                                  stdout=subprocess.PIPE, text=True)
        try:
            port = server.stdout.readline().strip()
            client = path.run("edge", [sys.executable, "-c", f"IP = {ip}\n" + CLIENT, port],
                              capture_output=True, text=True, timeout=60)
            assert client.stdout.strip() == "200000", client.stderr
        finally:
            server.wait(10)
        # the cloud's address exists only inside the namespaces, not in this one
        assert path.ips["cloud"] not in subprocess.run(["ip", "addr"], capture_output=True, text=True).stdout
    assert namespaces() == before


@needs_namespaces
def test_delay_uses_netem_where_the_kernel_has_it_else_a_clear_refusal():
    before = namespaces()
    try:
        with netns.tc_path(rate=10e6, delay=0.01) as path:
            assert path.qdiscs == ["netem", "tbf"] and "netem" in path.shown
    except SplitleakError as e:
        assert "no netem qdisc" in str(e) and "\n" not in str(e)
    assert namespaces() == before
