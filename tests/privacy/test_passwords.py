"""Argon2id password hashing and the password policy."""

from __future__ import annotations

import pytest

from privacy import passwords
from privacy.errors import PrivacyError
from privacy.passwords import PasswordPolicyError, make_hasher

FAST = make_hasher(time_cost=1, memory_cost=8, parallelism=1)


def test_default_hash_is_argon2id_with_rfc9106_parameters() -> None:
    # The one test that pays the real cost (64 MiB, 3 passes, 4 lanes).
    stored = passwords.hash_password("correct horse battery")
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert passwords.verify_password(stored, "correct horse battery")
    assert not passwords.needs_rehash(stored)


def test_wrong_password_does_not_verify() -> None:
    stored = passwords.hash_password("correct horse battery", FAST)
    assert passwords.verify_password(stored, "correct horse battery", FAST)
    assert not passwords.verify_password(stored, "correct horse batterY", FAST)
    assert not passwords.verify_password(stored, "", FAST)


def test_two_hashes_of_one_password_differ_by_salt() -> None:
    assert passwords.hash_password("same password", FAST) != passwords.hash_password(
        "same password", FAST
    )


def test_hash_never_contains_the_password() -> None:
    stored = passwords.hash_password("plaintext-canary-123", FAST)
    assert "plaintext-canary-123" not in stored


def test_short_password_is_refused_with_a_sentence_that_does_not_echo_it() -> None:
    with pytest.raises(PasswordPolicyError) as caught:
        passwords.hash_password("abc1234", FAST)
    assert isinstance(caught.value, PrivacyError)
    assert caught.value.code == "password_too_short"
    assert "at least 8 characters" in str(caught.value)
    assert "abc1234" not in str(caught.value)


def test_eight_characters_are_enough() -> None:
    passwords.check_policy("12345678")


def test_overlong_password_is_refused_and_never_verifies() -> None:
    with pytest.raises(PasswordPolicyError, match="at most"):
        passwords.check_policy("x" * (passwords.MAX_LENGTH + 1))
    stored = passwords.hash_password("x" * passwords.MAX_LENGTH, FAST)
    assert not passwords.verify_password(stored, "x" * (passwords.MAX_LENGTH + 1), FAST)


def test_hash_made_with_other_parameters_asks_for_rehash() -> None:
    stronger = make_hasher(time_cost=2, memory_cost=16, parallelism=1)
    stored = passwords.hash_password("correct horse battery", FAST)
    assert not passwords.needs_rehash(stored, FAST)
    assert passwords.needs_rehash(stored, stronger)
    assert passwords.verify_password(stored, "correct horse battery", stronger)


def test_damaged_hash_counts_as_no_match() -> None:
    assert not passwords.verify_password("$argon2id$garbage", "whatever pw", FAST)
    assert passwords.needs_rehash("not a hash", FAST)


def test_parameters_of_follow_the_hasher() -> None:
    params = passwords.parameters_of(FAST)
    assert (params.time_cost, params.memory_cost, params.parallelism) == (1, 8, 1)
    default = passwords.parameters_of()
    assert (default.time_cost, default.memory_cost, default.parallelism) == (3, 65536, 4)
