"""Self-signed certificates for --tls auto."""

from __future__ import annotations

import ipaddress
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from core.errors import InputError
from webui.tls import auto_tls, given_tls


def test_auto_tls_makes_an_ecdsa_cert_for_localhost_with_a_private_key(tmp_path):
    files = auto_tls(tmp_path, host="192.168.1.20")
    assert files.created
    assert files.key.stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    ips = san.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("127.0.0.1") in ips
    assert ipaddress.ip_address("192.168.1.20") in ips
    assert len(files.fingerprint.split(":")) == 32
    # the standard library accepts the pair as a server certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.cert, files.key)


def test_auto_tls_reuses_the_certificate_on_the_next_start(tmp_path):
    first = auto_tls(tmp_path)
    second = auto_tls(tmp_path)
    assert not second.created
    assert second.fingerprint == first.fingerprint


def test_missing_certificate_files_are_a_clear_error(tmp_path):
    with pytest.raises(InputError) as err:
        given_tls(tmp_path / "nope.pem", tmp_path / "key.pem")
    assert err.value.code == "tls_file_missing"
