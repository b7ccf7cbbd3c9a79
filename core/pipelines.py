"""Loading a model into diffusers pipelines, from local files only.

One base pipeline per model; the image-to-image and inpainting pipelines are derived from it with
``from_pipe``, which shares the same weights (no second copy in memory). Single-file checkpoints
are built with the config folders shipped in ``core/configs`` and the locally built CLIP
tokenizer, so diffusers never needs the Hub.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from core.devices import DevicePlan
from core.errors import ModelError
from core.registry import ModelInfo

log = logging.getLogger("obscura.core")

_BASE_CLASSES = {
    ("sd", "base"): "StableDiffusionPipeline",
    ("sd", "inpaint"): "StableDiffusionInpaintPipeline",
    ("sdxl", "base"): "StableDiffusionXLPipeline",
    ("sdxl", "inpaint"): "StableDiffusionXLInpaintPipeline",
}
_DERIVED_CLASSES = {
    ("sd", "img2img"): "StableDiffusionImg2ImgPipeline",
    ("sd", "inpaint"): "StableDiffusionInpaintPipeline",
    ("sdxl", "img2img"): "StableDiffusionXLImg2ImgPipeline",
    ("sdxl", "inpaint"): "StableDiffusionXLInpaintPipeline",
}
LOAD_FAILED = (
    "The model could not be loaded: the file is damaged or is not the architecture it claims; "
    "download it again or pick another model."
)


MISSING = (
    "The model's files were removed from the models folder while the server was running; put "
    "them back or choose another model (nothing else was lost)."
)


def require_present(info: ModelInfo) -> None:
    """A model deleted while serving is one sentence (``model_missing``), not a traceback."""
    if not info.path.exists():
        raise ModelError("model_missing", MISSING)


def _family(info: ModelInfo) -> str:
    return "sdxl" if info.arch == "sdxl" else "sd"


def _config_folder(info: ModelInfo) -> Path:
    variant = "inpaint" if info.variant == "inpaint" else "base"
    return Path(str(resources.files("core.configs").joinpath(f"{info.arch}-{variant}")))


def estimate_bytes(info: ModelInfo, dtype: torch.dtype) -> int:
    """Memory of the weights once loaded in ``dtype``: parameter count from the headers only."""
    from math import prod

    from core.registry import read_safetensors_header

    require_present(info)
    files = [info.path] if info.path.is_file() else list(info.path.rglob("*.safetensors"))
    count = 0
    for file in files:
        header = read_safetensors_header(file)
        count += sum(prod(entry["shape"]) for key, entry in header.items() if key != "__metadata__")
    return count * (torch.finfo(dtype).bits // 8)


def _quiet_libraries() -> None:
    """diffusers/transformers chatter (progress bars, dtype notes) is not for the owner's log."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def load_base_pipeline(info: ModelInfo, dtype: torch.dtype) -> Any:
    import diffusers

    require_present(info)
    _quiet_libraries()

    family = _family(info)
    variant = "inpaint" if info.variant == "inpaint" else "base"
    cls = getattr(diffusers, _BASE_CLASSES[(family, variant)])
    try:
        if info.format == "diffusers":
            extra: dict[str, Any] = {}
            if family == "sd":
                extra = {"safety_checker": None, "requires_safety_checker": False}
            pipe = cls.from_pretrained(
                str(info.path), dtype=dtype, local_files_only=True, use_safetensors=True, **extra
            )
        else:
            from core.tokenizer import clip_tokenizer

            extra = {"tokenizer": clip_tokenizer("!" if info.arch == "sd2" else "<|endoftext|>")}
            if family == "sdxl":
                extra["tokenizer_2"] = clip_tokenizer("!")
            else:
                extra.update(safety_checker=None, requires_safety_checker=False)
            pipe = cls.from_single_file(
                str(info.path),
                config=str(_config_folder(info)),
                local_files_only=True,
                dtype=dtype,
                **extra,
            )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("model load failed: %s", type(exc).__name__)
        raise ModelError("model_load_failed", LOAD_FAILED) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe


def derive_pipeline(base: Any, info: ModelInfo, mode: str) -> Any:
    """The pipeline for ``mode`` sharing the base pipeline's weights."""
    if mode == "txt2img" or info.variant == "inpaint":
        return base
    import diffusers

    cls = getattr(diffusers, _DERIVED_CLASSES[(_family(info), mode)])
    pipe = cls.from_pipe(base)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def place(pipe: Any, plan: DevicePlan) -> None:
    """Move a pipeline onto its device according to the memory plan."""
    if plan.memory_mode == "model-offload":
        pipe.enable_model_cpu_offload(device=plan.device)
    elif plan.memory_mode == "sequential-offload":
        pipe.enable_sequential_cpu_offload(device=plan.device)
    else:
        pipe.to(plan.device)
    if plan.attention_slicing:
        pipe.enable_attention_slicing()
    if plan.vae_tiling and hasattr(pipe, "vae"):
        pipe.vae.enable_tiling()


def load_vae(info: ModelInfo, state: dict[str, torch.Tensor], dtype: torch.dtype) -> Any:
    """A standalone VAE (the tensors of one ``.safetensors`` file) built for ``info``'s model.

    ``AutoencoderKL.from_single_file`` converts an original-format (LDM) VAE and takes a
    diffusers-format one as it is; the config is the model's own (its ``vae/`` folder, or the
    shipped config folder for a single-file checkpoint), so the latent scale is the model's and
    nothing is fetched. A VAE whose tensors leave any of the model's VAE layers unfilled, or
    fill them with other shapes, is refused (``vae_mismatch``).
    """
    from diffusers import AutoencoderKL

    _quiet_libraries()
    config = str(info.path) if info.format == "diffusers" else str(_config_folder(info))
    try:
        vae = AutoencoderKL.from_single_file(
            state, config=config, subfolder="vae", local_files_only=True, dtype=dtype
        )
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        log.info("vae refused: %s", type(exc).__name__)
        raise ModelError("vae_mismatch", "This VAE does not fit the model.") from exc
    if any(p.device.type == "meta" for p in vae.parameters()):
        raise ModelError("vae_mismatch", "This VAE does not fit the model.")
    vae.eval()
    return vae
