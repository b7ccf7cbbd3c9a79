"""Offline by construction.

Imported before anything else in Obscura (``core/__init__.py`` imports it first, and ``webui``
imports ``core`` first). It sets the switches that keep huggingface_hub, diffusers, transformers
and gradio from reaching the network: no model downloads, no telemetry, no analytics, no version
checks, no run history. The values are forced, not defaulted: an owner's shell that sets
``HF_HUB_OFFLINE=0`` does not turn the network back on.

Some of these libraries read the variables once, at import time, so this module must run before
the first ``import diffusers`` / ``import gradio``; ``tests/test_offline.py`` checks that order.
"""

from __future__ import annotations

import os

PRIVACY_ENV: dict[str, str] = {
    # huggingface_hub / diffusers / transformers: local files only, no telemetry.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "DIFFUSERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "DISABLE_TELEMETRY": "1",
    # gradio: no analytics, no version check, no run history.
    "GRADIO_ANALYTICS_ENABLED": "False",
    "GRADIO_RUN_HISTORY": "false",
    # the convention many other tools honour.
    "DO_NOT_TRACK": "1",
    # diffusers: no kernels fetched from the Hub (the `kernels` package's get_kernel) for GGUF
    # transformers or attention, and the built-in attention (no backend that downloads one).
    "DIFFUSERS_GGUF_CUDA_KERNELS": "false",
    "DIFFUSERS_TRUST_REMOTE_KERNELS": "false",
    "DIFFUSERS_ATTN_BACKEND": "native",
}


# Not privacy, just quiet: library chatter goes to stderr unless the owner asks for it.
QUIET_ENV: dict[str, str] = {"TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error"}


def apply() -> None:
    """Force every privacy switch in this process's environment (idempotent)."""
    os.environ.update(PRIVACY_ENV)
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)


apply()
