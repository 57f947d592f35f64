"""TLS for the control channel: the origin's self-signed certificate, server pairs, client contexts.

The origin serves HTTPS with a certificate and key given by the operator or, for a first run, with
a self-signed certificate it makes in its data directory (`self_signed`). Nodes and the CLI trust
it by pinning that file (`client_context(ca_file)`: the chain is verified against it and the host
name is checked); without a pinned file they use the system's trust store. docs/tls.md has the
whole story.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CERT_FILE",
    "KEY_FILE",
    "VALIDITY_DAYS",
    "TLSConfigError",
    "check_server_pair",
    "client_context",
    "default_names",
    "fingerprint",
    "load_certificate",
    "missing_names",
    "self_signed",
]

# In the origin's data directory (`edge origin --tls-self-signed`).
CERT_FILE = "tls-cert.pem"
KEY_FILE = "tls-key.pem"
VALIDITY_DAYS = 5 * 365


class TLSConfigError(ValueError):
    """A certificate, key or CA file that cannot be used; the message names the file and the fix."""


def load_certificate(path: Path, option: str) -> x509.Certificate:
    """The first certificate in the PEM file `path`; `option` names where the path came from."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"{option} {path}: cannot read the certificate: {exc.strerror}") from None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise TLSConfigError(
            f"{option} {path}: Expected a PEM certificate (-----BEGIN CERTIFICATE-----), got"
            f" {_first_line(data)!r}"
        ) from None


def fingerprint(certificate: x509.Certificate) -> str:
    """The sha256 of the DER certificate as `AB:CD:...`, as `openssl x509 -fingerprint -sha256` shows it."""
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


def default_names(host: str, extra: Iterable[str] = ()) -> list[str]:
    """SANs for a self-signed origin: loopback, this machine's names, the listen address, `extra`."""
    import socket

    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()]
    if host not in ("", "0.0.0.0", "::"):
        names.append(host)
    names += list(extra)
    return list(dict.fromkeys(name.strip().lower() for name in names if name.strip()))


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def self_signed(
    cert_path: Path, key_path: Path, names: Sequence[str], now: datetime.datetime | None = None
) -> x509.Certificate:
    """Write a new EC P-256 key (mode 0600) and a certificate for `names` valid VALIDITY_DAYS."""
    if not names:
        raise ValueError("names: Expected at least one host name or address, got none")
    key = ec.generate_private_key(ec.SECP256R1())
    start = now or datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"edge origin {names[0]}")])
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        # An hour back: a node whose clock runs a little behind accepts it at once.
        .not_valid_before(start - datetime.timedelta(hours=1))
        .not_valid_after(start + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName([_general_name(name) for name in names]), critical=False)
        # Its own trust anchor: a CA certificate that may sign nothing below it.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_new(key_path, key_pem, 0o600)
    _write_new(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    return certificate


def missing_names(certificate: x509.Certificate, names: Iterable[str]) -> list[str]:
    """Which of `names` the certificate's SANs do not list."""
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return list(names)
    listed = {str(value).lower() for value in sans.get_values_for_type(x509.DNSName)}
    listed |= {str(value) for value in sans.get_values_for_type(x509.IPAddress)}
    return [name for name in names if str(_normal(name)) not in listed]


def _normal(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.lower()


def check_server_pair(cert: Path, key: Path, cert_option: str, key_option: str) -> x509.Certificate:
    """Check that a server can load `cert` and `key` and that they belong together; returns the cert."""
    certificate = load_certificate(cert, cert_option)
    try:
        key_data = key.read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"{key_option} {key}: cannot read the private key: {exc.strerror}") from None
    try:
        private = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as exc:
        reason = "it is encrypted (give an unencrypted key)" if isinstance(exc, TypeError) else str(exc)
        raise TLSConfigError(
            f"{key_option} {key}: Expected an unencrypted PEM private key,"
            f" got {_first_line(key_data)!r}: {reason}"
        ) from None
    if private.public_key() != certificate.public_key():
        raise TLSConfigError(
            f"{key_option} {key}: this key does not belong to the certificate {cert_option} {cert}"
            " (their public keys differ); give the key the certificate was made for"
        )
    return certificate


def client_context(ca_file: str | None) -> ssl.SSLContext:
    """Verify the origin against `ca_file` (a PEM CA or the origin's own certificate) or, when None,
    against the system's trust store; the host name is checked either way."""
    if not ca_file:
        return ssl.create_default_context()
    load_certificate(Path(ca_file), "--origin-ca")  # names the file in its errors
    return ssl.create_default_context(cafile=ca_file)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write `path` created with `mode` from the start (a key is never readable by others, even briefly)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as out:
        out.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _first_line(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    return (text.splitlines() or ["(empty file)"])[0][:60]
