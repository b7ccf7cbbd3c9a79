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
from core.families import family_of, is_flow
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
    transformers.utils.logging.disable_progress_bar()


def load_base_pipeline(info: ModelInfo, dtype: torch.dtype) -> Any:
    import diffusers

    require_present(info)
    _quiet_libraries()
    if is_flow(info):
        return load_flow_pipeline(info, dtype)

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
    if is_flow(info):
        return derive_flow_pipeline(base, info, mode)
    if mode == "txt2img" or info.variant == "inpaint":
        return base
    import diffusers

    cls = getattr(diffusers, _DERIVED_CLASSES[(_family(info), mode)])
    pipe = cls.from_pipe(base)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def place(pipe: Any, plan: DevicePlan) -> None:
    """Move a pipeline onto its device according to the memory plan (core/planner.py)."""
    from core.planner import apply

    apply(pipe, plan)


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


# -- the transformer families (core/families.py) ---------------------------------------------
PART_MISMATCH = (
    "A text encoder or VAE file does not fit this model (other layers or sizes); use the one "
    "its family needs (see docs/models.md)."
)
# The weight-holding components of a flow pipeline, as the diffusers model_index names them.
_WEIGHTS = ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae")


def flow_config_folder(info: ModelInfo) -> Path:
    """The shipped diffusers-layout config folder of a family variant (core/configs)."""
    return Path(str(resources.files("core.configs").joinpath(info.config_name)))  # FLUX.2 [klein] 9B: "flux2-klein-9b"


def _component_class(pipeline_cls: Any, component: str, config: Path) -> Any:
    """The class of one component, as the shipped folder's ``model_index.json`` names it
    (diffusers or transformers only), else as the pipeline's ``__init__`` annotates it."""
    import importlib
    import inspect
    import json

    try:
        entry = json.loads((config / "model_index.json").read_text("utf-8")).get(component)
    except (OSError, ValueError):
        entry = None
    if isinstance(entry, list) and len(entry) == 2 and entry[0] in ("diffusers", "transformers"):
        found = getattr(importlib.import_module(entry[0]), str(entry[1]), None)
        if found is not None:
            return found
    return inspect.signature(pipeline_cls.__init__).parameters[component].annotation


def _base_class(info: ModelInfo) -> Any:
    import diffusers

    return getattr(diffusers, family_of(info).base_pipeline)


def load_flow_pipeline(info: ModelInfo, dtype: torch.dtype) -> Any:
    """A flow family's base pipeline, from local files only.

    - ``diffusers``: the folder as it is (``from_pretrained``, safetensors only).
    - ``single-file`` / ``parts`` / ``gguf``: the transformer from its file with the shipped
      config folder (``from_single_file``; a GGUF file dequantizes on the fly with
      ``GGUFQuantizationConfig``), the text encoders and VAE from ``info.parts`` (an all-in-one
      single file holds them too), and the tokenizers and scheduler from the shipped folder.
    """
    cls = _base_class(info)
    try:
        if info.format == "diffusers":
            pipe = cls.from_pretrained(
                str(info.path), dtype=dtype, local_files_only=True, use_safetensors=True
            )
        else:
            pipe = _load_flow_parts(cls, info, dtype)
    except ModelError:
        raise
    except ImportError as exc:  # Qwen-Image-Edit's processor: transformers wants torchvision
        log.warning("model load failed: %s", type(exc).__name__)
        raise ModelError(
            "model_needs_package",
            "This model needs a Python package that is not installed (Qwen-Image-Edit: "
            "torchvision); install it or choose another model.",
        ) from exc
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
        log.warning("model load failed: %s", type(exc).__name__)
        raise ModelError("model_load_failed", LOAD_FAILED) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _load_flow_parts(cls: Any, info: ModelInfo, dtype: torch.dtype) -> Any:
    config = flow_config_folder(info)
    if not (config / "model_index.json").is_file():
        raise ModelError(
            "model_config_missing",
            "This model family has no shipped config in this version of Obscura; use its "
            "diffusers folder instead (see docs/models.md).",
        )
    parts = dict(info.parts)
    components: dict[str, Any] = {}
    transformer_cls = _component_class(cls, "transformer", config)
    extra: dict[str, Any] = {}
    if info.format == "gguf":
        from diffusers import GGUFQuantizationConfig

        extra["quantization_config"] = GGUFQuantizationConfig(compute_dtype=dtype)
    source = parts.get("transformer", str(info.path))
    checkpoint: Any = source
    if info.format != "gguf":  # a diffusers-layout file loads as it is, an original one converts
        checkpoint = _strip(_read_tensors(Path(source)), _TRANSFORMER_PREFIXES)
    components["transformer"] = transformer_cls.from_single_file(
        checkpoint, config=str(config), subfolder="transformer", local_files_only=True,
        torch_dtype=dtype, **extra,
    )
    del checkpoint
    for name in _WEIGHTS[1:]:
        if not (config / name).is_dir():
            continue
        path = parts.get(name) or (str(info.path) if info.format == "single-file" else None)
        if path is None:
            raise ModelError(
                "model_part_missing",
                "A part of this model (text encoder or VAE) is missing; put it in the models "
                "folder (see docs/models.md).",
            )
        component_cls = _component_class(cls, name, config)
        if name == "vae":
            components[name] = _load_vae_file(component_cls, Path(path), config, dtype)
        else:
            comfy = _COMFY_ENCODERS.get((info.arch, name), ())
            components[name] = _load_text_encoder(
                component_cls, Path(path), config / name, dtype, comfy
            )
    # Tokenizers the config folder does not hold: from local files (core/family_tokenizers.py:
    # shipped, a ComfyUI install's, or ``tokenizer_missing`` naming the file to add).
    from core.family_tokenizers import FAMILY_TOKENIZERS, load_tokenizer

    for component, kind in FAMILY_TOKENIZERS.get(info.arch, {}).items():
        if not (config / component).is_dir():
            components[component] = load_tokenizer(kind, _models_folder(info.path))
    return cls.from_pretrained(
        str(config), local_files_only=True, dtype=dtype, **components
    )


