"""Offline by construction: the privacy switches are set first, and painting makes no connection."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from netguard import network_guard  # type: ignore[import-not-found]

from core.offline import PRIVACY_ENV


def test_privacy_switches_are_forced_even_when_the_shell_turns_them_off():
    env = dict(os.environ, HF_HUB_OFFLINE="0", GRADIO_ANALYTICS_ENABLED="True", DO_NOT_TRACK="0")
    code = (
        "import sys, os; import webui; "
        "assert 'diffusers' not in sys.modules and 'gradio' not in sys.modules; "
        "import huggingface_hub.constants as c; "
        "print(c.HF_HUB_OFFLINE, os.environ['GRADIO_ANALYTICS_ENABLED'], os.environ['DO_NOT_TRACK'], "
        "os.environ['HF_HUB_DISABLE_TELEMETRY'], os.environ['GRADIO_RUN_HISTORY'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["True", "False", "1", "1", "false"]


def test_every_switch_is_in_the_environment_after_importing_core():
    import core  # noqa: F401

    for name, value in PRIVACY_ENV.items():
        assert os.environ[name] == value


def test_the_guard_itself_sees_an_outbound_attempt():
    import socket

    with network_guard() as attempts:
        try:
            socket.getaddrinfo("example.invalid", 443)
        except OSError:
            pass
    assert attempts == ["getaddrinfo example.invalid"]


def test_building_loading_and_painting_make_no_outbound_connection(tmp_path: Path):
    from core.demo import save_demo_model
    from core.engine import Engine, GenerationRequest
    from core.registry import ModelRegistry

    with network_guard() as attempts:
        save_demo_model(tmp_path / "demo", arch="sd")
        engine = Engine(ModelRegistry(tmp_path), device="cpu")
        result = engine.generate(
            GenerationRequest("a boat", width=64, height=64, num_inference_steps=2)
        )
        engine.generate(GenerationRequest("a boat", image=result.images[0], num_inference_steps=2))
    assert result.images
    assert attempts == []
