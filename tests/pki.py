"""A throw-away PKI for TLS tests: a CA, a server certificate for localhost/127.0.0.1, a client certificate,
and a second CA that signed nothing the server holds (for verification failures)."""
from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _cert(name: str, key, issuer: x509.Name, issuer_key, *, ca: bool = False, sans: tuple[str, ...] = ()):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        names = [x509.IPAddress(ipaddress.ip_address(s)) if s[0].isdigit() else x509.DNSName(s) for s in sans]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(folder: Path, name: str, cert, key) -> tuple[str, str]:
    (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    (folder / f"{name}.key").write_bytes(pem)
    return str(folder / f"{name}.pem"), str(folder / f"{name}.key")


def make_pki(folder: Path) -> dict[str, object]:
    """{"ca": path, "other_ca": path, "server": (cert, key), "client": (cert, key), "elsewhere": ..., "stranger": ...}.

    "server" names localhost and 127.0.0.1; "elsewhere" is signed by the same CA for another host only;
    "stranger" is a client certificate signed by other_ca."""
    files: dict[str, object] = {}
    cas = {}
    for label in ("ca", "other_ca"):
        key = ec.generate_private_key(ec.SECP256R1())
        cas[label] = (_name(f"splitleak test {label}"), key)
        files[label] = _write(folder, label, _cert(f"splitleak test {label}", key, cas[label][0], key, ca=True), key)[0]
    issuer, issuer_key = cas["ca"]
    for who, sans in (("server", ("localhost", "127.0.0.1")), ("client", ("client",)),
                      ("elsewhere", ("elsewhere.example",))):
        key = ec.generate_private_key(ec.SECP256R1())
        files[who] = _write(folder, who, _cert(who, key, issuer, issuer_key, sans=sans), key)
    key = ec.generate_private_key(ec.SECP256R1())
    files["stranger"] = _write(folder, "stranger", _cert("stranger", key, *cas["other_ca"], sans=("client",)), key)
    return files
