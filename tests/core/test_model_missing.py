"""A model deleted while the server runs is one sentence with what to do (issue 9, "Faults")."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.errors import InputError


def test_a_model_deleted_while_serving_is_one_sentence(models_dir: Path, tmp_path: Path) -> None:
    from core.demo import DEMO_NAME
    from core.engine import Engine
    from core.registry import ModelRegistry

    folder = tmp_path / "models"
    shutil.copytree(models_dir / DEMO_NAME["sd"], folder / DEMO_NAME["sd"])
    engine = Engine(ModelRegistry(folder), device="cpu")
    engine.model_for(None)  # the registry has seen the model
    shutil.rmtree(folder / DEMO_NAME["sd"])
    with pytest.raises(InputError) as caught:
        engine.load(DEMO_NAME["sd"])
    assert caught.value.code == "model_missing"
    assert "put them back or choose another model" in str(caught.value)
