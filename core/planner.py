"""The memory planner: how one model fits on one device, chosen before any weight is loaded.

:func:`plan_model` is a pure function of numbers (the model's per-component sizes, read from
file headers only, and the free GPU memory and RAM), so it is tested with simulated devices
(tests/core/test_planner.py). :func:`apply` enacts a plan on a loaded pipeline with diffusers'
own methods. :func:`describe` is the one short line the UI and ``obscura models`` show.

A plan has two axes. **Placement** (where the weights live while painting):

- ``full``: every component on the GPU (``pipe.to(device)``).
- ``model-offload``: one component on the GPU at a time (``enable_model_cpu_offload``).
- ``group-offload``: the denoiser block by block, the text encoders layer by layer, prefetched on a
  CUDA stream from pinned RAM (``enable_group_offload(..., use_stream=True)``); the VAE stays on
  the GPU.
- ``sequential-offload``: every layer moved in when it runs (``enable_sequential_cpu_offload``).
- ``cpu``: no GPU (CPU or Apple MPS, whose memory is the RAM).

**Storage** of the denoiser (the transformer or UNet; the text encoders stay in the run dtype):
``native`` (the run dtype), ``fp8`` (``enable_layerwise_casting(float8_e4m3fn, compute=bf16)``:
half the bytes of bf16, cast back per layer), ``gguf`` (the file is GGUF: its size is what it is),
``bnb-8bit`` / ``bnb-4bit`` (bitsandbytes, only when it imports; never chosen otherwise).

Peaks (bytes; W = each component's weights in its storage, A = activations at the family's
default size: ``ACTIVATION_GB`` at ``ACTIVATION_SIZE``, scaled by the pixels and the dtype; all
estimates, labelled so in docs/benchmarks.md):

- full: sum(W) + A
- model offload: max(W) + A
- group offload: max(denoiser's non-block weights + 2 x its largest block, 2 x each text
  encoder's largest tensor) + W(vae) + A (the factor 2: the next group is prefetched)
- sequential offload: largest tensor of any component + A
- VAE tiling halves A; it is on whenever the placement is not full (SD: when memory is tight)
- RAM, every GPU mode: sum of the weights as loaded (the pipeline is loaded into RAM before it is
  placed; fp8 is cast after loading, so it saves GPU memory, not RAM; GGUF and bitsandbytes load
  their smaller weights); CPU: sum(W) + A (float32: 4 bytes a parameter).

A GPU plan must leave ``VRAM_RESERVE`` free (allocator fragmentation, cuBLAS workspace), and
every plan ``RAM_RESERVE`` of RAM. Auto order (the first that fits wins): full, model offload,
fp8 (full, then model offload; transformer families only), group offload, bitsandbytes 8-bit then
4-bit (full, then model offload; only where installed), sequential offload. SD 1.x/2.x/SDXL keep
the rule they always had (full when the GPU has twice the model free, model offload above 0.6x,
else sequential; attention slicing and VAE tiling below 3x). A model that fits in no mode is
refused up front (``model_cannot_fit``...) with one sentence saying what would make it fit.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from core.devices import MEMORY_MODES, DevicePlan
from core.errors import InputError, ModelError
from core.registry import ModelInfo, read_safetensors_header

log = logging.getLogger("obscura.core")

GB = 10**9  # sizes are shown in GB as model pages give them (10^9 bytes)

SD_ARCHS = ("sd1", "sd2", "sdxl")
PLACEMENTS = ("full", "model-offload", "group-offload", "sequential-offload")
STORAGES = ("native", "fp8", "gguf", "bnb-8bit", "bnb-4bit")
# What --memory-mode / memory_mode accept ("none" is the old name of "full").
FORCED_MODES = MEMORY_MODES

# Peak activation memory at the family's default size, in GB, in bf16/fp16 (estimates: the VAE
# decode of the default-size picture dominates every family; the denoiser's attention runs in
# PyTorch's memory-efficient SDPA). To be measured on a GPU (bench/engine.py --gpu).
ACTIVATION_GB = {
    "sd1": 0.9,  # 512², UNet + VAE decode
    "sd2": 1.6,  # 768²
    "sdxl": 2.6,  # 1024²
    "sd3": 2.2,  # 1024², 4096 image tokens + 333 text tokens
    "flux1": 2.6,  # 1024², 4096 + 512 tokens
    "flux2": 2.4,  # 1024²
    "zimage": 2.2,  # 1024²
    "qwenimage": 3.5,  # 1328², 6889 image tokens
}
# The picture side each ACTIVATION_GB figure is for (activations scale with the pixels).
ACTIVATION_SIZE = {"sd1": 512, "sd2": 768, "qwenimage": 1328}
# Parameters of the published model each ACTIVATION_GB figure is for (all components).
REFERENCE_PARAMS = {
    "sd1": 1_066 * 10**6,
    "sd2": 1_300 * 10**6,
    "sdxl": 3_469 * 10**6,
    "sd3": 8_134 * 10**6,  # SD 3.5 Medium
    "flux1": 16_870 * 10**6,
    "flux2": 7_982 * 10**6,  # FLUX.2 [klein] 4B
    "zimage": 10_256 * 10**6,
    "qwenimage": 28_849 * 10**6,
}
VRAM_RESERVE = int(0.6 * GB)
RAM_RESERVE = int(1.0 * GB)
# Bytes per parameter of the denoiser in each storage (bitsandbytes: the codes plus their scales;
# GGUF Q4_K_S as published for FLUX.1 dev: 6.81 GB for 11.9 B parameters).
STORAGE_BYTES = {"fp8": 1.02, "bnb-8bit": 1.05, "bnb-4bit": 0.55}
GGUF_Q4_BYTES = 0.57

_BLOCK = re.compile(r"^(.*?\.\d+)\.")  # a text encoder's layer: "encoder.layers.7."
# A denoiser's block as diffusers' block-level group offload sees it: a top-level ModuleList's
# item ("transformer_blocks.3.", "down_blocks.1."); anything else (mid_block, embedders) is
# onloaded with the model itself.
_TOP_BLOCK = re.compile(r"^([^.]+\.\d+)\.")


@dataclass(frozen=True)
class Part:
    """One component's size, from its file headers (or a published figure, in the tests)."""

    name: str  # "transformer" | "unet" | "text_encoder" | "text_encoder_2" | ... | "vae"
    params: int  # parameter count
    largest_block: int = 0  # parameters of its largest numbered block ("...blocks.N.")
    largest_tensor: int = 0  # parameters of its largest single tensor
    in_blocks: int = 0  # parameters inside numbered blocks (the rest is onloaded with each)
    stored_bytes: int | None = None  # GGUF: bytes as stored (quantized)

    @property
    def is_denoiser(self) -> bool:
        return self.name in ("transformer", "unet")


