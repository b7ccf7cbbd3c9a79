"""The model library: every checkpoint, LoRA, embedding, VAE and upscaler in the models folder.

``--models-dir`` may be Obscura's own folder, an AUTOMATIC1111/Forge ``models/`` folder or a
ComfyUI ``models/`` folder. The library only ever *reads* it: nothing is created, renamed or
written there (it may be mounted read-only).

Where things are looked for (folder names matched without regard to case):

==========  =====================================  ==========================  ==============
kind        AUTOMATIC1111 / Forge (``models/``)      ComfyUI (``models/``)        Obscura (flat)
==========  =====================================  ==========================  ==============
checkpoint  ``Stable-diffusion/``                    ``checkpoints/``,            the folder
                                                     ``diffusers/``               itself
lora        ``Lora/``, ``LyCORIS/``                  ``loras/``                   the folder
embedding   ``../embeddings/`` (beside ``models/``)  ``embeddings/``              the folder
vae         ``VAE/``                                 ``vae/``                     the folder
upscaler    ``ESRGAN/``, ``RealESRGAN/``,            ``upscale_models/``          the folder
            ``SwinIR/``, ``DAT/``, ``BSRGAN/``
controlnet  ``ControlNet/``                          ``controlnet/``              ``controlnet/``
ipadapter   ``ControlNet/`` (A1111 keeps them        ``ipadapter/``               ``ipadapter/``
            there), ``ipadapter/``
clip_vision ``clip_vision/``                         ``clip_vision/``             ``clip_vision/``
==========  =====================================  ==========================  ==============

ControlNet, IP-Adapter and CLIP vision files are told from their headers by core/control_files.py
(so an IP-Adapter in A1111's ``ControlNet/`` folder is found as one).

Sub-folders are searched too (A1111 users sort LoRAs into folders), at most :data:`MAX_DEPTH`
levels deep and :data:`MAX_ENTRIES` entries in all, so a huge or looping tree cannot stall a scan.

The kind of a file is read from its safetensors **header** (tensor names and shapes; the weights are
never read here): the folder it sits in is only a hint for headers that fit no known pattern.
Pickle files (``.ckpt``, ``.pt``, ``.pth``, ``.bin``, ...) are refused unopened, whatever folder
they are in: unpickling runs whatever code the file carries. ``obscura models convert`` turns
one into ``.safetensors`` in a separate, network-less process. A damaged or nonsensical file is
refused with its reason and the scan goes on; only regular files are opened (a named pipe could
block). A rescan reads only files that are new or changed (same path, size and mtime: known).

Privacy: LoRA and embedding names are written in prompts, so they are private. Nothing here logs a
name or a path, and :meth:`ModelLibrary.find` never repeats the name it was asked for.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.control_files import (
    clip_vision_detail,
    control_kind,
    controlnet_detail,
    ipadapter_detail,
)
from core.errors import InputError, ModelError
from core.family_detect import (
    EMBEDDED_TEXT,
    EMBEDDED_VAE,
    Part,
    Transformer,
    derive_transformer_config,
    detect_text_encoder,
    detect_transformer,
    is_scaled_fp8,
    missing_sentence,
    pair,
    read_gguf_header,
    text_encoder_detail,
    transformer_prefix,
    vae_latent,
    wan_vae_prefix,
)
from core.family_detect import SCALED_FP8_REASON as _SCALED_FP8_REASON
from core.registry import (
    PICKLE_SUFFIXES,
    detect_checkpoint,
    detect_diffusers_folder,
    read_safetensors_header,
    tensor_keys,
    tensor_shape,
)

log = logging.getLogger("obscura.core")

KINDS = (
    "checkpoint",
    "lora",
    "embedding",
    "vae",
    "upscaler",
    "controlnet",
    "ipadapter",
    "clip_vision",
    "diffusion_model",
    "text_encoder",
)
KIND_TITLES = {
    "checkpoint": "checkpoint",
    "lora": "LoRA",
    "embedding": "embedding",
    "vae": "VAE",
    "upscaler": "upscaler",
    "controlnet": "ControlNet",
    "ipadapter": "IP-Adapter",
    "clip_vision": "CLIP vision encoder",
    "diffusion_model": "diffusion model",
    "text_encoder": "text encoder",
}

# Folder name (lower case) -> the kind of file it holds: A1111/Forge and ComfyUI names.
KIND_FOLDERS: dict[str, str] = {
    "stable-diffusion": "checkpoint",  # A1111 / Forge
    "checkpoints": "checkpoint",  # ComfyUI
    "diffusers": "checkpoint",  # ComfyUI (diffusers-format folders)
    "lora": "lora",  # A1111 / Forge
    "lycoris": "lora",  # A1111 (older LyCORIS extension)
    "loras": "lora",  # ComfyUI
    "embeddings": "embedding",  # ComfyUI (A1111 keeps it beside models/)
    "vae": "vae",  # A1111 "VAE", ComfyUI "vae"
    "esrgan": "upscaler",  # A1111
    "realesrgan": "upscaler",  # A1111
    "swinir": "upscaler",  # A1111
    "dat": "upscaler",  # A1111
    "bsrgan": "upscaler",  # A1111 (older versions)
    "upscale_models": "upscaler",  # ComfyUI
    "controlnet": "controlnet",  # A1111 / Forge "ControlNet" (also their IP-Adapters), ComfyUI
    "ipadapter": "ipadapter",  # ComfyUI (ComfyUI_IPAdapter_plus), Forge, Obscura
    "clip_vision": "clip_vision",  # ComfyUI, Obscura
    "diffusion_models": "diffusion_model",  # ComfyUI (transformer-only files, GGUF)
    "unet": "diffusion_model",  # ComfyUI (older name), Forge
    "text_encoders": "text_encoder",  # ComfyUI
    "clip": "text_encoder",  # ComfyUI (older name)
    "text_encoder": "text_encoder",  # Forge
}
GGUF_SUFFIXES = {".gguf"}
SAFETENSORS_SUFFIXES = {".safetensors", ".sft"}  # ".sft": ComfyUI's short spelling

MAX_DEPTH = 6  # sub-folder levels searched below a kind folder
MAX_ENTRIES = 20_000  # files and folders looked at in one scan, all folders together

PICKLE_REASON = (
    "Pickle files (.ckpt/.pt/.pth/.bin) can run code when opened, so Obscura refuses them "
    "unopened; convert it with `obscura models convert FILE` (see docs/models.md) or download "
    "the .safetensors version."
)

# Text-encoder hidden widths: CLIP ViT-L (SD 1.x, SDXL's first encoder), OpenCLIP ViT-H (SD 2.x).
_WIDTH_ARCH = {768: "sd1", 1024: "sd2"}
# The UNet cross-attention context width (the in-features of attn2's to_k): one per architecture.
_CONTEXT_ARCH = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
_SCALE_IN_NAME = re.compile(r"(?:^|[^a-z0-9])(?:x([1-8])|([1-8])x)(?:[^a-z0-9]|$)", re.I)


@dataclass(frozen=True)
class LibraryItem:
    kind: str  # "checkpoint" | "lora" | "embedding" | "vae" | "upscaler" | "controlnet" | ... (KINDS)
    name: str  # file stem, as A1111 names it (<lora:NAME:...>)
    path: Path
    arch: str | None  # "sd1" | "sd2" | "sdxl" | None when unknown/any
    detail: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class RefusedItem:
    kind: str
    name: str
    reason: str
    path: Path | None = None  # for the owner's own listing (`obscura models`); never logged


def _not_found(kind: str) -> InputError:
    # One literal code per kind (the catalogues in webui/messages_*.toml translate them).
    if kind == "lora":
        return InputError(
            "unknown_lora", "A LoRA named in the prompt is not in the models folder's LoRA list."
        )
    if kind == "embedding":
        return InputError(
            "unknown_embedding", "That embedding is not in the models folder's embedding list."
        )
    if kind == "vae":
        return InputError("unknown_vae", "That VAE is not in the models folder's VAE list.")
    if kind == "upscaler":
        return InputError(
            "unknown_upscaler", "That upscaler is not in the models folder's upscaler list."
        )
    if kind == "controlnet":
        return InputError(
            "unknown_controlnet", "That ControlNet is not in the models folder's ControlNet list."
        )
    if kind == "ipadapter":
        return InputError(
            "unknown_ipadapter", "That IP-Adapter is not in the models folder's IP-Adapter list."
        )
    if kind == "clip_vision":
        return InputError(
            "unknown_clip_vision",
            "That CLIP vision encoder is not in the models folder's clip_vision list.",
        )
    return InputError("unknown_checkpoint", "That checkpoint is not in the models folder.")


def _refused(kind: str, reason: str) -> InputError:
    if kind == "lora":
        return InputError("lora_refused", "A LoRA in the prompt cannot be used: {reason}", reason=reason)
    if kind == "embedding":
        return InputError(
            "embedding_refused", "An embedding in the prompt cannot be used: {reason}", reason=reason
        )
    if kind == "vae":
        return InputError("vae_refused", "That VAE cannot be used: {reason}", reason=reason)
    if kind == "upscaler":
        return InputError("upscaler_refused", "That upscaler cannot be used: {reason}", reason=reason)
    if kind == "controlnet":
        return InputError("controlnet_refused", "That ControlNet cannot be used: {reason}", reason=reason)
    if kind == "ipadapter":
        return InputError("ipadapter_refused", "That IP-Adapter cannot be used: {reason}", reason=reason)
    if kind == "clip_vision":
        return InputError(
            "clip_vision_refused", "That CLIP vision encoder cannot be used: {reason}", reason=reason
        )
    return InputError("model_refused", "That model cannot be used: {reason}", reason=reason)


# -- what a header says -------------------------------------------------------------------
_tensor_keys = tensor_keys  # (core/registry.py reads headers for every kind)
_shape = tensor_shape


def _metadata(header: dict[str, Any]) -> dict[str, str]:
    meta = header.get("__metadata__")
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


_LORA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "lycoris_")
_LORA_MARKERS = (
    ".lora_down.",
    ".lora_up.",
    ".lora_A.",
    ".lora_B.",
    ".lora.down.",
    ".lora.up.",
    "_lora.down.",
    "_lora.up.",
    ".hada_w1_a",
    ".lokr_w1",
)
# LyCORIS network types other than LoHa/LoKr that diffusers cannot load either.
_OTHER_LYCORIS = ((".oft_blocks", "OFT"), (".oft_diag", "OFT"), (".on_input", "(IA)^3"),
                  (".a1.weight", "GLoRA"), (".b1.weight", "GLoRA"))
_VAE_PREFIXES = ("", "first_stage_model.", "vae.")


def _joined(keys: list[str]) -> str:
    """All tensor names in one string, each after a newline: one substring test searches them
    all (a LoRA has ~800 names; testing each one in Python was most of a scan's time)."""
    return "".join("\n" + k for k in keys)


def _is_lora(keys: list[str]) -> bool:
    names = _joined(keys)
    return any("\n" + p in names for p in _LORA_PREFIXES) or any(m in names for m in _LORA_MARKERS)


def _vae_prefix(keys: list[str]) -> str | None:
    present = set(keys)
    for prefix in _VAE_PREFIXES:
        if f"{prefix}encoder.conv_in.weight" in present and any(
            k.startswith(f"{prefix}decoder.") for k in keys
        ):
            return prefix
    return None


def upscaler_family(keys: list[str]) -> str | None:
    """The upscaler architecture a state dict's tensor names belong to (spandrel's names)."""
    present = set(keys)

    def has(*names: str) -> bool:
        return all(n in present for n in names)

    def starts(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    # The same tests as spandrel's own detectors (a subset of their keys), most specific first.
    swin_block = "layers.0.residual_group.blocks.0."
    if has("model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight"):
        return "ESRGAN"  # the original ESRGAN layout (most community 4x_*.pth models)
    if has("conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight"):
        return "ESRGAN"  # BasicSR's RRDBNet (RealESRGAN_x4plus and friends)
    if has("conv_first.weight", "RRDB_trunk.0.RDB1.conv1.weight"):
        return "ESRGAN"  # BSRGAN / RealSR
    if has("conv_first.weight", f"{swin_block}conv_block.cab.0.weight"):
        return "HAT"
    if has("conv_first.weight", "layers.0.residual_group.td"):
        return "ATD"
    if has(f"{swin_block}norm1.weight", f"{swin_block}attn.relative_position_index"):
        if has("patch_embed.proj.weight"):
            return "Swin2SR"
        if has("conv_first.weight") or has("conv_first.1.weight"):
            return "SwinIR"
    if has("conv_first.weight", "before_RG.1.weight", "layers.0.blocks.0.ffn.fc1.weight"):
        return "DAT"
    if has("block_1.c1_r.sk.weight", "conv_cat.weight"):
        return "SPAN"
    if has("residual_layer.0.residual_layer.0.layer.0.fn.0.weight", "input.weight"):
        return "OmniSR"
    if has("unet1.conv1.conv.0.weight", "unet1.conv1_down.weight"):
        return "RealCUGAN"
    if has("feats.0.weight", "feats.1.refine.weight"):
        return "PLKSR"
    if has("body.0.weight", "body.1.weight"):
        return "RealESRGAN Compact"  # SRVGGNetCompact (realesr-general-x4v3, animevideo)
    return None


def spandrel_family(header: dict[str, Any]) -> str | None:
    """spandrel's own detection (every architecture core.upscale loads), run on shape-only
    ("meta") tensors built from the header: nothing is read from the file's data. Only for
    files in an upscaler folder that :func:`upscaler_family` does not know."""
    try:
        import torch

        from core.upscale import load_spandrel

        registry = load_spandrel()
    except (ImportError, ModelError):
        return None
    try:
        state = {
            key: torch.empty(_shape(header, key), device="meta") for key in _tensor_keys(header)
        }
    except (RuntimeError, ValueError, TypeError):  # a shape no tensor can have
        return None
    for support in registry.architectures("detection"):
        try:
            found = support.detect(state)
        except Exception:  # a detector that trips on an odd state dict: not this one
            found = False
        if found:
            return str(support.architecture.name)
    return None


def _upscaler_scale(family: str, header: dict[str, Any], keys: list[str], name: str) -> int | None:
    if family == "ESRGAN" and "conv_first.weight" in keys:
        ups = sum(1 for k in keys if re.fullmatch(r"conv_up\d\.weight", k))
        if ups:
            return 2**ups
    if family == "RealESRGAN Compact":
        bodies = sorted(
            (int(m.group(1)), k)
            for k in keys
            if (m := re.fullmatch(r"body\.(\d+)\.weight", k)) and len(_shape(header, k)) == 4
        )
        if bodies:
            out = _shape(header, bodies[-1][1])[0]
            for scale in (1, 2, 3, 4, 8):
                if out == 3 * scale * scale:
                    return scale
    match = _SCALE_IN_NAME.search(name)
    if match:
        return int(match.group(1) or match.group(2))
    return None


def _single_embedding_tensor(header: dict[str, Any], keys: list[str]) -> str | None:
    if len(keys) != 1:
        return None
    shape = _shape(header, keys[0])
    if 1 <= len(shape) <= 2 and shape[-1] in _WIDTH_ARCH:
        return keys[0]
    return None


def detect_kind(header: dict[str, Any], hint: str | None = None) -> str | None:
    """Which kind of file a safetensors header describes; ``hint`` (its folder's kind) only
    decides when the tensor names fit no pattern of their own."""
    keys = _tensor_keys(header)
    if any(k.startswith("model.diffusion_model.") for k in keys):
        # a transformer family (FLUX, SD 3.5, ...): its parts are paired after the scan
        return "diffusion_model" if transformer_prefix(set(keys)) is not None else "checkpoint"
    control = control_kind(keys)
    if control is not None:
        return control
    if _is_lora(keys):
        return "lora"
    if transformer_prefix(set(keys)) is not None:
        return "diffusion_model"
    if _is_text_encoder(header):
        return "text_encoder"
    if wan_vae_prefix(keys) is not None:
        return "vae"
    if "emb_params" in keys or any(k.startswith("string_to_param") for k in keys):
        return "embedding"
    if "clip_l" in keys and "clip_g" in keys:
        return "embedding"
    if _vae_prefix(keys) is not None:
        return "vae"
    if upscaler_family(keys) is not None:
        return "upscaler"
    if _single_embedding_tensor(header, keys) is not None:
        return "embedding"
    if hint == "embedding" and len(keys) == 1:
        return "embedding"
    if hint == "upscaler" and spandrel_family(header) is not None:
        return "upscaler"
    return None


def _is_text_encoder(header: dict[str, Any]) -> bool:
    try:
        return detect_text_encoder(header) is not None
    except ModelError:
        return True  # a text encoder, refused with its reason when described


# -- architecture and details per kind ------------------------------------------------------
def _lora_arch(header: dict[str, Any], keys: list[str]) -> str | None:
    for key in keys:  # the UNet's cross-attention width settles it
        low = key.lower()
        if ("attn2_to_k" in low or "attn2.to_k" in low) and (
            "lora_down.weight" in low or "lora_a.weight" in low or "lora.down.weight" in low
        ):
            shape = _shape(header, key)
            if len(shape) >= 2 and shape[1] in _CONTEXT_ARCH:
                return _CONTEXT_ARCH[shape[1]]
    if any(k.startswith(("lora_te2_", "lora_te1_", "text_encoder_2.", "te2.")) for k in keys):
        return "sdxl"
    for key in keys:  # a text-encoder-only LoRA: the encoder's width
        low = key.lower()
        if low.startswith(("lora_te_", "text_encoder.", "te.")) and (
            "lora_down.weight" in low or "lora_a.weight" in low or "lora.down.weight" in low
        ):
            shape = _shape(header, key)
            if len(shape) >= 2 and shape[1] in _WIDTH_ARCH:
                return _WIDTH_ARCH[shape[1]]
    if any(k.startswith(("lora_unet_input_blocks_", "lora_unet_output_blocks_")) for k in keys):
        return "sdxl"  # kohya names SDXL's UNet blocks the LDM way, SD 1.x's the diffusers way
    version = _metadata(header).get("ss_base_model_version", "").lower()
    if version.startswith("sdxl"):
        return "sdxl"
    if version.startswith("sd_v2"):
        return "sd2"
    if version.startswith("sd_v1"):
        return "sd1"
    return None


def _lora_detail(header: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    names = _joined(keys) + "\n"
    if ".hada_w1_a" in names:
        raise ModelError(
            "lycoris_unsupported",
            "This is a LoHa LyCORIS file; LoHa/LoKr LyCORIS files cannot be loaded by diffusers.",
        )
    if ".lokr_w1" in names:
        raise ModelError(
            "lycoris_unsupported",
            "This is a LoKr LyCORIS file; LoHa/LoKr LyCORIS files cannot be loaded by diffusers.",
        )
    other = next((kind for marker, kind in _OTHER_LYCORIS if marker in names), None)
    if other is not None:
        raise ModelError(
            "lycoris_unsupported",
            f"This is a {other} LyCORIS file; only plain LoRA and LoCon files can be loaded by "
            "diffusers.",
        )
    downs = [k for k in keys if k.endswith((".lora_down.weight", ".lora_A.weight", ".lora.down.weight"))]
    rank = None
    if downs:
        shape = _shape(header, downs[0])
        rank = shape[0] if shape else None
    conv = any(len(_shape(header, k)) == 4 for k in downs)
    if any("\n" + p in names for p in _LORA_PREFIXES):
        layout = "kohya"
    elif ".lora_A." in names:
        layout = "peft"
    else:
        layout = "diffusers"
    return {
        "layout": layout,
        "type": "LoCon" if conv else "LoRA",
        "dora": ".dora_scale\n" in names,
        "tucker": ".lora_mid." in names,
        "modules": len(downs),
        "rank": rank,
        "text_encoder": any(
            "\n" + p in names for p in ("lora_te", "text_encoder", "te.", "te1.", "te2.")
        ),
    }


def _embedding_arch_detail(
    header: dict[str, Any], keys: list[str]
) -> tuple[str | None, dict[str, Any]]:
    if "clip_l" in keys and "clip_g" in keys:
        shape = _shape(header, "clip_g")
        return "sdxl", {"vectors": shape[0] if len(shape) == 2 else 1}
    key = "emb_params" if "emb_params" in keys else None
    if key is None:
        params = [k for k in keys if k.startswith("string_to_param")]
        key = params[0] if params else (keys[0] if len(keys) == 1 else None)
    shape = _shape(header, key) if key else []
    if not shape:
        raise ModelError(
            "embedding_unreadable",
            "This embedding's vectors could not be found in the file; see docs/models.md.",
        )
    width = shape[-1]
    vectors = shape[0] if len(shape) == 2 else 1
    return _WIDTH_ARCH.get(width), {"vectors": vectors, "width": width}


def _vae_detail(header: dict[str, Any], keys: list[str], name: str = "") -> dict[str, Any]:
    """Layout and latent space of a VAE: "sd" (4 channels: SD 1.x/2.x/SDXL), "kl16" (FLUX.1's ae,
    SD 3.5's and Z-Image's), "flux2" (32 channels) or "wan16" (Qwen-Image's 3D VAE)."""
    wan = wan_vae_prefix(keys)
    prefix = wan if wan is not None else (_vae_prefix(keys) or "")
    latent = vae_latent(header, keys, prefix, name)
    if wan is not None:
        layout = "wan"
    elif any(k.startswith(f"{prefix}encoder.down_blocks.") for k in keys):
        layout = "diffusers"
    else:
        layout = "ldm"
    return {"layout": layout, "prefix": prefix, **latent}


def _vae_arch(detail: dict[str, Any]) -> str | None:
    """None for the SD VAEs (SD 1.x, 2.x and SDXL share one shape); the first family otherwise."""
    families = list(detail.get("families") or [])
    if detail.get("latent") == "sd" or not families:
        return None
    return str(families[0])


def _transformer_detail(header: dict[str, Any], name: str) -> tuple[str, dict[str, Any]]:
    """(arch, detail) of a transformer file, with the parts it holds itself (all-in-one)."""
    found = detect_transformer(header, name)
    keys = _tensor_keys(header)
    if is_scaled_fp8(keys):
        raise ModelError("model_unsupported", "This model file cannot be used: " + _SCALED_FP8_REASON)
    embedded: dict[str, dict[str, Any]] = {}
    for label, prefix in EMBEDDED_TEXT.items():
        try:
            encoder = detect_text_encoder(header, label, prefix)
        except ModelError:
            encoder = None  # an unusable embedded encoder: a separate file may stand in
        if encoder is not None:
            embedded[label] = text_encoder_detail(encoder)
    for prefix in EMBEDDED_VAE:
        if f"{prefix}encoder.conv_in.weight" in header and f"{prefix}decoder.conv_in.weight" in header:
            try:
                vae = _vae_detail(header, [k for k in keys if k.startswith(prefix)], name)
            except ModelError:
                continue
            vae["prefix"] = prefix
            embedded["vae"] = vae
            break
    detail: dict[str, Any] = {
        "variant": found.variant,
        "layout": found.layout,
        "prefix": found.prefix,
        "latent_channels": found.latent_channels,
        "needs": dict(found.needs),
        "size": found.size,
        "title": found.title,
        "embedded": embedded,
        "config": derive_transformer_config(header, found.arch, found.layout, found.prefix),
    }
    return found.arch, detail


# -- the library ----------------------------------------------------------------------------
def _where(path: Path, root: Path) -> dict[str, str]:
    """A1111's names for a file: its file name and its path below the kind folder."""
    try:
        relative = path.relative_to(root).as_posix()
    except ValueError:
        relative = path.name
    return {"file_name": path.name, "relative": relative}


def _folder_names(folder: Path) -> set[str]:
    try:
        with os.scandir(folder) as entries:
            return {entry.name.lower() for entry in entries if entry.is_dir()}
    except OSError:
        return set()


# Sub-folders every A1111/Forge (Stable-diffusion/ is made at install) or ComfyUI (checkpoints/
# ships with the code) models folder has, and an Obscura folder would not; "vae" and
# "embeddings" are too common a name to tell.
A1111_MARKERS = {"stable-diffusion", "lora", "lycoris", "esrgan", "realesrgan", "swinir"}
COMFYUI_MARKERS = {"checkpoints", "loras", "upscale_models"}


def is_external_layout(folder: Path) -> bool:
    """True when ``folder`` has A1111's or ComfyUI's own sub-folders: someone else's models
    folder, which Obscura only reads."""
    return bool(_folder_names(Path(folder)) & (A1111_MARKERS | COMFYUI_MARKERS))


class _Budget:
    def __init__(self, limit: int) -> None:
        self.left = limit
        self.exhausted = False

    def take(self) -> bool:
        if self.left <= 0:
            self.exhausted = True
            return False
        self.left -= 1
        return True


class ModelLibrary:
    """Scans one models folder (and an embeddings folder) for every kind of model file.

    ``items(kind)`` are usable, ``refused`` say why the rest are not, ``notes`` tell of limits
    reached. ``scan()`` again to see new files.
    """

    def __init__(self, models_dir: Path, embeddings_dir: Path | None = None) -> None:
        self.models_dir = Path(models_dir)
        self.embeddings_dir = Path(embeddings_dir) if embeddings_dir is not None else None
        self.refused: list[RefusedItem] = []
        self.notes: list[str] = []
        self._items: dict[str, list[LibraryItem]] = {kind: [] for kind in KINDS}
        # What each file's header said, by (path, size, mtime): a rescan reads only new files.
        self._headers: dict[tuple[str, int, int], tuple[str, Any]] = {}
        self._scan_lock = threading.Lock()
        self.scan()

    # public API --------------------------------------------------------------------------
    def items(self, kind: str) -> list[LibraryItem]:
        return list(self._items.get(kind, []))

    def find(self, kind: str, name: str) -> LibraryItem:
        for item in self._items.get(kind, []):
            if item.name == name:
                return item
        for refused in self.refused:
            if refused.kind == kind and refused.name == name:
                raise _refused(kind, refused.reason)
        raise _not_found(kind)

    def embedding_dirs(self) -> list[Path]:
        """Where embeddings are searched besides the models folder's ``embeddings/``."""
        if self.embeddings_dir is not None:
            return [self.embeddings_dir]
        # A1111 keeps embeddings/ beside models/: use it when the models folder is A1111's.
        sibling = self.models_dir.parent / "embeddings"
        if self._is_a1111_layout() and sibling.is_dir():
            return [sibling]
        return []

    def _folder_names(self) -> set[str]:
        return _folder_names(self.models_dir)

    def _is_a1111_layout(self) -> bool:
        return bool(self._folder_names() & A1111_MARKERS)

    def layout(self) -> str:
        """Whose folder names the models folder uses: "AUTOMATIC1111", "ComfyUI" or "Obscura"."""
        names = self._folder_names()
        if names & A1111_MARKERS:
            return "AUTOMATIC1111"
        if names & COMFYUI_MARKERS:
            return "ComfyUI"
        return "Obscura"

    def is_external_layout(self) -> bool:
        """True when the models folder has A1111's or ComfyUI's sub-folders (never written to)."""
        return is_external_layout(self.models_dir)

    def scan(self) -> None:
        """Search the folders again (new, changed and removed files); safe from any thread."""
        with self._scan_lock:
            self._scan()

    def _scan(self) -> None:
        self._found: dict[str, list[LibraryItem]] = {kind: [] for kind in KINDS}
        self._refused: list[RefusedItem] = []
        self._names: set[tuple[str, str]] = set()
        self._seen_dirs: set[tuple[int, int]] = set()
        self._budget = _Budget(MAX_ENTRIES)
        self._headers_now: dict[tuple[str, int, int], tuple[str, Any]] = {}
        self._too_deep = False
        notes: list[str] = []
        root = self.models_dir
        if root.is_dir():
            self._mark_seen(root)
            for entry in self._entries(root):
                if entry.is_dir():
                    kind = KIND_FOLDERS.get(entry.name.lower())
                    if kind is not None:
                        self._walk(entry, kind, 1, entry)
                    elif (entry / "model_index.json").is_file():
                        self._consider_folder(entry, root)
                    # Any other folder belongs to another tool (a UI, a trainer): not ours.
                elif entry.is_file():  # not a pipe or a device, which could block a read
                    self._consider_file(entry, None, root)
        for folder in self.embedding_dirs():
            if folder.is_dir():
                self._walk(folder, "embedding", 1, folder)
        if is_external_layout(root / "models"):
            notes.append(
                "This looks like an AUTOMATIC1111 or ComfyUI install folder: point the models "
                "folder (--models-dir) at its models/ folder instead."
            )
        if self._too_deep:
            notes.append(f"Folders more than {MAX_DEPTH} levels deep were not searched.")
        if self._budget.exhausted:
            notes.append(
                f"The models folder holds more than {MAX_ENTRIES} files and folders; "
                "the rest were not searched."
            )
        self._pair_transformers()
        self._items = self._found
        self.refused = self._refused
        self.notes = notes
        self._headers = self._headers_now
        for kind in KINDS:
            log.debug("library: %d %s file(s)", len(self._items[kind]), kind)

    # walking ------------------------------------------------------------------------------
    def _mark_seen(self, folder: Path) -> bool:
        """False when this folder (reached again through a link) was already searched."""
        try:
            stat = folder.stat()
        except OSError:
            return False
        key = (stat.st_dev, stat.st_ino)
        if key in self._seen_dirs:
            return False
        self._seen_dirs.add(key)
        return True

    def _entries(self, folder: Path) -> list[Path]:
        try:
            names = sorted(os.listdir(folder), key=str.lower)
        except OSError:
            return []
        entries = []
        for name in names:
            if name.startswith("."):
                continue
            if not self._budget.take():
                break
            entries.append(folder / name)
        return entries

    def _walk(self, folder: Path, kind: str, depth: int, root: Path) -> None:
        if not self._mark_seen(folder):
            return
        entries = self._entries(folder)
        # A folder's own files first, then its sub-folders: of two files with one name, the one
        # nearer the top is used.
        for entry in [e for e in entries if not e.is_dir()] + [e for e in entries if e.is_dir()]:
            if entry.is_dir():
                if (entry / "model_index.json").is_file():
                    self._consider_folder(entry, root)
                elif depth < MAX_DEPTH:
                    self._walk(entry, kind, depth + 1, root)
                else:
                    self._too_deep = True
            elif entry.is_file():
                self._consider_file(entry, kind, root)

    def _refuse(self, kind: str, name: str, reason: str, path: Path) -> None:
        self._refused.append(RefusedItem(kind, name, reason, path))

    def _add(self, item: LibraryItem) -> None:
        if (item.kind, item.name) in self._names:
            self._refuse(
                item.kind,
                item.name,
                f"Another {KIND_TITLES[item.kind]} has the same name (file stem), so this one "
                "cannot be chosen; rename one of them.",
                item.path,
            )
            return
        self._names.add((item.kind, item.name))
        self._found[item.kind].append(item)

    def _consider_folder(self, folder: Path, root: Path) -> None:
        from core.demo import DEMO_MARKER

        try:
            arch, variant = detect_diffusers_folder(folder)
        except ModelError as err:
            self._refuse("checkpoint", folder.name, err.message, folder)
            log.info("model refused: %s", err.code)
            return
        except OSError:
            self._refuse(
                "checkpoint",
                folder.name,
                "The model folder could not be read (check its permissions).",
                folder,
            )
            log.info("model refused: model_unreadable")
            return
        detail = {
            "variant": variant,
            "format": "diffusers",
            "is_demo": (folder / DEMO_MARKER).is_file(),
            **_where(folder, root),
        }
        self._add(LibraryItem("checkpoint", folder.name, folder, arch, detail))

    def _consider_file(self, path: Path, hint: str | None, root: Path) -> None:
        suffix = path.suffix.lower()
        name = self._item_name(path)
        if suffix in PICKLE_SUFFIXES:
            self._refuse(hint or "checkpoint", name, PICKLE_REASON, path)
            log.info("model refused: pickle_refused")
            return
        if suffix not in SAFETENSORS_SUFFIXES and suffix not in GGUF_SUFFIXES:
            return  # previews, notes, .yaml configs, civitai.info: not model files
        try:
            stat = path.stat()
        except OSError:
            return  # gone while the folder was listed
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        known = self._headers.get(key)
        if known is None:
            known = self._read(path, hint, name, root)
        self._headers_now[key] = known
        outcome, value = known
        if outcome == "item":
            self._add(value)
        else:
            refused_kind, code, message = value
            self._refuse(refused_kind, name, message, path)
            log.info("model refused: %s", code)

    def _read(self, path: Path, hint: str | None, name: str, root: Path) -> tuple[str, Any]:
        """("item", LibraryItem) or ("refused", (kind, code, sentence)) from the file's header."""
        if path.suffix.lower() in GGUF_SUFFIXES:
            return self._read_gguf(path, hint, name, root)
        kind: str | None = None
        try:
            header = read_safetensors_header(path)
            kind = detect_kind(header, hint)
            if kind is None:
                if hint in (None, "checkpoint"):
                    detect_checkpoint(header, name)  # raises its own "no UNet found" sentence
                if hint == "diffusion_model":
                    detect_transformer(header, name)  # raises its "not supported" sentence
                raise ModelError(
                    "not_a_model_file",
                    f"This file is not a {KIND_TITLES.get(hint or '', 'model')} file Obscura "
                    "recognises (its tensor names match no known format); see docs/models.md.",
                )
            item = self._describe(kind, header, name, path)
            item.detail.update(_where(path, root))
        except ModelError as err:
            # A file whose kind its header told (a LoHa in a flat folder) is refused as that kind.
            return "refused", (kind or hint or "checkpoint", err.code, err.message)
        except (TypeError, ValueError, KeyError, IndexError, RuntimeError, ArithmeticError,
                MemoryError):
            # A header that parses but holds nonsense (a shape of "x", of -1, a width of 0
            # divided by): one bad file must not stop the scan of all the others.
            return "refused", (
                kind or hint or "checkpoint",
                "model_corrupt",
                "The model file is not a valid safetensors file; download it again.",
            )
        except OSError:
            return "refused", (
                kind or hint or "checkpoint",
                "model_unreadable",
                "The model file could not be read (check its permissions).",
            )
        return "item", item

    def _read_gguf(self, path: Path, hint: str | None, name: str, root: Path) -> tuple[str, Any]:
        """A GGUF transformer (city96's layout: the original tensor names): its tensor table
        only. GGUF text encoders are refused (the pipelines load text encoders from safetensors)."""
        if hint == "text_encoder":
            return "refused", (
                "text_encoder",
                "text_encoder_unsupported",
                "GGUF text encoders are not supported; use the .safetensors version of this text "
                "encoder (see docs/models.md).",
            )
        try:
            header, architecture = read_gguf_header(path)
            arch, detail = _transformer_detail(header, name)
        except ModelError as err:
            return "refused", (hint or "diffusion_model", err.code, err.message)
        except (TypeError, ValueError, KeyError, IndexError, RuntimeError, ArithmeticError,
                MemoryError, SystemError):
            # as in _read (SystemError: what numpy/gguf raise when an allocation is refused)
            return "refused", (
                hint or "diffusion_model",
                "model_corrupt",
                "The file is not a valid GGUF file; download it again.",
            )
        except OSError:
            return "refused", (
                hint or "diffusion_model",
                "model_unreadable",
                "The model file could not be read (check its permissions).",
            )
        detail["format"] = "gguf"
        detail["gguf_architecture"] = architecture
        detail["quantization"] = sorted({str(v.get("dtype", "")) for v in header.values()})
        detail.update(_where(path, root))
        return "item", LibraryItem("diffusion_model", name, path, arch, detail)

    # pairing ------------------------------------------------------------------------------
    def _part_folders(self) -> tuple[str, str]:
        """Where the owner puts text encoders and VAEs, in the folder names their layout uses."""
        if self._is_a1111_layout():
            return "text_encoder/", "VAE/"
        return "text_encoders/", "vae/"

    def _pair_transformers(self) -> None:
        """Each transformer file becomes a checkpoint when the library has its parts (see
        core/family_detect.py for the rule), or a refused checkpoint naming what is missing."""
        encoders = [Part(i.name, i.path, i.detail) for i in self._found["text_encoder"]]
        vaes = [Part(i.name, i.path, i.detail) for i in self._found["vae"]]
        text_folder, vae_folder = self._part_folders()
        for item in list(self._found["diffusion_model"]):
            detail = item.detail
            arch = item.arch or ""
            transformer = Transformer(
                arch,
                str(detail.get("variant", "")),
                str(detail.get("layout", "")),
                str(detail.get("prefix", "")),
                int(detail.get("latent_channels", 0)),
                dict(detail.get("needs") or {}),
                str(detail.get("size", "")),
            )
            embedded = self._embedded_parts(item, transformer)
            chosen, missing = pair(transformer, item.name, encoders, vaes, embedded)
            if missing:
                self._refuse(
                    "checkpoint",
                    item.name,
                    missing_sentence(transformer, missing, text_folder, vae_folder),
                    item.path,
                )
                log.info("model refused: model_parts_missing")
                continue
            own = all(part.path == item.path for part in chosen.values())
            fmt = "gguf" if detail.get("format") == "gguf" else ("single-file" if own else "parts")
            parts = (("transformer", str(item.path)),) + tuple(
                (component, str(chosen[component].path)) for component in sorted(chosen)
            )
            checkpoint = {
                "variant": transformer.variant,
                "format": fmt,
                "is_demo": False,
                "parts": parts,
                "part_names": {c: p.name for c, p in chosen.items()},
                "part_prefixes": {
                    c: str(p.detail.get("prefix", "")) for c, p in chosen.items() if p.path == item.path
                },
                "transformer_layout": transformer.layout,
                "transformer_prefix": transformer.prefix,
                "title": transformer.title,
                "size": transformer.size,
                "transformer_config": dict(detail.get("config") or {}),
                "file_name": detail.get("file_name", item.path.name),
                "relative": detail.get("relative", item.path.name),
            }
            self._add(LibraryItem("checkpoint", item.name, item.path, arch, checkpoint))

    @staticmethod
    def _embedded_parts(item: LibraryItem, transformer: Transformer) -> dict[str, Part]:
        """The parts an all-in-one checkpoint holds itself, by component."""
        embedded = dict(item.detail.get("embedded") or {})
        out: dict[str, Part] = {}
        own = {k: Part(item.name, item.path, v) for k, v in embedded.items()}
        if transformer.arch == "sd3":
            mapping = {"clip_l": "text_encoder", "clip_g": "text_encoder_2", "t5xxl": "text_encoder_3"}
        elif transformer.arch == "flux1":
            mapping = {"clip_l": "text_encoder", "t5xxl": "text_encoder_2"}
        elif transformer.arch in ("flux2", "zimage"):
            mapping = {"qwen3_4b": "text_encoder", "qwen3_8b": "text_encoder"}
        elif transformer.arch == "qwenimage":
            mapping = {"qwen25_7b": "text_encoder"}
        else:
            mapping = {}
        for label, component in mapping.items():
            if label in own:
                out[component] = own[label]
        if "vae" in own:
            out["vae"] = own["vae"]
        return out

    @staticmethod
    def _item_name(path: Path) -> str:
        # diffusers' single-component folders (vae/sdxl-vae/diffusion_pytorch_model.safetensors)
        # are named after their folder, as people know them.
        if path.stem in {"diffusion_pytorch_model", "model"} and (path.parent / "config.json").is_file():
            return path.parent.name
        return path.stem

    def _describe(self, kind: str, header: dict[str, Any], name: str, path: Path) -> LibraryItem:
        keys = _tensor_keys(header)
        arch: str | None
        if kind == "checkpoint":
            arch, variant = detect_checkpoint(header, name)
            detail: dict[str, Any] = {"variant": variant, "format": "single-file", "is_demo": False}
        elif kind == "lora":
            detail = _lora_detail(header, keys)
            arch = _lora_arch(header, keys)
        elif kind == "embedding":
            arch, detail = _embedding_arch_detail(header, keys)
        elif kind == "vae":
            detail = _vae_detail(header, keys, name)
            arch = _vae_arch(detail)  # None: SD 1.x, 2.x and SDXL VAEs share one shape
        elif kind == "diffusion_model":
            arch, detail = _transformer_detail(header, name)
        elif kind == "text_encoder":
            encoder = detect_text_encoder(header, name)
            if encoder is None:
                raise ModelError(
                    "not_a_model_file",
                    "This file is not a text encoder Obscura recognises (CLIP-L/G, T5-XXL, Qwen3, "
                    "Qwen2.5-VL); see docs/models.md.",
                )
            detail = text_encoder_detail(encoder)
            arch = None
        elif kind == "controlnet":
            arch, detail = controlnet_detail(header)
        elif kind == "ipadapter":
            arch, detail = ipadapter_detail(header, name)
        elif kind == "clip_vision":
            detail = clip_vision_detail(header)
            arch = None  # one encoder serves SD 1.x and SDXL adapters alike
        else:
            family = upscaler_family(keys) or spandrel_family(header) or "unknown"
            detail = {"family": family, "scale": _upscaler_scale(family, header, keys, name)}
            arch = None
        return LibraryItem(kind, name, path, arch, detail)
