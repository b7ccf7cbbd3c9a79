"""Where a pipeline runs and how it fits: device, number format, and memory mode.

Defaults are the safest that work: float32 on CPU; on CUDA bfloat16 where the card supports it
(no fp16 overflow in the SDXL VAE) else float16; float16 on Apple MPS. Memory modes are chosen
by core/planner.py (per model and device, from the free GPU memory and RAM) and can be forced
with one of ``MEMORY_MODES``; ``plan`` below is the older whole-model rule, kept for callers that
have only a byte count (the planner uses the same rule for SD 1.x/2.x/SDXL).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.errors import InputError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# "none" is the old name of "full" (everything on the GPU); core/planner.py explains each.
MEMORY_MODES = (
    "auto",
    "none",
    "full",
    "model-offload",
    "group-offload",
    "sequential-offload",
    "fp8-layerwise",
    "bnb-8bit",
    "bnb-4bit",
)
LEGACY_MODES = ("auto", "none", "model-offload", "sequential-offload")


@dataclass(frozen=True)
class DevicePlan:
    device: str  # "cuda:0", "mps", "cpu"
    dtype: torch.dtype
    memory_mode: str  # none | model-offload | group-offload | sequential-offload
    attention_slicing: bool
    vae_tiling: bool


def available_devices() -> list[str]:
    """Every device a worker can run on: each CUDA GPU, else MPS, else the CPU."""
    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return ["mps"]
    return ["cpu"]


def resolve_device(requested: str = "auto") -> str:
    if requested == "auto":
        return available_devices()[0]
    if requested == "cuda":
        requested = "cuda:0"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("no_cuda", "No CUDA GPU is available; use --device cpu or auto.")
    if requested == "mps" and requested not in available_devices():
        raise InputError("no_mps", "Apple MPS is not available here; use --device cpu or auto.")
    if requested != "cpu" and not requested.startswith(("cuda", "mps")):
        raise InputError("bad_device", "Device must be auto, cpu, mps, cuda or cuda:N.")
    return requested


def resolve_dtype(device: str, requested: str = "auto") -> torch.dtype:
    if requested != "auto":
        if requested not in DTYPES:
            raise InputError("bad_dtype", "dtype must be auto, float32, float16 or bfloat16.")
        return DTYPES[requested]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def free_memory_bytes(device: str) -> int | None:
    if device.startswith("cuda"):
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    return None  # CPU and MPS share system memory; no offload needed there


def plan(
    device: str, dtype: torch.dtype, model_bytes: int, memory_mode: str = "auto"
) -> DevicePlan:
    """Pick offload/slicing/tiling for a model of ``model_bytes`` (in its run dtype)."""
    if memory_mode not in LEGACY_MODES:
        raise InputError(
            "bad_memory_mode", "Memory mode must be one of: {modes}.", modes=", ".join(LEGACY_MODES)
        )
    free = free_memory_bytes(device)
    if memory_mode == "auto":
        if free is None or free > model_bytes * 2:
            memory_mode = "none"
        elif free > model_bytes * 0.6:
            memory_mode = "model-offload"
        else:
            memory_mode = "sequential-offload"
    tight = free is not None and free < model_bytes * 3
    return DevicePlan(
        device=device,
        dtype=dtype,
        memory_mode=memory_mode,
        attention_slicing=tight,
        vae_tiling=tight,
    )