@dataclass(frozen=True)
class Plan(DevicePlan):
    """A :class:`DevicePlan` (``memory_mode`` keeps its old values: "none" = all on the device)
    with the planner's choice, its expected peaks and a sentence."""

    placement: str = "full"  # full | model-offload | group-offload | sequential-offload | cpu
    storage: str = "native"  # native | fp8 | gguf | bnb-8bit | bnb-4bit
    peak_vram: int = 0  # bytes; 0 on the CPU
    peak_ram: int = 0
    free_vram: int | None = None
    free_ram: int | None = None
    forced: bool = False
    size: int = 0  # the picture side the activations were estimated for
    sentence: str = ""

    @property
    def mode(self) -> str:
        """The name shown: "full", "group-offload", "fp8-layerwise + model-offload", "cpu", ..."""
        if self.placement == "cpu":
            return "cpu"
        storage = {"native": "", "fp8": "fp8-layerwise"}.get(self.storage, self.storage)
        if not storage:
            return self.placement
        return storage if self.placement == "full" else f"{storage} + {self.placement}"

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "placement": self.placement,
            "storage": self.storage,
            "forced": self.forced,
            "device": self.device,
            "peak_vram_bytes": self.peak_vram,
            "peak_ram_bytes": self.peak_ram,
            "free_vram_bytes": self.free_vram,
            "free_ram_bytes": self.free_ram,
            "size": self.size,
            "sentence": self.sentence,
        }


