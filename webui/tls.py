"""HTTPS for LAN use: a self-signed certificate made on first start (``--tls auto``), or the
owner's own (``--tls-cert`` / ``--tls-key``).

The certificate is ECDSA P-256, valid for ``localhost``, the loopback addresses, this machine's
host name and its LAN address(es). The key is written mode 0600 in ``<data-dir>/tls/``. Browsers
will warn about a self-signed certificate: compare the SHA-256 fingerprint they show with the
one printed at start.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from core.errors import InputError

CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"
VALID_DAYS = 825  # the longest validity Apple platforms accept for a TLS server certificate


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    fingerprint: str  # SHA-256 of the DER certificate, colon-separated hex
    created: bool = False


def fingerprint(cert_path: Path) -> str:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def local_names(host: str | None = None) -> tuple[list[str], list[ipaddress._BaseAddress]]:
    """DNS names and IP addresses the certificate should cover."""
    names = {"localhost", socket.gethostname()}
    addresses: set[ipaddress._BaseAddress] = {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    if host:
        try:
            addresses.add(ipaddress.ip_address(host))
        except ValueError:
            names.add(host)
    addresses |= _lan_addresses()
    addresses.discard(ipaddress.ip_address("0.0.0.0"))  # noqa: S104
    return sorted(n for n in names if n), sorted(addresses, key=str)


def _lan_addresses(fib_trie: Path = Path("/proc/net/fib_trie")) -> set[ipaddress._BaseAddress]:
    """This machine's own IPv4 addresses, read from the kernel's routing table (Linux).

    Reading a file, not opening a socket: start-up makes no network call of any kind."""
    found: set[ipaddress._BaseAddress] = set()
    try:
        lines = fib_trie.read_text(encoding="ascii").splitlines()
    except OSError:
        return found
    for previous, line in zip(lines, lines[1:], strict=False):
        if line.strip() == "/32 host LOCAL":
            address = ipaddress.ip_address(previous.split()[-1])
            if not address.is_loopback:
                found.add(address)
    return found


def make_self_signed(directory: Path, host: str | None = None) -> TlsFiles:
    """Write a new key (0600) and certificate into ``directory``."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    names, addresses = local_names(host)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Obscura (self-signed)")])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt_names += [x509.IPAddress(a) for a in addresses]  # type: ignore[arg-type]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_path = directory / KEY_NAME
    cert_path = directory / CERT_NAME
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_bytes)
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return TlsFiles(cert_path, key_path, fingerprint(cert_path), created=True)


def auto_tls(data_dir: Path, host: str | None = None) -> TlsFiles:
    """Reuse ``<data-dir>/tls`` when it holds a valid, unexpired certificate; else make one."""
    directory = data_dir / "tls"
    cert_path, key_path = directory / CERT_NAME, directory / KEY_NAME
    if cert_path.is_file() and key_path.is_file():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
        if cert.not_valid_after_utc > soon:
            os.chmod(key_path, 0o600)
            return TlsFiles(cert_path, key_path, fingerprint(cert_path))
    return make_self_signed(directory, host)


def given_tls(cert: Path, key: Path) -> TlsFiles:
    """The owner's certificate and key; checked to exist and parse."""
    for path in (cert, key):
        if not path.is_file():
            raise InputError(
                "tls_file_missing", "The TLS file {path} does not exist.", path=str(path)
            )
    try:
        return TlsFiles(cert, key, fingerprint(cert))
    except ValueError:
        raise InputError(
            "tls_cert_invalid",
            "The TLS certificate {path} is not a PEM certificate.",
            path=str(cert),
        ) from None
