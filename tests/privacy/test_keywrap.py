"""Wrapping the owner's private key under a password-derived key (Argon2id raw + AES-256-GCM)."""

from __future__ import annotations

import struct
import time

import argon2
import pytest

from privacy import keywrap, sealing
from privacy.errors import PrivacyError
from privacy.keywrap import HEADER_LENGTH, KeyUnwrapError

CHEAP = argon2.Parameters(
    type=argon2.Type.ID,
    version=19,
    salt_len=16,
    hash_len=32,
    time_cost=1,
    memory_cost=8,
    parallelism=1,
)
OTHER = argon2.Parameters(
    type=argon2.Type.ID,
    version=19,
    salt_len=16,
    hash_len=32,
    time_cost=2,
    memory_cost=16,
    parallelism=1,
)
SECRET = bytes(range(97))


def test_round_trip_gives_back_the_private_key() -> None:
    blob = keywrap.wrap(SECRET, "correct horse", parameters=CHEAP)
    assert keywrap.unwrap(blob, "correct horse") == SECRET


def test_blob_holds_neither_key_nor_password() -> None:
    blob = keywrap.wrap(SECRET, "correct horse", parameters=CHEAP)
    assert SECRET not in blob
    assert b"correct horse" not in blob


def test_each_wrap_uses_a_fresh_salt_and_nonce() -> None:
    first = keywrap.wrap(SECRET, "correct horse", parameters=CHEAP)
    second = keywrap.wrap(SECRET, "correct horse", parameters=CHEAP)
    assert first[9:HEADER_LENGTH] != second[9:HEADER_LENGTH]
    assert first[HEADER_LENGTH:] != second[HEADER_LENGTH:]


def test_wrong_password_is_refused_without_echoing_it() -> None:
    blob = keywrap.wrap(SECRET, "correct horse", parameters=CHEAP)
    with pytest.raises(KeyUnwrapError) as caught:
        keywrap.unwrap(blob, "wrong horse")
    assert isinstance(caught.value, PrivacyError)
    assert caught.value.code == "key_unwrap_refused"
    assert "wrong horse" not in str(caught.value)


def test_one_flipped_bit_anywhere_is_refused() -> None:
    blob = keywrap.wrap(SECRET, "correct horse", parameters=CHEAP)
    for position in range(len(blob)):
        # The lowest bit of each byte: in the cost fields that stays a cheap (or refused) cost.
        for bit in (0, 7) if position >= 17 else (0,):
            changed = bytearray(blob)
            changed[position] ^= 1 << bit
            with pytest.raises(KeyUnwrapError):
                keywrap.unwrap(bytes(changed), "correct horse")


def test_truncated_blob_is_refused() -> None:
    blob = keywrap.wrap(SECRET, "correct horse", parameters=CHEAP)
    for length in range(len(blob)):
        with pytest.raises(KeyUnwrapError):
            keywrap.unwrap(blob[:length], "correct horse")


def test_header_records_the_cost_and_is_versioned() -> None:
    blob = keywrap.wrap(SECRET, "correct horse", parameters=OTHER)
    magic, version, time_cost, memory_cost, parallelism = struct.unpack(">4sBIII", blob[:17])
    assert (magic, version) == (b"OBKW", 1)
    assert (time_cost, memory_cost, parallelism) == (2, 16, 1)
    assert keywrap.needs_rewrap(blob, CHEAP)
    assert not keywrap.needs_rewrap(blob, OTHER)


def test_header_asking_for_absurd_memory_is_refused_at_once() -> None:
    blob = bytearray(keywrap.wrap(SECRET, "correct horse", parameters=CHEAP))
    blob[9:13] = struct.pack(">I", 0xFFFFFFFF)  # memory_cost: 4 TiB
    started = time.perf_counter()
    with pytest.raises(KeyUnwrapError) as caught:
        keywrap.unwrap(bytes(blob), "correct horse")
    assert caught.value.code == "key_blob_damaged"
    assert time.perf_counter() - started < 0.5


def test_rewrap_moves_the_same_key_to_the_new_password() -> None:
    blob = keywrap.wrap(SECRET, "old password", parameters=CHEAP)
    moved = keywrap.rewrap(blob, "old password", "new password", parameters=CHEAP)
    assert keywrap.unwrap(moved, "new password") == SECRET
    with pytest.raises(KeyUnwrapError):
        keywrap.unwrap(moved, "old password")


def test_rewrap_with_the_wrong_old_password_is_refused() -> None:
    blob = keywrap.wrap(SECRET, "old password", parameters=CHEAP)
    with pytest.raises(KeyUnwrapError):
        keywrap.rewrap(blob, "not the password", "new password", parameters=CHEAP)


def test_unwrapped_owner_key_opens_what_was_sealed_to_its_public_key(
    alice_keys: tuple[bytes, bytes],
) -> None:
    private_key, public_key = alice_keys
    sealed = sealing.seal(public_key, b"picture key", context=b"owner/picture")
    blob = keywrap.wrap(private_key, "alice's password", parameters=CHEAP)
    unwrapped = keywrap.unwrap(blob, "alice's password")
    assert sealing.unseal(unwrapped, sealed, context=b"owner/picture") == b"picture key"