# -- sizes from headers ---------------------------------------------------------------------
def _numel(shape: Any) -> int:
    count = 1
    for n in shape:
        count *= int(n)
    return count


def _part(name: str, tensors: list[tuple[str, int]], stored: int | None = None) -> Part:
    blocks: dict[str, int] = {}
    largest = 0
    denoiser = name in ("transformer", "unet")
    for key, count in tensors:
        largest = max(largest, count)
        if denoiser:
            match = _TOP_BLOCK.match(key.removeprefix("model.diffusion_model."))
        else:
            match = _BLOCK.match(key)
        if match:
            blocks[match.group(1)] = blocks.get(match.group(1), 0) + count
    return Part(
        name,
        params=sum(count for _key, count in tensors),
        largest_block=max(blocks.values(), default=0),
        largest_tensor=largest,
        in_blocks=sum(blocks.values()),
        stored_bytes=stored,
    )


def _safetensors_tensors(files: list[Path]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for file in files:
        header = read_safetensors_header(file)
        for key, entry in header.items():
            if key != "__metadata__" and isinstance(entry, dict):
                out.append((key, _numel(entry.get("shape", ()))))
    return out


def _gguf_part(name: str, path: Path) -> Part:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise ModelError(
            "model_corrupt", "The GGUF file is not readable; download it again."
        ) from exc
    tensors = [(str(t.name), int(t.n_elements)) for t in reader.tensors]
    return _part(name, tensors, stored=sum(int(t.n_bytes) for t in reader.tensors))


def _file_or_folder_part(name: str, path: Path) -> Part:
    if path.suffix.lower() == ".gguf":
        return _gguf_part(name, path)
    files = [path] if path.is_file() else sorted(path.rglob("*.safetensors"))
    return _part(name, _safetensors_tensors(files))


_EMBEDDER = re.compile(r"^conditioner\.embedders\.(\d+)\.")
_COMFY_ENCODER = re.compile(r"^text_encoders\.([A-Za-z0-9_]+)\.")


def _single_file_component(key: str) -> str:
    """Which component a tensor of an original-format (LDM / ComfyUI all-in-one) file is of;
    a bare transformer file's keys (no known prefix) are the denoiser's."""
    if key.startswith(("first_stage_model.", "vae.")):
        return "vae"
    if key.startswith("cond_stage_model."):
        return "text_encoder"
    match = _EMBEDDER.match(key) or _COMFY_ENCODER.match(key)
    if match:
        index = match.group(1)
        return "text_encoder" if index == "0" else f"text_encoder_{index}"
    return "denoiser"


def model_sizes(info: ModelInfo) -> tuple[Part, ...]:
    """Each component's parameter count (and blocks) from the file headers; no weight is read."""
    denoiser = "transformer" if info.is_flow else "unet"
    found: dict[str, Part] = {}
    if info.format == "diffusers" and info.path.is_dir():
        for sub in sorted(p for p in info.path.iterdir() if p.is_dir()):
            files = sorted(sub.glob("*.safetensors"))
            if files:
                found[sub.name] = _part(sub.name, _safetensors_tensors(files))
    else:
        main = info.part("transformer") or info.path
        if main.suffix.lower() == ".gguf":
            found[denoiser] = _gguf_part(denoiser, main)
        else:
            groups: dict[str, list[tuple[str, int]]] = {}
            for key, count in _safetensors_tensors([main] if main.is_file() else []):
                name = _single_file_component(key)
                groups.setdefault(denoiser if name == "denoiser" else name, []).append((key, count))
            for name, tensors in groups.items():
                found[name] = _part(name, tensors)
    for name, path in info.parts:
        if name == "transformer" and denoiser in found:
            continue
        if Path(path) == info.path and info.format != "diffusers":
            continue  # the all-in-one file itself: its components are counted above
        found[name] = _file_or_folder_part(name, Path(path))
    return tuple(found.values())


# -- free memory ----------------------------------------------------------------------------
def free_ram_bytes() -> int | None:
    """RAM the system can give without swapping (Linux MemAvailable); None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# Whether core/pipelines.py loads the transformer with transformer_load_kwargs(plan). Until it
# does, a bitsandbytes plan would load bf16 weights into a plan sized for 4/8-bit ones, so
# bitsandbytes is never chosen (and a forced bnb mode says it is not available in this version).
BNB_LOADER = False


@functools.cache
def bitsandbytes_imports() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # absent, or built for another CUDA: either way not usable
        log.debug("bitsandbytes not usable: %s", type(exc).__name__)
        return False
    return True


def installed_backends() -> frozenset[str]:
    """The quantized loaders this machine can use: "gguf" and/or "bnb" (bitsandbytes imports
    and the loader applies it)."""
    found = set()
    if importlib.util.find_spec("gguf") is not None:
        found.add("gguf")
    if BNB_LOADER and bitsandbytes_imports():
        found.add("bnb")
    return frozenset(found)


# -- the arithmetic -------------------------------------------------------------------------
def _weights(part: Part, storage: str, run_bytes: int) -> int:
    if part.stored_bytes is not None:
        return part.stored_bytes
    if part.is_denoiser and storage in STORAGE_BYTES:
        return int(part.params * STORAGE_BYTES[storage])
    return part.params * run_bytes


def _load_bytes(part: Part, storage: str, run_bytes: int) -> int:
    """Bytes in RAM while loading: fp8 is cast after the load, bitsandbytes quantizes as it loads."""
    if part.is_denoiser and storage == "fp8":
        return part.params * run_bytes
    return _weights(part, storage, run_bytes)


def _peaks(
    parts: tuple[Part, ...], placement: str, storage: str, run_bytes: int, activations: int
) -> tuple[int, int]:
    """(GPU bytes, RAM bytes) at the peak for one placement and storage."""
    weights = [_weights(p, storage, run_bytes) for p in parts]
    load = sum(_load_bytes(p, storage, run_bytes) for p in parts)
    if placement == "cpu":
        return 0, sum(weights) + activations
    if placement == "full":
        vram = sum(weights)
    elif placement == "model-offload":
        vram = max(weights, default=0)
    elif placement == "group-offload":
        vram = 0
        for part, size in zip(parts, weights, strict=True):
            per = size / max(part.params, 1)  # bytes per parameter in its storage
            if part.is_denoiser:  # block level: its non-block weights + this block + the next
                block = part.largest_block or part.params // 20
                leftover = part.params - part.in_blocks if part.in_blocks else part.params // 20
                vram = max(vram, int((leftover + 2 * block) * per))
            elif part.name != "vae":  # leaf level: this layer + the next
                vram = max(vram, int(2 * (part.largest_tensor or part.params // 50) * per))
        vram += sum(w for p, w in zip(parts, weights, strict=True) if p.name == "vae")
    else:  # sequential-offload
        vram = max(
            (int((p.largest_tensor or p.params // 50) * w / max(p.params, 1)) for p, w in
             zip(parts, weights, strict=True)),
            default=0,
        )
    return vram + activations, load


def _gb(n: int | float) -> str:
    return f"{n / GB:.1f}" if n >= GB / 10 else f"{n / GB:.2f}"  # a tiny model: 0.04


def _activations(arch: str, run_bytes: int, size: int, params: int) -> int:
    """ACTIVATION_GB at the family's reference size, scaled by the pixels, by the run dtype and,
    for a model smaller than the family's published one (a tiny test model), by its size."""
    ref = ACTIVATION_SIZE.get(arch, 1024)
    smaller = min(1.0, params / REFERENCE_PARAMS.get(arch, params or 1))
    return int(
        ACTIVATION_GB.get(arch, 2.6) * GB * (size / ref) ** 2 * max(run_bytes, 2) / 2 * smaller
    )


def _not_installed(mode: str) -> InputError:
    return InputError(
        "bnb_not_installed",
        "The memory mode {mode} needs the bitsandbytes package: install it with "
        "`pip install bitsandbytes` (NVIDIA GPUs only), or choose another memory mode.",
        mode=mode,
    )


def _not_for_gguf(mode: str) -> InputError:
    return InputError(
        "memory_mode_not_for_gguf",
        "The memory mode {mode} does not apply to a GGUF model (it is quantized already); "
        "choose auto, full, model-offload or sequential-offload.",
        mode=mode,
    )


def _ram_refusal(
    info: ModelInfo, parts: tuple[Part, ...], need: int, free: int, mode: str, run_bytes: int
) -> InputError:
    denoiser = next((p for p in parts if p.is_denoiser), None)
    if info.is_flow and denoiser is not None and denoiser.stored_bytes is None:
        q4 = int(denoiser.params * GGUF_Q4_BYTES)
        after = need - denoiser.params * run_bytes + q4
        if after + RAM_RESERVE <= free:
            return InputError(
                "model_cannot_fit",
                "This model needs about {need} GB of RAM for {mode}; this machine has {free} GB "
                "free: use the GGUF Q4 transformer (about {gguf} GB) or add memory.",
                need=_gb(need + RAM_RESERVE),
                free=_gb(free),
                mode=mode,
                gguf=_gb(q4),
            )
    return InputError(
        "model_cannot_fit_ram",
        "This model needs about {need} GB of RAM for {mode}; this machine has {free} GB free: "
        "close other programs, add memory or choose a smaller model.",
        need=_gb(need + RAM_RESERVE),
        free=_gb(free),
        mode=mode,
    )


def _vram_refusal(mode: str, need: int, free: int) -> InputError:
    return InputError(
        "model_cannot_fit_gpu",
        "The memory mode {mode} needs about {need} GB on the GPU and it has {free} GB free: "
        "choose memory mode auto, a smaller model, or the CPU.",
        mode=mode,
        need=_gb(need + VRAM_RESERVE),
        free=_gb(free),
    )


def _sentence(plan: Plan) -> str:
    forced = " (forced)" if plan.forced else ""
    if plan.placement == "cpu":
        return (
            f"{plan.mode}{forced}: about {_gb(plan.peak_ram)} GB of RAM at "
            f"{plan.size}x{plan.size}."
        )
    free = f"; {_gb(plan.free_vram)} GB free" if plan.free_vram is not None else ""
    return (
        f"{plan.mode}{forced}: about {_gb(plan.peak_vram)} GB on the GPU and "
        f"{_gb(plan.peak_ram)} GB of RAM at {plan.size}x{plan.size}{free}."
    )


def _candidates(info: ModelInfo, gguf: bool, installed: frozenset[str]) -> list[tuple[str, str]]:
    if gguf:
        return [(p, "gguf") for p in ("full", "model-offload", "sequential-offload")]
    order = [("full", "native"), ("model-offload", "native")]
    if info.is_flow:
        order += [("full", "fp8"), ("model-offload", "fp8")]
    order.append(("group-offload", "native"))
    if info.is_flow and "bnb" in installed:
        order += [
            ("full", "bnb-8bit"),
            ("model-offload", "bnb-8bit"),
            ("full", "bnb-4bit"),
            ("model-offload", "bnb-4bit"),
        ]
    order.append(("sequential-offload", "native"))
    return order


def _forced_candidates(
    info: ModelInfo, force: str, gguf: bool, installed: frozenset[str]
) -> list[tuple[str, str]]:
    if force in ("fp8-layerwise", "bnb-8bit", "bnb-4bit"):
        if gguf:
            raise _not_for_gguf(force)
        if force.startswith("bnb") and "bnb" not in installed:
            if bitsandbytes_imports():
                raise InputError(
                    "memory_mode_unavailable",
                    "The memory mode {mode} is not available in this version of Obscura; choose "
                    "auto or fp8-layerwise, or use a GGUF transformer.",
                    mode=force,
                )
            raise _not_installed(force)
        if force.startswith("bnb") and not info.is_flow:
            raise InputError(
                "memory_mode_not_for_unet",
                "The memory mode {mode} applies to the transformer families only, not to a Stable "
                "Diffusion UNet model; "
                "choose auto, full, model-offload or sequential-offload.",
                mode=force,
            )
        storage = "fp8" if force == "fp8-layerwise" else force
        return [(p, storage) for p in PLACEMENTS]
    placement = "full" if force == "none" else force
    if gguf and placement == "group-offload":
        raise _not_for_gguf(force)
    return [(placement, "gguf" if gguf else "native")]


def plan_model(
    info: ModelInfo,
    device: str,
    dtype: torch.dtype,
    *,
    free_vram: int | None,
    free_ram: int | None,
    force: str | None = None,
    installed: frozenset[str] | None = None,
    parts: tuple[Part, ...] | None = None,
) -> Plan:
    """The plan for ``info`` on ``device`` given the free memory (bytes; None = unknown).

    ``parts`` defaults to :func:`model_sizes` (headers only). Raises :class:`InputError` when no
    mode fits, or a forced mode cannot fit or is not installed, with one sentence.
    """
    force = force or "auto"
    if force not in FORCED_MODES:
        raise InputError(
            "bad_memory_mode",
            "Memory mode must be one of: {modes}.",
            modes=", ".join(FORCED_MODES),
        )
    installed = installed_backends() if installed is None else installed
    parts = model_sizes(info) if parts is None else parts
    run_bytes = torch.finfo(dtype).bits // 8
    size = info.spec.default_size
    activations = _activations(info.arch, run_bytes, size, sum(p.params for p in parts))
    gguf = any(p.is_denoiser and p.stored_bytes is not None for p in parts)
    base: dict[str, Any] = {
        "device": device,
        "dtype": dtype,
        "free_vram": free_vram,
        "free_ram": free_ram,
        "forced": force != "auto",
        "size": size,
    }

    def ram_ok(need: int) -> bool:
        return free_ram is None or need + RAM_RESERVE <= free_ram

    if not device.startswith("cuda"):  # CPU, or Apple MPS (its memory is the RAM)
        _vram, ram = _peaks(parts, "cpu", "gguf" if gguf else "native", run_bytes, activations)
        if not ram_ok(ram):
            assert free_ram is not None
            raise _ram_refusal(info, parts, ram, free_ram, "the CPU", run_bytes)
        plan = Plan(
            memory_mode="none",
            attention_slicing=False,
            vae_tiling=False,
            placement="cpu",
            storage="gguf" if gguf else "native",
            peak_ram=ram,
            **{**base, "forced": False},  # a memory mode is for a GPU: nothing to force here
        )
        note = f" (memory mode {force} applies to a GPU only)" if force != "auto" else ""
        return replace(plan, sentence=_sentence(plan)[:-1] + note + ".")

    if force == "auto" and info.arch in SD_ARCHS and not gguf:
        choices = [_legacy_choice(parts, free_vram, run_bytes)]
    elif force == "auto":
        choices = _candidates(info, gguf, installed)
    else:
        choices = _forced_candidates(info, force, gguf, installed)
    budget = None if free_vram is None else free_vram - VRAM_RESERVE
    tried: list[tuple[str, str, int, int]] = []
    for placement, storage in choices:
        tight = _tight(info, parts, free_vram, run_bytes, placement)
        acts = activations // 2 if tight else activations  # VAE tiling: about half
        vram, ram = _peaks(parts, placement, storage, run_bytes, acts)
        tried.append((placement, storage, vram, ram))
        legacy = force == "auto" and info.arch in SD_ARCHS
        if (legacy or budget is None or vram <= budget) and ram_ok(ram):
            break
    else:
        # Nothing fits: say what would. RAM first (no GPU mode can help), then the GPU.
        # The mode named is the least RAM one, model offload among equals (every native mode
        # needs all the weights in RAM: it is the usual way to run a model bigger than the GPU).
        placement, storage, vram, ram = min(
            tried, key=lambda t: (t[3], t[0] != "model-offload", t[2])
        )
        if not ram_ok(ram):
            assert free_ram is not None
            label = Plan(device, dtype, "none", False, False, placement=placement, storage=storage)
            raise _ram_refusal(info, parts, ram, free_ram, label.mode, run_bytes)
        placement, storage, vram, ram = min(tried, key=lambda t: t[2])
        label = Plan(device, dtype, "none", False, False, placement=placement, storage=storage)
        assert free_vram is not None
        raise _vram_refusal(label.mode, vram, free_vram)
    plan = Plan(
        memory_mode="none" if placement == "full" else placement,
        attention_slicing=tight and info.arch in SD_ARCHS,
        vae_tiling=tight,
        placement=placement,
        storage=storage,
        peak_vram=vram,
        peak_ram=ram,
        **base,
    )
    return replace(plan, sentence=_sentence(plan))


def _legacy_choice(parts: tuple[Part, ...], free: int | None, run_bytes: int) -> tuple[str, str]:
    """SD 1.x/2.x/SDXL: the rule core/devices.py always had, on the whole model's bytes."""
    total = sum(p.params for p in parts) * run_bytes
    if free is None or free > total * 2:
        return "full", "native"
    if free > total * 0.6:
        return "model-offload", "native"
    return "sequential-offload", "native"


def _tight(
    info: ModelInfo, parts: tuple[Part, ...], free: int | None, run_bytes: int, placement: str
) -> bool:
    if info.arch in SD_ARCHS:
        total = sum(p.params for p in parts) * run_bytes
        return free is not None and free < total * 3
    return placement != "full"


def plan_here(
    info: ModelInfo,
    device: str,
    dtype: torch.dtype,
    memory_mode: str = "auto",
    *,
    held_vram: int = 0,
    held_ram: int = 0,
) -> Plan:
    """The plan for ``info`` with the free memory this machine has now (plus ``held_*``: what
    a loaded model gives back when it is switched for this one)."""
    from core.devices import free_memory_bytes
    from core.pipelines import require_present

    require_present(info)
    free_vram, free_ram = free_memory_bytes(device), free_ram_bytes()
    return plan_model(
        info,
        device,
        dtype,
        free_vram=None if free_vram is None else free_vram + held_vram,
        free_ram=None if free_ram is None else free_ram + held_ram,
        force=memory_mode,
    )


# -- enacting a plan ------------------------------------------------------------------------
def _hooked(module: Any, hook: str) -> bool:
    """Whether ``module`` or any of its layers already has the diffusers hook ``hook``."""
    for sub in module.modules():
        registry = getattr(sub, "_diffusers_hook", None)
        if registry is not None and registry.get_hook(hook) is not None:
            return True
    return False


def transformer_load_kwargs(plan: DevicePlan) -> dict[str, Any]:
    """Extra ``from_pretrained``/``from_single_file`` keywords for the denoiser of ``plan``:
    a bitsandbytes or GGUF quantization config (computing in the plan's dtype), else nothing."""
    storage = getattr(plan, "storage", "native")
    if storage in ("bnb-4bit", "bnb-8bit"):
        from diffusers import BitsAndBytesConfig

        if storage == "bnb-4bit":
            config = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=plan.dtype
            )
        else:
            config = BitsAndBytesConfig(load_in_8bit=True)
        return {"quantization_config": config}
    if storage == "gguf":
        from diffusers import GGUFQuantizationConfig

        return {"quantization_config": GGUFQuantizationConfig(compute_dtype=plan.dtype)}
    return {}