def _models_folder(path: Path) -> Path:
    """The models folder a part file is in (``<ComfyUI>/models/diffusion_models/x``)."""
    for parent in path.parents:
        if parent.name == "models":
            return parent
    return path.parent.parent


# Prefixes an all-in-one checkpoint puts before each part's names (ComfyUI's saved checkpoints,
# SD 3.5 *_incl_clips), tried in this order; a part file of its own has none.
_TRANSFORMER_PREFIXES = ("model.diffusion_model.",)
_VAE_PREFIXES = ("vae.", "first_stage_model.")
_ENCODER_PREFIXES = (
    "text_encoders.{name}.transformer.", "text_encoders.{name}.", "cond_stage_model.transformer.",
)
# The names ComfyUI gives each text encoder in an all-in-one checkpoint, per (arch, component).
_COMFY_ENCODERS: dict[tuple[str, str], tuple[str, ...]] = {
    ("sd3", "text_encoder"): ("clip_l",),
    ("sd3", "text_encoder_2"): ("clip_g",),
    ("sd3", "text_encoder_3"): ("t5xxl",),
    ("flux1", "text_encoder"): ("clip_l",),
    ("flux1", "text_encoder_2"): ("t5xxl",),
    ("flux2", "text_encoder"): ("qwen3_4b", "qwen3_8b", "mistral3_24b"),
    ("zimage", "text_encoder"): ("qwen3_4b",),
    ("qwenimage", "text_encoder"): ("qwen25_7b",),
}


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _strip(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The tensors under the first of ``prefixes`` that has any; all of them when none has."""
    for prefix in prefixes:
        picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if picked:
            return picked
    return state


def _load_text_encoder(
    cls: Any, path: Path, config_dir: Path, dtype: torch.dtype, comfy: tuple[str, ...] = ()
) -> Any:
    """A transformers text encoder from one ``.safetensors`` file and its shipped config
    (transformers' own loading, from the tensors); a file that leaves any weight of the
    encoder unfilled is refused rather than run with random weights."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(config_dir), local_files_only=True)
    with torch.device("meta"):
        wanted = set(cls(config).state_dict())
    state = _read_tensors(path)
    if not wanted & set(state):
        tried = [p.format(name=n) for n in comfy for p in _ENCODER_PREFIXES]
        for prefix in [*tried, "model.", ""]:
            picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if wanted & set(picked):
                state = picked
                break
    state = {k: v for k, v in state.items() if k in wanted}
    model, loading = cls.from_pretrained(
        None, config=config, state_dict=state, dtype=dtype, output_loading_info=True
    )
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    if set(loading.get("missing_keys", ())) - tied:
        raise ModelError("model_part_mismatch", PART_MISMATCH)
    return model.eval()


def _load_vae_file(cls: Any, path: Path, config: Path, dtype: torch.dtype) -> Any:
    state = _strip(_read_tensors(path), _VAE_PREFIXES)
    vae_config = cls.load_config(str(config), subfolder="vae", local_files_only=True)
    with torch.device("meta"):
        wanted = set(cls.from_config(vae_config).state_dict())
    if not wanted <= set(state) and hasattr(cls, "from_single_file"):
        try:  # an original-layout (LDM) VAE: diffusers converts it
            return cls.from_single_file(
                state, config=str(config), subfolder="vae", local_files_only=True,
                torch_dtype=dtype,
            )
        except ValueError:
            pass  # a class diffusers' single-file loader does not convert: refused below
    if not wanted <= set(state):
        raise ModelError("model_part_mismatch", PART_MISMATCH)
    vae = cls.from_config(vae_config)
    vae.load_state_dict({k: state[k] for k in wanted}, strict=True)
    return vae.to(dtype).eval()


def derive_flow_pipeline(base: Any, info: ModelInfo, mode: str) -> Any:
    """The flow family's pipeline for ``mode``, sharing the base pipeline's weights."""
    import diffusers

    name = family_of(info).pipeline(mode)
    if name is None or type(base).__name__ == name:
        return base
    cls = getattr(diffusers, name)
    pipe = cls.from_pipe(base)
    pipe.set_progress_bar_config(disable=True)
    return pipe
