"""ControlNet, IP-Adapter and CLIP vision files: what a safetensors header says, and loading them.

The model library (core/library.py) calls :func:`control_kind` on every header and, for these
three kinds, :func:`controlnet_detail`, :func:`ipadapter_detail` or :func:`clip_vision_detail`.
Only tensor names and shapes are read; weights are read by the loaders at the bottom, from local
files only (no download, no hub look-up: the configs they need ship in ``core/configs``).

Formats recognised (tensor names as the real tools write them):

ControlNet
    * AUTOMATIC1111 / original ``cldm`` layout: ``control_model.input_hint_block.0.weight`` (or
      the same without ``control_model.``, as the fp16 safetensors re-packs name it), ``zero_convs``,
      ``middle_block_out``. SDXL ones also have ``label_emb.0.0.weight``.
    * diffusers layout: ``controlnet_cond_embedding.conv_in.weight``, ``controlnet_down_blocks.*``,
      ``controlnet_mid_block.*``; SDXL ones also ``add_embedding.linear_1.weight``.
    * ControlNet-Union (xinsir, diffusers ``ControlNetUnionModel``): the diffusers layout plus
      ``task_embedding``, ``transformer_layes.*`` (sic), ``spatial_ch_projs.*`` and
      ``control_add_embedding.*``; ``task_embedding``'s rows are its number of control types.
    * Refused with a reason: Stability's Control-LoRA (a ``lora_controlnet`` tensor) and kohya's
      ControlNet-LLLite (``lllite_unet_*``): diffusers cannot load either.
    The architecture is the cross-attention width (``attn2.to_k`` in-features: 768 SD 1.x, 1024
    SD 2.x, 2048 SDXL), else SDXL when the file has SDXL's size/crop embedding, else unknown.

IP-Adapter (h94/IP-Adapter and ComfyUI_IPAdapter_plus ``.safetensors``: ``image_proj.*`` +
``ip_adapter.<n>.to_k_ip.weight`` / ``to_v_ip.weight``, one pair per cross-attention layer)
    * "plain": ``image_proj.proj.weight`` (4 tokens from the CLIP image embedding: the projection
      width, 1024 for ViT-H, 1280 for ViT-bigG).
    * "plus": a Resampler (``image_proj.latents``, ``proj_in``, ``proj_out``, ``layers.*``) on the
      CLIP encoder's penultimate hidden states (1280 wide for ViT-H, 1664 for ViT-bigG).
    * "plus-face": the same shapes as "plus"; only the file name tells them apart (h94 names it
      ``ip-adapter-plus-face_*``), so a Plus file whose name holds "face" is "plus-face".
    * "full-face": ``image_proj.proj.0..3`` (an MLP on all 257 hidden-state tokens).
    * FaceID (``image_proj.proj.0.weight`` 512 wide = an InsightFace embedding, a
      ``perceiver_resampler``, ``to_k_lora`` layers, or "faceid" in the name) is REFUSED: it needs
      InsightFace's face models, which are licensed for non-commercial research only.
    Architecture from the ``to_k_ip`` in-features (768 / 2048), else the number of layers (16 for
    SD 1.x, 70 for SDXL), else unknown.

CLIP vision (transformers ``CLIPVisionModelWithProjection``: ``vision_model.*`` and
``visual_projection.weight``), a single file (ComfyUI's ``clip_vision/``) or a folder with
``config.json`` + ``model.safetensors`` (h94's ``image_encoder/``). Width 1280 = ViT-H,
1664 = ViT-bigG, 1024 = ViT-L. open_clip's own layout (``visual.transformer.*``) is refused with
a reason. A file without ``visual_projection`` cannot feed a plain IP-Adapter and is refused.

For the engine (core/control.py): :func:`load_controlnet`, :func:`load_clip_vision`,
:func:`ipadapter_state` and :func:`image_encoder_fits`.
"""

from __future__ import annotations

import math
import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ModelError
from core.registry import tensor_keys, tensor_shape

