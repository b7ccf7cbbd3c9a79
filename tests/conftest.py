"""Fixtures shared by the whole suite: tiny demo models and a network guard."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from netguard import network_guard  # noqa: E402

import core  # noqa: F401  (privacy environment first)


@pytest.fixture
def no_egress() -> Iterator[list[str]]:
    with network_guard() as attempts:
        yield attempts
    assert attempts == [], f"non-loopback connection attempts: {attempts}"


# -- tiny models --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding the tiny SD and SDXL demo models (built once per run)."""
    from core.demo import DEMO_NAME, save_demo_model

    folder = tmp_path_factory.mktemp("models")
    save_demo_model(folder / DEMO_NAME["sd"], arch="sd")
    save_demo_model(folder / DEMO_NAME["sdxl"], arch="sdxl")
    return folder


@pytest.fixture(scope="session")
def engine(models_dir: Path):  # -> core.engine.Engine
    from core.engine import Engine
    from core.registry import ModelRegistry

    return Engine(ModelRegistry(models_dir), device="cpu")
