"""Password hashing with Argon2id, and the password policy.

Hashes are made by argon2-cffi's ``PasswordHasher``; its defaults are RFC 9106's second
recommended profile (Argon2id, 3 passes, 64 MiB, 4 lanes, 16-byte random salt). Each hash string
carries its own parameters, so raising the cost later is picked up at the next login:
:func:`needs_rehash` says so, and the accounts layer stores a fresh hash.

Tests pass a cheaper hasher (:func:`make_hasher` with low cost); production never needs to.
"""

from __future__ import annotations

import secrets

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from privacy.errors import PrivacyError

MIN_LENGTH = 8
# An upper bound keeps a single request from making the server hash megabytes.
MAX_LENGTH = 1024


class PasswordPolicyError(PrivacyError):
    """A new password that the policy refuses."""


def make_hasher(
    *, time_cost: int | None = None, memory_cost: int | None = None, parallelism: int | None = None
) -> argon2.PasswordHasher:
    """An Argon2id hasher; every cost left out keeps the RFC 9106 default."""
    defaults = argon2.profiles.RFC_9106_LOW_MEMORY
    return argon2.PasswordHasher(
        time_cost=defaults.time_cost if time_cost is None else time_cost,
        memory_cost=defaults.memory_cost if memory_cost is None else memory_cost,
        parallelism=defaults.parallelism if parallelism is None else parallelism,
        hash_len=defaults.hash_len,
        salt_len=defaults.salt_len,
        type=argon2.Type.ID,
    )


DEFAULT_HASHER = make_hasher()


def check_policy(password: str) -> None:
    """Refuse a password that is too short or too long, with a sentence that says which."""
    if len(password) < MIN_LENGTH:
        raise PasswordPolicyError(
            "password_too_short",
            f"The password must be at least {MIN_LENGTH} characters long; "
            "a short sentence works well.",
        )
    if len(password) > MAX_LENGTH:
        raise PasswordPolicyError(
            "password_too_long", f"The password must be at most {MAX_LENGTH} characters long."
        )


def hash_password(password: str, hasher: argon2.PasswordHasher | None = None) -> str:
    """The Argon2id hash string (``$argon2id$v=19$m=...``) for a password that meets the policy."""
    check_policy(password)
    return (hasher or DEFAULT_HASHER).hash(password)


def verify_password(
    stored_hash: str, password: str, hasher: argon2.PasswordHasher | None = None
) -> bool:
    """True when ``password`` matches ``stored_hash``; a damaged hash counts as no match."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return (hasher or DEFAULT_HASHER).verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str, hasher: argon2.PasswordHasher | None = None) -> bool:
    """True when ``stored_hash`` was made with other parameters than ``hasher`` uses now."""
    try:
        return (hasher or DEFAULT_HASHER).check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True


def parameters_of(hasher: argon2.PasswordHasher | None = None) -> argon2.Parameters:
    """The hasher's cost parameters, so key wrapping can use the same cost."""
    h = hasher or DEFAULT_HASHER
    return argon2.Parameters(
        type=argon2.Type.ID,
        version=argon2.low_level.ARGON2_VERSION,
        salt_len=h.salt_len,
        hash_len=h.hash_len,
        time_cost=h.time_cost,
        memory_cost=h.memory_cost,
        parallelism=h.parallelism,
    )


def dummy_hash(hasher: argon2.PasswordHasher | None = None) -> str:
    """A hash of a random password, verified for unknown usernames so timing tells nothing."""
    return (hasher or DEFAULT_HASHER).hash(secrets.token_urlsafe(24))