if TYPE_CHECKING:
    import torch

    from core.library import LibraryItem

CONTROL_KINDS = ("controlnet", "ipadapter", "clip_vision")

# The UNet cross-attention context width -> architecture (as core/library.py's _CONTEXT_ARCH).
_CONTEXT_ARCH = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
# Cross-attention layers an IP-Adapter has per architecture (one to_k_ip per attn2).
_LAYERS_ARCH = {16: "sd1", 70: "sdxl"}
# CLIP vision widths: hidden size -> name, projection width -> name.
CLIP_HIDDEN = {1024: "ViT-L", 1280: "ViT-H", 1664: "ViT-bigG"}
CLIP_PROJECTION = {768: "ViT-L", 1024: "ViT-H", 1280: "ViT-bigG"}
_CLIP_CONFIGS = {1280: "clip-vision-vit-h", 1664: "clip-vision-vit-bigg"}
INSIGHTFACE_WIDTH = 512  # the face embedding InsightFace's recognition models give

_LDM_HINT = "input_hint_block.0.weight"
_DIFFUSERS_HINT = "controlnet_cond_embedding.conv_in.weight"
_UNION_KEYS = ("task_embedding", "spatial_ch_projs.weight", "control_add_embedding.linear_1.weight")
_CLIP_PATCH = "vision_model.embeddings.patch_embedding.weight"

FACEID_REASON = (
    "This is an IP-Adapter FaceID file: it needs InsightFace's face models, which are licensed "
    "for non-commercial research only, so Obscura does not use it; use IP-Adapter Plus-Face "
    "instead (see docs/models.md)."
)
CONTROL_LORA_REASON = (
    "This is a Control-LoRA (a ControlNet stored as a LoRA), which diffusers cannot load; use a "
    "full ControlNet .safetensors file instead (see docs/models.md)."
)
LLLITE_REASON = (
    "This is a ControlNet-LLLite file, which diffusers cannot load; use a full ControlNet "
    ".safetensors file instead (see docs/models.md)."
)
OPEN_CLIP_REASON = (
    "This CLIP vision file is in open_clip's own layout; use the transformers version (a "
    "model.safetensors with its config.json, as h94/IP-Adapter's image_encoder/ folder has)."
)
NO_PROJECTION_REASON = (
    "This CLIP vision file has no visual_projection, which IP-Adapter needs; use the full "
    "CLIPVisionModelWithProjection file (see docs/models.md)."
)


_keys = tensor_keys  # (core/registry.py reads headers for every kind)
_shape = tensor_shape


# -- which kind -----------------------------------------------------------------------------
def control_kind(keys: list[str]) -> str | None:
    """"controlnet", "ipadapter", "clip_vision" or None, from a file's tensor names."""
    present = set(keys)
    if _DIFFUSERS_HINT in present or _LDM_HINT in present or f"control_model.{_LDM_HINT}" in present:
        return "controlnet"
    if "lora_controlnet" in present or any(k.startswith("lllite_unet_") for k in keys):
        return "controlnet"
    if any(k.startswith("image_proj.") for k in keys) and any(
        k.startswith("ip_adapter.") for k in keys
    ):
        return "ipadapter"
    if _CLIP_PATCH in present or "visual.conv1.weight" in present:
        # a whole CLIP (text and vision): still a vision encoder; open_clip's layout: refused later
        return "clip_vision"
    return None


