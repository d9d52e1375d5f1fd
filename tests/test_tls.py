"""TLS: the edge streams over a server certificate; mutual TLS refuses a client without one."""
import datetime
import ipaddress

import pytest

from edge.streamer import EdgeConfig, EdgeStreamer
from splitleak.errors import SplitleakError
from splitleak.wire.channel import TlsFiles

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def _cert(name, key, issuer_name, issuer_key, ca=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(folder, name, cert, key):
    (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    return str(folder / f"{name}.pem"), str(folder / f"{name}.key")


@pytest.fixture
def pki(tmp_path):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "splitleak test CA")])
    ca = _cert("splitleak test CA", ca_key, ca_name, ca_key, ca=True)
    files = {"ca": _write(tmp_path, "ca", ca, ca_key)[0]}
    for who in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        files[who] = _write(tmp_path, who, _cert(who, key, ca_name, ca_key), key)
    return files


def _stream(port, tls, **kw):
    config = EdgeConfig(cloud=f"localhost:{port}", source="synthetic:32x32", model="lenet", split="conv1",
                        size=32, frames=3, progress=False, tls=tls, **kw)
    return EdgeStreamer(config).run()


def test_tls_stream(start_cloud, pki):
    cert, key = pki["server"]
    cloud = start_cloud(listen="localhost:0", tls=TlsFiles(cert=cert, key=key))
    assert _stream(cloud.port, TlsFiles(ca=pki["ca"]))["acked"] == 3


@pytest.mark.slow
def test_mutual_tls_requires_a_client_certificate(start_cloud, pki):
    cert, key = pki["server"]
    cloud = start_cloud(listen="localhost:0", tls=TlsFiles(cert=cert, key=key, ca=pki["ca"]))
    client_cert, client_key = pki["client"]
    assert _stream(cloud.port, TlsFiles(cert=client_cert, key=client_key, ca=pki["ca"]))["acked"] == 3
    with pytest.raises(SplitleakError, match="unreachable"):
        _stream(cloud.port, TlsFiles(ca=pki["ca"]), retry_for=0.5)