def apply(pipe: Any, plan: DevicePlan) -> None:
    """Place a loaded pipeline as ``plan`` says. Calling it again (a pipeline derived with
    ``from_pipe``, a new VAE) leaves what is already placed as it is."""
    placement = getattr(plan, "placement", None) or {
        "none": "full",
    }.get(plan.memory_mode, plan.memory_mode)
    device = torch.device(plan.device)
    denoiser = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
    if (
        getattr(plan, "storage", "native") == "fp8"
        and denoiser is not None
        and not _hooked(denoiser, "layerwise_casting")
    ):
        denoiser.enable_layerwise_casting(
            storage_dtype=torch.float8_e4m3fn, compute_dtype=plan.dtype
        )
    if placement in ("full", "cpu"):
        pipe.to(plan.device)
    elif placement == "model-offload":
        pipe.enable_model_cpu_offload(device=plan.device)
    elif placement == "sequential-offload":
        pipe.enable_sequential_cpu_offload(device=plan.device)
    elif placement == "group-offload":
        _group_offload(pipe, device)
    else:
        raise ValueError(f"unknown placement {placement}")
    if plan.attention_slicing:
        pipe.enable_attention_slicing()
    if plan.vae_tiling and getattr(pipe, "vae", None) is not None:
        pipe.vae.enable_tiling()