# -- ControlNet -----------------------------------------------------------------------------
def controlnet_detail(header: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(architecture, detail) of a ControlNet header; ModelError for one that cannot be used."""
    keys = _keys(header)
    present = set(keys)
    if "lora_controlnet" in present:
        raise ModelError("controlnet_unsupported", CONTROL_LORA_REASON)
    if any(k.startswith("lllite_unet_") for k in keys):
        raise ModelError("controlnet_unsupported", LLLITE_REASON)
    layout = "diffusers" if _DIFFUSERS_HINT in present else "ldm"
    prefix = "control_model." if f"control_model.{_LDM_HINT}" in present else ""
    arch: str | None = None
    for key in keys:
        if key.endswith("attn2.to_k.weight"):
            shape = _shape(header, key)
            if len(shape) == 2 and shape[1] in _CONTEXT_ARCH:
                arch = _CONTEXT_ARCH[shape[1]]
                break
    sdxl_marker = "add_embedding.linear_1.weight" if layout == "diffusers" else f"{prefix}label_emb.0.0.weight"
    if arch is None and sdxl_marker in present:
        arch = "sdxl"
    union = any(k in present for k in _UNION_KEYS)
    if union and layout != "diffusers":
        raise ModelError(
            "controlnet_unsupported",
            "This ControlNet-Union file is not in the diffusers layout; use the "
            "diffusion_pytorch_model.safetensors published with its config.json.",
        )
    if union:
        arch = arch or "sdxl"  # ControlNet-Union exists for SDXL only
    detail: dict[str, Any] = {"format": layout, "union": union}
    if union:
        rows = _shape(header, "task_embedding")
        detail["control_types"] = rows[0] if rows else None
    if layout == "diffusers" and sdxl_marker in present:
        # diffusers' own test for its three SDXL ControlNet sizes (single_file_utils.py)
        if "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k.weight" in present:
            detail["size"] = "large"
        elif "down_blocks.1.attentions.0.norm.weight" in present:
            detail["size"] = "mid"
        else:
            detail["size"] = "small"
    return arch, detail


# -- IP-Adapter -----------------------------------------------------------------------------
def _ip_layers(keys: list[str]) -> list[str]:
    return sorted(
        (k for k in keys if re.fullmatch(r"ip_adapter\.\d+\.to_k_ip\.weight", k)),
        key=lambda k: int(k.split(".")[1]),
    )


def ipadapter_detail(header: dict[str, Any], name: str = "") -> tuple[str | None, dict[str, Any]]:
    """(architecture, detail) of an IP-Adapter header; FaceID and unknown shapes: ModelError."""
    keys = _keys(header)
    present = set(keys)
    first_mlp = _shape(header, "image_proj.proj.0.weight")
    if (
        "faceid" in name.lower().replace("-", "").replace("_", "")
        or any(k.startswith("image_proj.perceiver_resampler.") for k in keys)
        or any(".to_k_lora." in k or ".to_q_lora." in k for k in keys)
        or (len(first_mlp) == 2 and first_mlp[1] == INSIGHTFACE_WIDTH)
    ):
        raise ModelError("ipadapter_faceid_refused", FACEID_REASON)
    if "image_proj.proj.weight" in present:
        shape = _shape(header, "image_proj.proj.weight")
        variant, encoder_input = "plain", "image_embeds"
        width = shape[1] if len(shape) == 2 else None
        tokens = 4
        encoder = CLIP_PROJECTION.get(width or 0)
    elif "image_proj.proj.3.weight" in present:
        variant, encoder_input = "full-face", "hidden_states"
        width = first_mlp[1] if len(first_mlp) == 2 else None
        tokens = 257
        encoder = CLIP_HIDDEN.get(width or 0)
    elif "image_proj.latents" in present and "image_proj.proj_in.weight" in present:
        variant = "plus-face" if "face" in name.lower() else "plus"
        encoder_input = "hidden_states"
        shape = _shape(header, "image_proj.proj_in.weight")
        width = shape[1] if len(shape) == 2 else None
        latents = _shape(header, "image_proj.latents")
        tokens = latents[1] if len(latents) == 3 else 16
        encoder = CLIP_HIDDEN.get(width or 0)
    else:
        raise ModelError(
            "ipadapter_unsupported",
            "This IP-Adapter file's image projection matches no known IP-Adapter kind (plain, "
            "Plus, Plus-Face); see docs/models.md.",
        )
    layers = _ip_layers(keys)
    if not layers:
        raise ModelError(
            "ipadapter_unsupported",
            "This IP-Adapter file has no cross-attention layers (ip_adapter.*.to_k_ip); "
            "download it again.",
        )
    context = _shape(header, layers[0])
    cross = context[1] if len(context) == 2 else None
    arch = _CONTEXT_ARCH.get(cross or 0) or _LAYERS_ARCH.get(len(layers))
    detail: dict[str, Any] = {
        "variant": variant,
        "image_encoder": encoder,  # "ViT-H" | "ViT-bigG" | "ViT-L" | None (a width not known)
        "encoder_input": encoder_input,  # what it reads: the projected embedding or hidden states
        "encoder_width": width,  # that input's width (plain: projection; plus: hidden size)
        "tokens": tokens,
        "layers": len(layers),
        "cross_attention": cross,
    }
    if variant == "plus-face":
        detail["note"] = "Plus and Plus-Face files have one shape; the file name says Plus-Face."
    return arch, detail


# -- CLIP vision ----------------------------------------------------------------------------
def clip_vision_detail(header: dict[str, Any]) -> dict[str, Any]:
    """The detail of a CLIP vision encoder header; open_clip's layout: ModelError."""
    keys = _keys(header)
    present = set(keys)
    if _CLIP_PATCH not in present:
        raise ModelError("clip_vision_unsupported", OPEN_CLIP_REASON)
    if "visual_projection.weight" not in present:
        raise ModelError("clip_vision_unsupported", NO_PROJECTION_REASON)
    patch = _shape(header, _CLIP_PATCH)
    hidden = patch[0] if len(patch) == 4 else None
    patch_size = patch[2] if len(patch) == 4 else None
    positions = _shape(header, "vision_model.embeddings.position_embedding.weight")
    image_size = None
    if positions and patch_size:
        side = math.isqrt(max(positions[0] - 1, 0))
        image_size = side * patch_size if side * side == positions[0] - 1 else None
    layers = len(
        {k.split(".")[3] for k in keys if k.startswith("vision_model.encoder.layers.")}
    )
    projection = _shape(header, "visual_projection.weight")
    return {
        "encoder": CLIP_HIDDEN.get(hidden or 0),
        "width": hidden,
        "layers": layers,
        "projection": projection[0] if projection else None,
        "image_size": image_size,
    }


def image_encoder_fits(ipadapter: LibraryItem, clip_vision: LibraryItem) -> bool:
    """True when ``clip_vision`` gives what ``ipadapter`` reads (its width), from the details."""
    want = ipadapter.detail.get("encoder_width")
    if ipadapter.detail.get("encoder_input") == "image_embeds":
        have = clip_vision.detail.get("projection")
    else:
        have = clip_vision.detail.get("width")
    return want is not None and want == have


# -- loading (for core/control.py) ----------------------------------------------------------
def _configs(name: str) -> Path:
    return Path(str(resources.files("core.configs").joinpath(name)))


def _own_config(item: LibraryItem) -> Path | None:
    """The diffusers/transformers folder an item's file sits in, when it has its config.json."""
    folder = item.path.parent
    stem = item.path.stem.partition(".")[0]  # "diffusion_pytorch_model.fp16": diffusers' variant
    if stem in {"diffusion_pytorch_model", "model"} and (folder / "config.json").is_file():
        return folder
    return None


def _variant(item: LibraryItem) -> str | None:
    return item.path.stem.partition(".")[2] or None


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _fill(model: Any, state: dict[str, torch.Tensor], what: str, assign: bool = False) -> None:
    try:
        missing, unexpected = model.load_state_dict(state, strict=False, assign=assign)
    except RuntimeError:  # a tensor of another shape
        missing, unexpected = ["?"], []
    missing = [k for k in missing if not k.endswith("position_ids")]
    if assign and any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        missing.append("?")
    if missing or unexpected:
        raise ModelError(
            "control_model_mismatch",
            f"This {what} file's tensors do not fit its architecture's shape; it may be damaged "
            "or of an unknown kind (see docs/models.md).",
        )


def load_controlnet(item: LibraryItem, dtype: torch.dtype) -> Any:
    """A ``ControlNetModel`` (or ``ControlNetUnionModel``) from a library item, local files only.

    A file in a diffusers folder (``config.json`` beside it) uses that config; a single file the
    shipped config of its architecture (SD 1.x, SDXL "large", SDXL Union with the file's number of
    control types); an A1111-layout file is converted by diffusers' ``from_single_file``."""
    from diffusers import ControlNetModel, ControlNetUnionModel

    detail = item.detail
    union = bool(detail.get("union"))
    cls = ControlNetUnionModel if union else ControlNetModel
    own = _own_config(item)
    if own is not None and not union:
        return cls.from_pretrained(
            str(own), torch_dtype=dtype, variant=_variant(item), local_files_only=True
        )
    shipped = item.arch in ("sd1", "sdxl") and detail.get("size", "large") == "large"
    if own is None and not shipped:
        raise ModelError(
            "controlnet_needs_config",
            "Obscura has no built-in configuration for this ControlNet; keep it in its diffusers "
            "folder with its config.json (see docs/models.md).",
        )
    if detail.get("format") == "ldm":
        folder = _configs(f"controlnet-{item.arch}")
        return ControlNetModel.from_single_file(
            str(item.path), config=str(folder), torch_dtype=dtype, local_files_only=True
        )
    config_folder = own or _configs("controlnet-union-sdxl" if union else f"controlnet-{item.arch}")
    config = dict(cls.load_config(str(config_folder)))
    if union and detail.get("control_types"):
        config["num_control_type"] = int(detail["control_types"])
    import torch

    with torch.device("meta"):  # no second copy of the weights: the file's tensors are used
        model = cls.from_config(config)
    _fill(model, _load_weights(item.path), "ControlNet", assign=True)
    return model.to(dtype=dtype)


def load_clip_vision(item: LibraryItem, dtype: torch.dtype) -> Any:
    """A transformers ``CLIPVisionModelWithProjection`` from a library item, local files only."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    own = _own_config(item)
    if own is not None:
        return CLIPVisionModelWithProjection.from_pretrained(
            str(own), dtype=dtype, variant=_variant(item), local_files_only=True
        )
    name = _CLIP_CONFIGS.get(item.detail.get("width") or 0)
    if name is None:
        raise ModelError(
            "clip_vision_needs_config",
            "Obscura has no built-in configuration for this CLIP vision encoder (not ViT-H or "
            "ViT-bigG); keep it in a folder with its config.json (see docs/models.md).",
        )
    config = CLIPVisionConfig.from_pretrained(str(_configs(name)), local_files_only=True)
    if item.detail.get("layers") != config.num_hidden_layers:
        raise ModelError(
            "control_model_mismatch",
            "This CLIP vision file's tensors do not fit its architecture's shape; it may be "
            "damaged or of an unknown kind (see docs/models.md).",
        )
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):  # weights from the file, not a random copy
        model = CLIPVisionModelWithProjection(config)
    state = {
        k: v
        for k, v in _load_weights(item.path).items()
        if k.startswith(("vision_model.", "visual_projection."))
    }
    _fill(model, state, "CLIP vision", assign=True)
    model.to(dtype=dtype)  # type: ignore[call-arg]  # (transformers wraps .to)
    model.eval()
    return model


def ipadapter_state(item: LibraryItem) -> dict[str, dict[str, torch.Tensor]]:
    """The IP-Adapter's tensors as diffusers' ``load_ip_adapter`` takes a state dict:
    ``{"image_proj": {...}, "ip_adapter": {...}}`` (prefixes taken off)."""
    state: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in _load_weights(item.path).items():
        part, _, rest = key.partition(".")
        if part in state and rest:
            state[part][rest] = value
    return state
