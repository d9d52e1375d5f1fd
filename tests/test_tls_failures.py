"""A client that cannot reach the cloud says why: refused, timed out, CA, name, TLS on one side only.

Real loopback servers; the edge runs through the command line (one line, exit 2), the tap as its class.
"""
from __future__ import annotations

import socket

import pytest

from splitleak.cli.main import main
from splitleak.wire.channel import TlsFiles

pytest.importorskip("cryptography")
from pki import make_pki  # noqa: E402

pytestmark = pytest.mark.slow  # real servers and handshakes: seconds each; the whole suite runs them

EDGE = ["edge", "--model", "lenet", "--split", "conv1", "--source", "synthetic", "--frames", "2", "--size", "32",
        "--quiet", "--retry-for", "0.2"]


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path)


@pytest.fixture
def silent_port():
    """A port that accepts TCP connections and never says a word (no gRPC, no TLS)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def _cloud(start_cloud, pki, server="server", *, tls=True, mutual=False):
    if not tls:
        return start_cloud(listen="localhost:0")
    cert, key = pki[server]
    return start_cloud(listen="localhost:0", tls=TlsFiles(cert=cert, key=key, ca=pki["ca"] if mutual else None))


def _client_tls(pki, case):
    stranger_cert, stranger_key = pki["stranger"]
    return {"ca": ["--tls-ca", pki["ca"]], "other_ca": ["--tls-ca", pki["other_ca"]], "plain": [],
            "stranger": ["--tls-ca", pki["ca"], "--tls-cert", stranger_cert, "--tls-key", stranger_key]}[case]


# (id, server: name of its certificate or "plain", mutual TLS, client's TLS, what the one line must say)
CASES = [
    ("unknown CA", "server", False, "other_ca", "certificate verification failed"),
    ("name mismatch", "elsewhere", False, "ca", "name mismatch"),
    ("TLS client, plain server", "plain", False, "ca", "does not speak TLS"),
    ("plain client, TLS server", "server", False, "plain", "may require TLS"),
    ("mutual TLS, no client certificate", "server", True, "ca", "client certificate"),
    ("mutual TLS, client certificate of another CA", "server", True, "stranger", "client certificate"),
]


@pytest.mark.parametrize("server, mutual, client, reason", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_edge_says_why_tls_failed(server, mutual, client, reason, start_cloud, pki, capsys):
    cloud = _cloud(start_cloud, pki, server if server != "plain" else "server", tls=server != "plain", mutual=mutual)
    code = main(EDGE + ["--cloud", f"localhost:{cloud.port}", *_client_tls(pki, client)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert "unreachable" in lines[0] and reason in lines[0], lines[0]


def test_edge_says_connection_refused(capsys):
    assert main(EDGE + ["--cloud", "127.0.0.1:1"]) == 2
    assert capsys.readouterr().err.strip().endswith("connection refused: nothing listens on 127.0.0.1:1")


def test_edge_says_timed_out(silent_port, capsys):
    assert main(EDGE + ["--cloud", f"127.0.0.1:{silent_port}"]) == 2
    assert "timed out: no gRPC answer" in capsys.readouterr().err


def test_tap_says_why(start_cloud, pki, tmp_path):
    from adversary.tap_client import TapRecorder
    from splitleak.errors import SplitleakError

    cloud = _cloud(start_cloud, pki)
    tap = TapRecorder(f"localhost:{cloud.port}", str(tmp_path / "tap"), tls=TlsFiles(ca=pki["other_ca"]))
    with pytest.raises(SplitleakError, match="unreachable for 0.5s: TLS certificate verification failed"):
        tap.run(connect_timeout=0.5)


def test_a_good_client_still_connects(start_cloud, pki, capsys):
    """The probe's rules do not fire on a working setup: the same server serves the right CA."""
    cloud = _cloud(start_cloud, pki)
    assert main(EDGE + ["--cloud", f"localhost:{cloud.port}", "--tls-ca", pki["ca"]]) == 0