def _group_offload(pipe: Any, device: torch.device) -> None:
    """The denoiser block by block, text encoders leaf by leaf, the VAE on the device; CUDA
    streams (prefetch from pinned RAM) where the device has them."""
    from diffusers.hooks import apply_group_offloading

    stream = device.type == "cuda"
    for name, component in pipe.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        if name == "vae":
            component.to(device)
        elif _hooked(component, "group_offloading"):
            continue
        elif name in ("transformer", "unet") and hasattr(component, "enable_group_offload"):
            enable: Any = component.enable_group_offload
            enable(
                onload_device=device,
                offload_device=torch.device("cpu"),
                offload_type="block_level",
                num_blocks_per_group=1,
                use_stream=stream,
            )
        else:
            apply_group_offloading(
                module=component,
                onload_device=device,
                offload_device=torch.device("cpu"),
                offload_type="leaf_level",
                use_stream=stream,
            )


# -- one line for people ----------------------------------------------------------------------
_WORDS = {
    "en": {
        "full": "all on the GPU",
        "model-offload": "model offload",
        "group-offload": "group offload",
        "sequential-offload": "sequential offload",
        "fp8": "fp8 weights",
        "gguf": "GGUF weights",
        "bnb-8bit": "8-bit weights",
        "bnb-4bit": "4-bit weights",
        "gpu": "{mode}, about {gb} GB on the GPU",
        "cpu": "cpu, about {gb} GB of RAM",
        "forced": " (forced)",
        "join": " + ",
    },
    "zh": {
        "full": "全部在 GPU 上",
        "model-offload": "模型卸载",
        "group-offload": "分组卸载",
        "sequential-offload": "逐层卸载",
        "fp8": "fp8 权重",
        "gguf": "GGUF 权重",
        "bnb-8bit": "8 位权重",
        "bnb-4bit": "4 位权重",
        "gpu": "{mode}，GPU 上约 {gb} GB",
        "cpu": "CPU，约 {gb} GB 内存",
        "forced": "（手动指定）",
        "join": " + ",
    },
}


def describe(plan: DevicePlan, lang: str = "en") -> str:
    """One short line: "group offload, about 6.1 GB on the GPU", "cpu, about 2.0 GB of RAM"."""
    words = _WORDS.get(lang, _WORDS["en"])
    if not isinstance(plan, Plan):  # an old-style DevicePlan: the mode only, no estimate
        mode = "full" if plan.memory_mode == "none" else plan.memory_mode
        return words.get(mode, mode)
    forced = words["forced"] if plan.forced else ""
    if plan.placement == "cpu":
        return words["cpu"].format(gb=_gb(plan.peak_ram)) + forced
    names = [] if plan.storage == "native" else [words[plan.storage]]
    if plan.placement != "full" or not names:
        names.append(words[plan.placement])
    mode = words["join"].join(names)
    return words["gpu"].format(mode=mode, gb=_gb(plan.peak_vram)) + forced
