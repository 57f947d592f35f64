"""edge/control/tls.py: the self-signed certificate, pair checks and exact error texts (no sockets)."""

from __future__ import annotations

import datetime
import ipaddress
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge.control.tls import (
    VALIDITY_DAYS,
    TLSConfigError,
    check_server_pair,
    client_context,
    fingerprint,
    load_certificate,
    missing_names,
    self_signed,
)

NOW = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)


def test_the_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = self_signed(cert, key, ["localhost", "127.0.0.1", "::1", "origin.example"], now=NOW)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert.stat().st_mode) == 0o644
    assert load_certificate(cert, "cert") == made
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp256r1"
    sans = made.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "origin.example"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert made.not_valid_before_utc == NOW - datetime.timedelta(hours=1)
    assert made.not_valid_after_utc == NOW + datetime.timedelta(days=VALIDITY_DAYS)
    constraints = made.extensions.get_extension_for_class(x509.BasicConstraints)
    assert (constraints.critical, constraints.value.ca, constraints.value.path_length) == (True, True, 0)
    assert missing_names(made, ["ORIGIN.example", "127.0.0.1", "0:0::1"]) == []
    assert missing_names(made, ["other.example", "10.0.0.1"]) == ["other.example", "10.0.0.1"]
    # The pair loads as a server's and the client context takes the certificate as its anchor.
    assert check_server_pair(cert, key, "--tls-cert", "--tls-key") == made
    assert client_context(str(cert)).get_ca_certs()[0]["subject"] == (
        (("commonName", "edge origin localhost"),),
    )


def test_the_fingerprint_is_what_openssl_prints(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    made = self_signed(cert, tmp_path / "key.pem", ["localhost"])
    openssl = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(cert)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert openssl.stdout.strip().lower() == f"sha256 fingerprint={fingerprint(made)}".lower()


def test_an_encrypted_key_and_a_missing_ca_file_are_named(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    self_signed(cert, key, ["localhost"])
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(TLSConfigError) as caught:
        check_server_pair(cert, encrypted, "--tls-cert", "--tls-key")
    assert str(caught.value) == (
        f"--tls-key {encrypted}: Expected an unencrypted PEM private key,"
        " got '-----BEGIN ENCRYPTED PRIVATE KEY-----': it is encrypted (give an unencrypted key)"
    )
    with pytest.raises(TLSConfigError) as caught:
        client_context(str(tmp_path / "nope.pem"))
    assert str(caught.value) == (
        f"--origin-ca {tmp_path / 'nope.pem'}: cannot read the certificate: No such file or directory"
    )
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    with pytest.raises(TLSConfigError) as caught:
        client_context(str(empty))
    assert str(caught.value) == (
        f"--origin-ca {empty}: Expected a PEM certificate (-----BEGIN CERTIFICATE-----), got '(empty file)'"
    )
