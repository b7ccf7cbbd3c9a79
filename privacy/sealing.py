"""Sealing small secrets to an owner's public key with HPKE (RFC 9180).

Anyone holding the owner's *public* key can seal (the server does it for a picture finished
while its owner is logged out); only the owner's *private* key can unseal. The private key is
kept by the accounts layer wrapped under a key derived from the owner's password, so the server
on its own cannot open what it sealed.

One fixed suite, no choices (age style): KEM ML-KEM-768 + X25519 hybrid, KDF HKDF-SHA256, AEAD
AES-256-GCM. The hybrid KEM is secure as long as either X25519 or ML-KEM holds, so a copy of
the data directory taken today stays closed even against a future quantum computer ("harvest
now, decrypt later"); it costs 1.2 kB of public key and 1.1 kB per sealed key, which is nothing
next to a picture. docs/privacy.md explains the choice.

Encodings (all start with a version byte so that a future change is visible, never negotiated):

* private key: ``0x01 || ML-KEM-768 seed (64) || X25519 private (32)`` — 97 bytes
* public key:  ``0x01 || ML-KEM-768 public (1184) || X25519 public (32)`` — 1217 bytes
* sealed:      ``0x01 || HPKE enc || AES-256-GCM ciphertext+tag``

The caller's ``context`` is bound through HPKE's ``info``: a sealed value opens only with the
same context (e.g. owner id + picture id), so it cannot be moved to another picture or owner.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from privacy.errors import SealError

VERSION = 1
_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_MLKEM_SEED = 64
_MLKEM_PUBLIC = 1184
_X25519 = 32
PRIVATE_KEY_LENGTH = 1 + _MLKEM_SEED + _X25519
PUBLIC_KEY_LENGTH = 1 + _MLKEM_PUBLIC + _X25519
_ENC_LENGTH = hpke.KEM.MLKEM768_X25519.enc_length()
_TAG = 16
_INFO_PREFIX = b"obscura/seal/v1\x00"


def generate_owner_keypair() -> tuple[bytes, bytes]:
    """A fresh owner key pair as ``(private_key_bytes, public_key_bytes)``."""
    kem_key = mlkem.MLKEM768PrivateKey.generate()
    dh_key = x25519.X25519PrivateKey.generate()
    private = bytes([VERSION]) + kem_key.private_bytes_raw() + dh_key.private_bytes_raw()
    public = (
        bytes([VERSION])
        + kem_key.public_key().public_bytes_raw()
        + dh_key.public_key().public_bytes_raw()
    )
    return private, public


def public_key_of(private_key: bytes) -> bytes:
    """The public key that belongs to ``private_key`` (to check a pair after unwrapping)."""
    kem_key, dh_key = _load_private(private_key)
    return (
        bytes([VERSION])
        + kem_key.public_key().public_bytes_raw()
        + dh_key.public_key().public_bytes_raw()
    )


def seal(public_key: bytes, secret: bytes, *, context: bytes) -> bytes:
    """Encrypt ``secret`` so that only the holder of the matching private key can read it."""
    recipient = _load_public(public_key)
    return bytes([VERSION]) + _SUITE.encrypt(secret, recipient, info=_INFO_PREFIX + context)


def unseal(private_key: bytes, sealed: bytes, *, context: bytes) -> bytes:
    """Open ``sealed``; refuses a wrong key, a wrong context, or any change to the bytes."""
    if len(sealed) < 1 + _ENC_LENGTH + _TAG or sealed[0] != VERSION:
        raise SealError("seal_damaged", "The sealed key is damaged or was made by another version.")
    recipient = hpke.MLKEM768X25519PrivateKey(*_load_private(private_key))
    try:
        return _SUITE.decrypt(sealed[1:], recipient, info=_INFO_PREFIX + context)
    except (InvalidTag, ValueError):
        raise SealError(
            "seal_refused",
            "The sealed key does not open with this key; it is not yours or it was changed.",
        ) from None


def _load_private(data: bytes) -> tuple[mlkem.MLKEM768PrivateKey, x25519.X25519PrivateKey]:
    if len(data) != PRIVATE_KEY_LENGTH or data[0] != VERSION:
        raise SealError("bad_private_key", "The private key is not an Obscura owner key.")
    kem_key = mlkem.MLKEM768PrivateKey.from_seed_bytes(data[1 : 1 + _MLKEM_SEED])
    dh_key = x25519.X25519PrivateKey.from_private_bytes(data[1 + _MLKEM_SEED :])
    return kem_key, dh_key


def _load_public(data: bytes) -> hpke.MLKEM768X25519PublicKey:
    if len(data) != PUBLIC_KEY_LENGTH or data[0] != VERSION:
        raise SealError("bad_public_key", "The public key is not an Obscura owner key.")
    try:
        kem_key = mlkem.MLKEM768PublicKey.from_public_bytes(data[1 : 1 + _MLKEM_PUBLIC])
        dh_key = x25519.X25519PublicKey.from_public_bytes(data[1 + _MLKEM_PUBLIC :])
    except ValueError:
        raise SealError("bad_public_key", "The public key is not an Obscura owner key.") from None
    return hpke.MLKEM768X25519PublicKey(kem_key, dh_key)
