"""Shared fixtures for the privacy tests (owner key pairs are slow-ish to make: share them)."""

from __future__ import annotations

import pytest

from privacy.sealing import generate_owner_keypair


@pytest.fixture(scope="session")
def alice_keys() -> tuple[bytes, bytes]:
    return generate_owner_keypair()


@pytest.fixture(scope="session")
def bob_keys() -> tuple[bytes, bytes]:
    return generate_owner_keypair()
