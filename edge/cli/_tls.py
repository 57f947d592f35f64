"""The TLS options of `edge origin` and `edge node`, checked before granian starts (it would fail
in a worker with a bare OpenSSL message); docs/tls.md explains them."""

from __future__ import annotations

import argparse
import ipaddress
import re
from pathlib import Path

from edge.cli._abort import abort
from edge.control.tls import (
    CERT_FILE,
    KEY_FILE,
    TLSConfigError,
    check_server_pair,
    default_names,
    fingerprint,
    load_certificate,
    missing_names,
    self_signed,
)

__all__ = ["add_origin_tls_options", "check_origin_tls_options", "origin_tls", "server_pair"]

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def add_origin_tls_options(parser: argparse.ArgumentParser) -> None:
    """--tls-cert, --tls-key, --tls-self-signed and --tls-san for `edge origin`."""
    parser.add_argument("--tls-cert", metavar="FILE", type=Path, help="serve HTTPS with this PEM certificate")
    parser.add_argument("--tls-key", metavar="FILE", type=Path, help="the certificate's PEM private key")
    parser.add_argument(
        "--tls-self-signed",
        action="store_true",
        help=f"serve HTTPS with DATA/{CERT_FILE}, made on first start (nodes pin it with --origin-ca)",
    )
    parser.add_argument(
        "--tls-san",
        metavar="NAME",
        action="append",
        type=_host_name,
        default=[],
        help="another host name or address the self-signed certificate is for (repeatable)",
    )


def _host_name(value: str) -> str:
    """A DNS name (a leading `*.` allowed) or an IP address, for --tls-san."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    labels = value.lower().removeprefix("*.").rstrip(".").split(".")
    if len(value) <= 253 and all(_LABEL.fullmatch(label) for label in labels):
        return value.lower().rstrip(".")
    raise argparse.ArgumentTypeError(
        f"Expected a host name or an IP address (e.g. origin.example or 10.0.0.5), got {value!r}"
    )


def server_pair(cert: Path | None, key: Path | None) -> tuple[Path, Path] | None:
    """The checked (cert, key) of --tls-cert/--tls-key, None when neither is given; aborts naming the fix."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = ("--tls-cert", "--tls-key") if key is None else ("--tls-key", "--tls-cert")
        abort(f"{given} needs {missing} too: give both the certificate and its private key", 2)
    try:
        check_server_pair(cert, key, "--tls-cert", "--tls-key")
    except TLSConfigError as exc:
        abort(str(exc), 2)
    return cert.resolve(), key.resolve()


def check_origin_tls_options(args: argparse.Namespace) -> None:
    """Abort on TLS options that contradict each other (before anything is written)."""
    if args.tls_self_signed and (args.tls_cert or args.tls_key):
        abort("--tls-self-signed makes its own certificate: give it, or --tls-cert/--tls-key, not both", 2)
    if args.tls_san and not args.tls_self_signed:
        abort("--tls-san names the hosts of the self-signed certificate: it needs --tls-self-signed", 2)
    if not args.tls_self_signed:
        server_pair(args.tls_cert, args.tls_key)


def origin_tls(args: argparse.Namespace, data: Path) -> tuple[Path, Path] | None:
    """The origin's (cert, key): given, or self-signed in `data` (made now when missing); prints the
    certificate's path and fingerprint, which nodes and the CLI need."""
    check_origin_tls_options(args)
    if not args.tls_self_signed:
        pair = server_pair(args.tls_cert, args.tls_key)
        if pair is not None:
            _print_certificate(pair[0], "")
        return pair
    cert, key = data / CERT_FILE, data / KEY_FILE
    if not cert.exists() and not key.exists():
        names = default_names(args.host, args.tls_san)
        try:
            self_signed(cert, key, names)
        except OSError as exc:
            abort(f"{data}: cannot write the self-signed certificate: {exc.strerror}")
        _print_certificate(cert, f"made a self-signed certificate for {', '.join(names)}: ")
        return cert, key
    if not key.exists() or not cert.exists():
        present, absent = (cert, key) if cert.exists() else (key, cert)
        abort(
            f"{absent}: missing while {present} exists; remove {present} too and start again to make a new"
            " pair (every node and CLI then needs the new certificate)",
            2,
        )
    try:
        certificate = check_server_pair(cert, key, "certificate", "key")
    except TLSConfigError as exc:
        abort(f"{exc}; or remove {cert} and {key} to make a new pair", 2)
    wanted = [args.host] if args.host not in ("", "0.0.0.0", "::") else []
    missing = missing_names(certificate, [*wanted, *args.tls_san])
    if missing:
        abort(
            f"{cert}: the self-signed certificate is not for {', '.join(missing)}; remove {cert} and {key}"
            " and start again to make one that is (every node and CLI then needs the new certificate)",
            2,
        )
    _print_certificate(cert, "")
    return cert, key


def _print_certificate(cert: Path, prefix: str) -> None:
    try:
        certificate = load_certificate(cert, "--tls-cert")
    except TLSConfigError as exc:
        abort(str(exc), 2)
    print(f"{prefix}TLS certificate {cert}", flush=True)
    print(f"  sha256 fingerprint {fingerprint(certificate)}", flush=True)
    print(
        f"  nodes and the CLI trust it with --origin-ca {cert} (a copy, or its CA; or EDGE_ORIGIN_CA)",
        flush=True,
    )
