"""Wrapping an owner's gallery private key under a key derived from the owner's password.

The private key (from :func:`privacy.sealing.generate_owner_keypair`) is never stored in the
clear. It is encrypted with AES-256-GCM under a 256-bit key that Argon2id derives from the
password and a random salt of its own (not the password hash's salt). The database holds only
the wrapped blob; the key is unwrapped into memory at login and forgotten at logout.

Blob layout, version 1 (45-byte header, then ciphertext and the 16-byte GCM tag)::

    b"OBKW" | version (1) | time_cost (u32) | memory_cost KiB (u32) | parallelism (u32)
            | salt (16) | nonce (12) | AES-256-GCM(private key) with the header as associated data

The header is authenticated, so changing any byte of it (a lower cost, another salt) makes
unwrapping fail. A wrong password and a changed blob are refused with the same sentence: GCM
cannot tell them apart, and an attacker should not learn which it was.
"""

from __future__ import annotations

import os
import struct

import argon2
from argon2.low_level import hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privacy.errors import PrivacyError
from privacy.passwords import parameters_of

MAGIC = b"OBKW"
VERSION = 1
_HEADER = struct.Struct(">4sBIII16s12s")
HEADER_LENGTH = _HEADER.size
_TAG = 16
_KEY_LENGTH = 32
# Bounds for parameters read back from a blob: a changed header must not make us spend
# gigabytes or minutes before GCM refuses it.
_MAX_TIME_COST = 16
_MAX_MEMORY_KIB = 1024 * 1024
_MAX_PARALLELISM = 16


class KeyUnwrapError(PrivacyError):
    """A wrapped key that does not open: wrong password, or the stored blob was changed."""


def wrap(
    private_key: bytes, password: str, *, parameters: argon2.Parameters | None = None
) -> bytes:
    """Encrypt ``private_key`` under ``password``; ``parameters`` default to RFC 9106's cost."""
    params = parameters or parameters_of()
    header = _HEADER.pack(
        MAGIC,
        VERSION,
        params.time_cost,
        params.memory_cost,
        params.parallelism,
        os.urandom(16),
        os.urandom(12),
    )
    _, _, time_cost, memory_cost, parallelism, salt, nonce = _HEADER.unpack(header)
    key = _derive(password, salt, time_cost, memory_cost, parallelism)
    return header + AESGCM(key).encrypt(nonce, private_key, header)


def unwrap(blob: bytes, password: str) -> bytes:
    """The private key inside ``blob``; refuses a wrong password or any change to the blob."""
    time_cost, memory_cost, parallelism, salt, nonce = _read_header(blob)
    key = _derive(password, salt, time_cost, memory_cost, parallelism)
    try:
        return AESGCM(key).decrypt(nonce, blob[HEADER_LENGTH:], blob[:HEADER_LENGTH])
    except InvalidTag:
        raise KeyUnwrapError(
            "key_unwrap_refused",
            "The gallery key did not unlock: the password is wrong or the stored key was changed.",
        ) from None


def rewrap(
    blob: bytes,
    old_password: str,
    new_password: str,
    *,
    parameters: argon2.Parameters | None = None,
) -> bytes:
    """The same private key, wrapped under ``new_password`` with a fresh salt and nonce."""
    return wrap(unwrap(blob, old_password), new_password, parameters=parameters)


def needs_rewrap(blob: bytes, parameters: argon2.Parameters | None = None) -> bool:
    """True when ``blob`` was wrapped with other costs than ``parameters`` (rewrap at login)."""
    params = parameters or parameters_of()
    time_cost, memory_cost, parallelism, _, _ = _read_header(blob)
    return (time_cost, memory_cost, parallelism) != (
        params.time_cost,
        params.memory_cost,
        params.parallelism,
    )


def _read_header(blob: bytes) -> tuple[int, int, int, bytes, bytes]:
    damaged = KeyUnwrapError(
        "key_blob_damaged", "The stored gallery key is damaged or was made by another version."
    )
    if len(blob) < HEADER_LENGTH + _TAG:
        raise damaged
    magic, version, time_cost, memory_cost, parallelism, salt, nonce = _HEADER.unpack(
        blob[:HEADER_LENGTH]
    )
    if magic != MAGIC or version != VERSION:
        raise damaged
    if not (
        1 <= time_cost <= _MAX_TIME_COST
        and 1 <= parallelism <= _MAX_PARALLELISM
        and 8 * parallelism <= memory_cost <= _MAX_MEMORY_KIB
    ):
        raise damaged
    return time_cost, memory_cost, parallelism, salt, nonce


def _derive(
    password: str, salt: bytes, time_cost: int, memory_cost: int, parallelism: int
) -> bytes:
    return hash_secret_raw(
        password.encode("utf-8"),
        salt,
        time_cost=time_cost,
        memory_cost=memory_cost,
        parallelism=parallelism,
        hash_len=_KEY_LENGTH,
        type=argon2.Type.ID,
    )
