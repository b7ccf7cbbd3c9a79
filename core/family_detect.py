"""Which transformer family a file belongs to, from its header only, and which parts go with it.

The transformer families (SD 3.5, FLUX.1, FLUX.2 [klein], Z-Image, Qwen-Image) come as
diffusers folders, as single transformer files (ComfyUI ``diffusion_models/``/``unet/``, Forge
``Stable-diffusion/``) with the text encoders and VAE as separate files (ComfyUI
``text_encoders/``/``clip/`` and ``vae/``, Forge ``text_encoder/`` and ``VAE/``), as GGUF
transformers, and as all-in-one checkpoints that hold the text encoders and VAE too. Everything
here reads safetensors headers (tensor names and shapes) or a GGUF file's tensor table, never a
weight, and never asks a hub.

Tensor names are the real ones: the original (BFL / Stability / Tongyi / ComfyUI) layout and
diffusers' layout, the same names diffusers' ``loaders/single_file_utils.py``
(``CHECKPOINT_KEY_NAMES``, ``convert_*_to_diffusers``) and ComfyUI's ``model_detection.py`` test.
Widths come from shapes, so nothing depends on a file's name except what shapes cannot tell
(FLUX.1 Kontext vs dev, FLUX.2 [klein] distilled vs base, Z-Image Turbo vs base, Qwen-Image Edit
vs base, SD 3.5 Large Turbo vs Large).

Pairing (a transformer file + the parts its family needs → one usable checkpoint)
-------------------------------------------------------------------------------
A part fits when its structure and width are the ones the transformer takes: a T5 encoder whose
``d_model`` is the transformer's context width; a CLIP-L whose width is FLUX.1's pooled width
(SD 3.5: CLIP-L + CLIP-G projections add up to its pooled width, CLIP-L the narrower); a Qwen3
whose width is Z-Image's caption width (FLUX.2: three of its layers stacked, 3 × width); a
Qwen2.5-VL whose width is Qwen-Image's ``txt_norm``; a VAE of the family's kind (16-channel KL,
FLUX.2's 32-channel VAE with its batch-norm statistics, Qwen-Image's 3D VAE) with the latent
channels the transformer reads (a 16-channel VAE named for another family is not taken: FLUX.1's
ae and SD 3.5's VAE share one shape, not their weights). Among the parts that fit, the chosen one is the one whose name
names the family (``sd3`` for SD 3.5's VAE, ``ae``/``flux`` for FLUX.1's), then the one whose name
shares the most words with the transformer's (``flux1-dev`` ↔ ``t5xxl``… none; ``z_image`` ↔
``z_image_vae``), then the first by name. Parts held in the transformer's own file (an
all-in-one checkpoint) are used first. A missing part refuses the transformer with one sentence
that names each missing file and the folder to put it in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ModelError

TRANSFORMER_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.", "")

FAMILY_LIST = (
    "Stable Diffusion 1.x, 2.x, SDXL, SD 3.5, FLUX.1, FLUX.2 [klein], Z-Image and Qwen-Image"
)

# diffusers pipeline class -> (arch, variant or None when read from the folder)
FLOW_PIPELINES: dict[str, tuple[str, str | None]] = {
    "StableDiffusion3Pipeline": ("sd3", None),
    "StableDiffusion3Img2ImgPipeline": ("sd3", None),
    "StableDiffusion3InpaintPipeline": ("sd3", None),
    "FluxPipeline": ("flux1", None),
    "FluxImg2ImgPipeline": ("flux1", None),
    "FluxInpaintPipeline": ("flux1", None),
    "FluxFillPipeline": ("flux1", "fill"),
    "FluxKontextPipeline": ("flux1", "kontext"),
    "FluxKontextInpaintPipeline": ("flux1", "kontext"),
    "Flux2KleinPipeline": ("flux2", None),
    "Flux2Pipeline": ("flux2", "dev"),
    "ZImagePipeline": ("zimage", None),
    "ZImageImg2ImgPipeline": ("zimage", None),
    "ZImageInpaintPipeline": ("zimage", None),
    "QwenImagePipeline": ("qwenimage", "base"),
    "QwenImageImg2ImgPipeline": ("qwenimage", "base"),
    "QwenImageInpaintPipeline": ("qwenimage", "base"),
    "QwenImageEditPipeline": ("qwenimage", "edit"),
    "QwenImageEditInpaintPipeline": ("qwenimage", "edit"),
    "QwenImageEditPlusPipeline": ("qwenimage", "edit-plus"),
}

FAMILY_TITLES = {
    ("sd3", "medium"): "Stable Diffusion 3.5 Medium",
    ("sd3", "large"): "Stable Diffusion 3.5 Large",
    ("sd3", "large-turbo"): "Stable Diffusion 3.5 Large Turbo",
    ("flux1", "schnell"): "FLUX.1 [schnell]",
    ("flux1", "dev"): "FLUX.1 [dev]",
    ("flux1", "fill"): "FLUX.1 Fill [dev]",
    ("flux1", "kontext"): "FLUX.1 Kontext [dev]",
    ("flux2", "klein"): "FLUX.2 [klein]",
    ("flux2", "klein-base"): "FLUX.2 [klein] Base",
    ("flux2", "dev"): "FLUX.2 [dev]",
    ("zimage", "turbo"): "Z-Image Turbo",
    ("zimage", "base"): "Z-Image",
    ("qwenimage", "base"): "Qwen-Image",
    ("qwenimage", "edit"): "Qwen-Image Edit",
    ("qwenimage", "edit-plus"): "Qwen-Image Edit Plus",
}

_WORDS = re.compile(r"[a-z0-9]+")

SCALED_FP8_REASON = (
    "it is ComfyUI's “scaled” fp8 format (weights with separate scale tensors), which diffusers "
    "and transformers cannot load; use the fp16/bf16 or plain fp8_e4m3fn file instead."
)


def words(name: str) -> set[str]:
    return set(_WORDS.findall(name.lower()))


MAX_BLOCKS = 512  # numbered blocks of one kind (the largest transformer here has 60)


def shape_of(header: dict[str, Any], key: str) -> list[int]:
    """A tensor's shape ([] when it is absent); a shape with a size of zero or less (a width
    the detectors would divide by) is refused."""
    entry = header.get(key)
    if isinstance(entry, dict) and isinstance(entry.get("shape"), list):
        shape = [int(n) for n in entry["shape"] if isinstance(n, int)]
        if any(n <= 0 for n in shape):
            raise ModelError(
                "model_corrupt",
                "The model file has a tensor whose size is zero or less; download it again.",
            )
        return shape
    return []


def _count(keys: set[str], prefix: str) -> int:
    """How many numbered blocks ``prefix{N}.`` there are (N = 0, 1, ...)."""
    found = set()
    start = len(prefix)
    for key in keys:
        if key.startswith(prefix):
            rest = key[start:].split(".", 1)[0]
            if rest.isascii() and rest.isdigit():
                found.add(int(rest))
    return max(found) + 1 if found else 0


def _blocks(keys: set[str], prefix: str) -> list[int]:
    """The numbers N of the blocks ``prefix{N}.``, refused unless they are 0, 1, ... in full
    and at most MAX_BLOCKS of them (a block 999999999999 would make a config that big)."""
    found = set()
    start = len(prefix)
    for key in keys:
        if key.startswith(prefix):
            rest = key[start:].split(".", 1)[0]
            if rest.isascii() and rest.isdigit():
                found.add(int(rest) if len(rest) <= 4 else MAX_BLOCKS)  # 5 digits: too many
    if found and (max(found) + 1 != len(found) or len(found) > MAX_BLOCKS):
        raise ModelError(
            "model_corrupt",
            f"The model file's blocks are not numbered 0 to N - 1 (N at most {MAX_BLOCKS}); "
            "download it again.",
        )
    return sorted(found)


def is_scaled_fp8(keys: set[str] | list[str]) -> bool:
    return any(
        k == "scaled_fp8" or k.endswith((".scaled_fp8", ".scale_weight", ".scale_input", ".comfy_quant"))
        for k in keys
    )


def _unknown_arch() -> ModelError:
    return ModelError(
        "unknown_arch",
        "This file's model type is not supported (only " + FAMILY_LIST + "); see docs/models.md.",
    )


# -- transformers -----------------------------------------------------------------------------
@dataclass
class Transformer:
    """What a transformer file's header says."""

    arch: str
    variant: str
    layout: str  # "original" (BFL / Stability / Tongyi / ComfyUI names) | "diffusers"
    prefix: str  # the prefix its tensor names carry ("model.diffusion_model." or "")
    latent_channels: int
    needs: dict[str, Any] = field(default_factory=dict)  # widths its parts must have
    size: str = ""  # FLUX.2 [klein]: "4B" | "9B"

    @property
    def title(self) -> str:
        title = FAMILY_TITLES.get((self.arch, self.variant), self.arch)
        return f"{title} {self.size}" if self.size else title


def transformer_prefix(keys: set[str]) -> str | None:
    """The prefix under which a file holds a known transformer, or None."""
    for prefix in TRANSFORMER_PREFIXES:
        if _family_of(keys, prefix) is not None:
            return prefix
    return None


def _family_of(keys: set[str], p: str) -> tuple[str, str] | None:
    def has(*names: str) -> bool:
        return all(p + n in keys for n in names)

    if has("joint_blocks.0.context_block.adaLN_modulation.1.bias"):
        return "sd3", "original"
    if has("pos_embed.proj.weight", "transformer_blocks.0.norm1_context.linear.weight") and has(
        "time_text_embed.text_embedder.linear_1.weight"
    ):
        return "sd3", "diffusers"
    if has("single_stream_modulation.lin.weight"):
        return "flux2", "original"
    if has("single_stream_modulation.linear.weight"):
        return "flux2", "diffusers"
    if has("double_blocks.0.img_attn.norm.key_norm.scale"):
        if has("distilled_guidance_layer.in_proj.bias"):
            return None  # Chroma: FLUX.1-shaped, but not FLUX.1
        return "flux1", "original"
    if has("single_transformer_blocks.0.proj_mlp.weight", "x_embedder.weight") and has(
        "time_text_embed.timestep_embedder.linear_1.weight"
    ):
        return "flux1", "diffusers"
    if has("layers.0.adaLN_modulation.0.weight", "cap_embedder.1.weight"):
        if has("all_x_embedder.2-1.weight"):
            return "zimage", "diffusers"
        if has("x_embedder.weight"):
            return "zimage", "original"
    if has("txt_norm.weight", "img_in.weight", "transformer_blocks.0.img_mod.1.weight"):
        return "qwenimage", "diffusers"  # one layout: the original and ComfyUI's names are diffusers' own
    return None


def detect_transformer(header: dict[str, Any], name: str) -> Transformer:
    """Family, variant and the widths its parts need, of a single transformer file."""
    keys = {k for k in header if k != "__metadata__"}
    prefix = transformer_prefix(keys)
    if prefix is None:
        raise _unknown_arch()
    family = _family_of(keys, prefix)
    assert family is not None
    arch, layout = family
    low = words(name)
    low_name = name.lower()

    def shape(key: str) -> list[int]:
        return shape_of(header, prefix + key)

    if arch == "sd3":
        if layout == "original":
            embed, context, pooled = "x_embedder.proj.weight", "context_embedder.weight", "y_embedder.mlp.0.weight"
            layers = _count(keys, prefix + "joint_blocks.")
        else:
            embed, context = "pos_embed.proj.weight", "context_embedder.weight"
            pooled = "time_text_embed.text_embedder.linear_1.weight"
            layers = _count(keys, prefix + "transformer_blocks.")
        latent = (shape(embed) + [0, 0])[1]
        if layers >= 38 or (layers != 24 and "large" in low):
            variant = "large-turbo" if "turbo" in low_name else "large"
        else:
            variant = "medium"
        needs = {"context": (shape(context) + [0, 0])[1], "pooled": (shape(pooled) + [0, 0])[1]}
        return Transformer(arch, variant, layout, prefix, latent, needs)
    if arch in ("flux1", "flux2"):
        if layout == "original":
            embed, out, context = "img_in.weight", "final_layer.linear.weight", "txt_in.weight"
            pooled = "vector_in.in_layer.weight"
            guided = prefix + "guidance_in.in_layer.weight" in keys
        else:
            embed, out, context = "x_embedder.weight", "proj_out.weight", "context_embedder.weight"
            pooled = "time_text_embed.text_embedder.linear_1.weight"
            guided = any(
                prefix + k in keys
                for k in (
                    "time_text_embed.guidance_embedder.linear_1.weight",
                    "time_guidance_embed.guidance_embedder.linear_1.weight",
                )
            )
        in_features = (shape(embed) + [0, 0])[1]
        out_features = (shape(out) + [0])[0] or in_features
        context_width = (shape(context) + [0, 0])[1]
        if arch == "flux1":
            if not guided:
                variant = "schnell"
            elif in_features == out_features * 6:
                variant = "fill"
            elif in_features == out_features * 2:
                raise ModelError(
                    "unknown_arch",
                    "FLUX.1 Depth/Canny [dev] models are not supported; use FLUX.1 [dev] with a "
                    "ControlNet, or FLUX.1 Fill or Kontext (see docs/models.md).",
                )
            elif "kontext" in low_name:
                variant = "kontext"
            else:
                variant = "dev"
            needs = {"context": context_width, "pooled": (shape(pooled) + [0, 0])[1]}
            return Transformer(arch, variant, layout, prefix, out_features // 4, needs)
        if guided:
            raise ModelError(
                "unknown_arch",
                "FLUX.2 [dev] transformer files are not supported (its Mistral Small 3.1 text "
                "encoder has no file layout Obscura reads); use its diffusers folder, or FLUX.2 "
                "[klein] (see docs/models.md).",
            )
        else:
            variant = "klein-base" if "base" in low else "klein"
        size = {3 * 2560: "4B", 3 * 4096: "9B"}.get(context_width, "")
        needs = {"context": context_width}
        return Transformer(arch, variant, layout, prefix, out_features // 4, needs, size)
    if arch == "zimage":
        embed = "all_x_embedder.2-1.weight" if layout == "diffusers" else "x_embedder.weight"
        latent = (shape(embed) + [0, 0])[1] // 4
        variant = "base" if "base" in low else "turbo"
        needs = {"caption": (shape("cap_embedder.1.weight") + [0, 0])[1]}
        return Transformer(arch, variant, layout, prefix, latent, needs)
    # qwenimage
    latent = (shape("img_in.weight") + [0, 0])[1] // 4
    if "edit" in low_name:
        variant = "edit-plus" if ({"plus", "2509", "2511"} & low) else "edit"
    else:
        variant = "base"
    needs = {"context": (shape("txt_norm.weight") + [0])[0]}
    return Transformer(arch, variant, layout, prefix, latent, needs)


def diffusers_family(folder: Path, class_name: str, index: dict[str, Any]) -> tuple[str, str]:
    """(arch, variant) of a diffusers folder of a transformer family."""
    import json

    arch, variant = FLOW_PIPELINES[class_name]
    try:
        config = json.loads((folder / "transformer" / "config.json").read_text("utf-8"))
        if not isinstance(config, dict):
            raise ValueError
    except (OSError, ValueError):
        raise ModelError(
            "model_corrupt",
            "The model folder has no readable transformer/config.json; download it again.",
        ) from None
    _config_fits_weights(folder, arch, config)
    low = words(folder.name)
    if variant is not None:
        return arch, variant
    if arch == "sd3":
        layers = int(config.get("num_layers", 24) or 24)
        if layers >= 38 or (layers != 24 and "large" in low):
            return arch, ("large-turbo" if "turbo" in folder.name.lower() else "large")
        return arch, "medium"
    if arch == "flux1":
        return arch, ("dev" if config.get("guidance_embeds") else "schnell")
    if arch == "flux2":
        return arch, ("klein" if index.get("is_distilled") else "klein-base")
    if arch == "zimage":
        return arch, ("base" if "base" in low else "turbo")
    return arch, "base"


def _config_fits_weights(folder: Path, arch: str, config: dict[str, Any]) -> None:
    """A folder's transformer/config.json must say what its weights' headers say (layer counts,
    widths, heads): a config that claims 100,000 layers would otherwise pass the scan and make
    the load build them, holding the engine for everybody. Headers only; shards merged."""
    from core.registry import read_safetensors_header

    header: dict[str, Any] = {}
    for weights in sorted((folder / "transformer").glob("*.safetensors")):
        try:
            header.update(read_safetensors_header(weights))
        except OSError:
            return  # the registry's own check of every weight file says so
    header.pop("__metadata__", None)
    if not header:
        return
    derived = derive_transformer_config(header, arch, "diffusers", "")
    for key, value in derived.items():
        if isinstance(value, bool) or not isinstance(value, (int, list)) or key not in config:
            continue
        if config[key] != value:
            raise ModelError(
                "model_corrupt",
                "The model folder's transformer/config.json does not match its weights (" + key
                + "); download the model again.",
            )


# -- GGUF -------------------------------------------------------------------------------------
GGUF_ARCHITECTURES = {"flux", "sd3", "flux2", "lumina2", "qwen_image", "z_image", ""}
MAX_GGUF_ENTRIES = 100_000  # tensors or metadata fields: a transformer has a few thousand
MAX_GGUF_ITEMS = 1_000_000  # metadata array values in all (an LLM's vocabulary is ~150,000)
MAX_GGUF_HEADER_BYTES = 64 * 1024 * 1024  # fields and tensor table (a transformer's: ~100 kB)
MAX_GGUF_NAME_BYTES = 65_535  # a key or tensor name (the GGUF spec's bound on keys)
MAX_GGUF_DIMS = 8  # ggml's tensors have at most 4
# GGUF value types: UINT8 INT8 UINT16 INT16 UINT32 INT32 FLOAT32 BOOL (8 STRING, 9 ARRAY)
# UINT64 INT64 FLOAT64, by their byte widths
_GGUF_WIDTHS = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY, _GGUF_UINT32 = 8, 9, 4


def _bad_gguf(why: str) -> ModelError:
    return ModelError("model_corrupt", f"The file is not a valid GGUF file ({why}); download it again.")


class _GGUFCursor:
    """Reads a GGUF file's header in order, every length checked against the bytes left and the
    header bound before anything is read or skipped."""

    def __init__(self, handle: Any, size: int, order: str) -> None:
        self.handle, self.size, self.order, self.pos = handle, size, order, 0

    def _claim(self, n: int) -> None:
        if self.pos + n > self.size:
            raise _bad_gguf("a value runs past the end of the file")
        if self.pos + n > MAX_GGUF_HEADER_BYTES:
            raise _bad_gguf("its header is larger than 64 MiB")
        self.pos += n

    def read(self, n: int) -> bytes:
        self._claim(n)
        raw = self.handle.read(n)
        if len(raw) != n:
            raise _bad_gguf("a value runs past the end of the file")
        return bytes(raw)

    def skip(self, n: int) -> None:
        self._claim(n)
        if n <= 65_536:
            self.handle.read(n)  # cheaper than a seek, which drops the read buffer
        else:
            self.handle.seek(self.pos)

    def number(self, fmt: str) -> int:
        import struct

        value: int = struct.unpack(self.order + fmt, self.read(struct.calcsize(fmt)))[0]
        return value

    def name(self) -> str:
        length = self.number("Q")
        if length > MAX_GGUF_NAME_BYTES:
            raise _bad_gguf("a name is longer than 65,535 bytes")
        try:
            return self.read(length).decode("utf-8")
        except UnicodeDecodeError:
            raise _bad_gguf("a name is not UTF-8 text") from None

    def value(self, kind: int, budget: list[int]) -> bytes | int | None:
        """One metadata value: a string's bytes, a UINT32's number, None for what is skipped."""
        if kind == _GGUF_STRING:
            length = self.number("Q")
            if length > 1024:
                self.skip(length)  # nothing long is kept: only general.architecture is read
                return None
            return self.read(length)
        if kind == _GGUF_UINT32:
            return self.number("I")
        if kind in _GGUF_WIDTHS:
            self.skip(_GGUF_WIDTHS[kind])
            return None
        if kind != _GGUF_ARRAY:
            raise _bad_gguf("a field has an unknown value type")
        item, count = self.number("I"), self.number("Q")
        if item == _GGUF_ARRAY:
            raise _bad_gguf("it holds an array inside an array")
        if item != _GGUF_STRING and item not in _GGUF_WIDTHS:
            raise _bad_gguf("a field has an unknown value type")
        budget[0] -= count
        if count > MAX_GGUF_ITEMS or budget[0] < 0:
            raise _bad_gguf("its metadata arrays hold more than a million values")
        if item == _GGUF_STRING:
            import struct

            unpack = struct.Struct(self.order + "Q").unpack
            for _ in range(count):
                self.skip(unpack(self.read(8))[0])
        else:
            self.skip(count * _GGUF_WIDTHS[item])
        return None


def read_gguf_header(path: Path) -> tuple[dict[str, Any], str]:
    """A safetensors-like header (name -> {"shape": torch order, "dtype": quant type}) and the
    ``general.architecture`` of a GGUF file, from its tensor table only (no weight is read).

    The header is walked here, field by field, with each count and length bounded by the bytes
    the file has left and by the bounds above (gguf's GGUFReader makes one Python object per
    array value: a field claiming 10**12 values made it run for minutes). Nested arrays, unknown
    value or tensor types, a name that is not UTF-8, a duplicate name and a tensor whose data the
    file does not hold are refused with one sentence."""
    try:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    except ImportError:
        raise ModelError(
            "gguf_unavailable",
            "GGUF files need the gguf package (pip install gguf); see docs/models.md.",
        ) from None
    import struct

    with path.open("rb") as handle:  # OSError: the caller says "could not be read"
        size = path.stat().st_size
        prefix = handle.read(24)
        if len(prefix) < 24 or prefix[:4] != b"GGUF":
            raise ModelError("model_corrupt", "The file is not a valid GGUF file; download it again.")
        order = "<"
        (version,) = struct.unpack("<I", prefix[4:8])
        if version & 0xFFFF == 0:  # written on a big-endian machine (gguf's own test)
            order = ">"
            (version,) = struct.unpack(">I", prefix[4:8])
        if version not in (2, 3):
            raise _bad_gguf("only GGUF versions 2 and 3 are read")
        tensors, fields = struct.unpack(order + "QQ", prefix[8:24])
        if tensors > MAX_GGUF_ENTRIES or fields > MAX_GGUF_ENTRIES:
            raise ModelError(
                "model_corrupt", "The file is not a valid GGUF file (too many entries); download it again."
            )
        cursor = _GGUFCursor(handle, size, order)
        cursor.pos = 24
        budget = [MAX_GGUF_ITEMS]
        keys: set[str] = set()
        architecture, alignment = "", 32
        for _ in range(fields):
            key = cursor.name()
            kind = cursor.number("I")
            value = cursor.value(kind, budget)
            if key in keys:
                raise _bad_gguf("two fields have the same name")
            keys.add(key)
            if key == "general.architecture" and isinstance(value, bytes):
                architecture = value.decode("utf-8", "replace")
            if key == "general.alignment":
                if kind != _GGUF_UINT32 or not isinstance(value, int) or value <= 0 or value & (value - 1):
                    raise _bad_gguf("its alignment is not a power of two")
                alignment = value
        table: list[tuple[str, list[int], str, int]] = []
        for _ in range(tensors):
            name = cursor.name()
            dims = cursor.number("I")
            if dims > MAX_GGUF_DIMS:
                raise _bad_gguf("a tensor has more than 8 dimensions")
            shape = [cursor.number("Q") for _ in range(dims)]
            code, offset = cursor.number("I"), cursor.number("Q")
            try:
                quant = GGMLQuantizationType(code)
                block, width = GGML_QUANT_SIZES[quant]
            except (ValueError, KeyError):
                raise _bad_gguf("a tensor has an unknown tensor type") from None
            elements = 1
            for n in shape:
                elements *= n
            table.append((name, shape, quant.name, offset + elements * width // block))
        data_start = cursor.pos + (-cursor.pos % alignment)
    header: dict[str, Any] = {}
    for name, shape, dtype, end in table:
        if name in header:
            raise _bad_gguf("two tensors have the same name")
        if data_start + end > size:
            raise _bad_gguf("a tensor's data runs past the end of the file")
        header[name] = {"shape": list(reversed(shape)), "dtype": dtype}
    return header, architecture


# -- text encoders ----------------------------------------------------------------------------
@dataclass(frozen=True)
class TextEncoder:
    family: str  # "clip" | "t5" | "qwen3" | "qwen25vl"
    width: int
    projection: int = 0  # CLIP: text_projection's output width (its width when it has none)
    layers: int = 0
    role: str = ""  # "clip-l" | "clip-g" | "t5xxl" | "qwen3-4b" | "qwen3-8b" | "qwen2.5-vl-7b" | ""
    prefix: str = ""


CLIP_PREFIXES = ("text_model.", "")
TEXT_ENCODER_TITLES = {
    "clip-l": "the CLIP-L text encoder (clip_l.safetensors)",
    "clip-g": "the CLIP-G text encoder (clip_g.safetensors)",
    "t5xxl": "the T5-XXL text encoder (t5xxl_fp16.safetensors)",
    "qwen3-4b": "the Qwen3-4B text encoder (qwen_3_4b.safetensors)",
    "qwen3-8b": "the Qwen3-8B text encoder (qwen_3_8b.safetensors)",
    "qwen2.5-vl-7b": "the Qwen2.5-VL-7B text encoder (qwen_2.5_vl_7b.safetensors)",
}


def detect_text_encoder(header: dict[str, Any], name: str = "", prefix: str = "") -> TextEncoder | None:
    """The text encoder a header (or the part under ``prefix``) holds; None when it is none.
    Raises ModelError for a text encoder diffusers/transformers cannot load."""
    keys = {k for k in header if k != "__metadata__" and k.startswith(prefix)}
    low = name.lower()

    def has(key: str) -> bool:
        return prefix + key in keys

    def shape(key: str) -> list[int]:
        return shape_of(header, prefix + key)

    found: TextEncoder | None = None
    for sub in CLIP_PREFIXES:
        if has(f"{sub}embeddings.token_embedding.weight") and has(
            f"{sub}encoder.layers.0.self_attn.q_proj.weight"
        ):
            width = (shape(f"{sub}embeddings.token_embedding.weight") + [0, 0])[1]
            projection = (shape("text_projection.weight") + [width])[0]
            layers = _count(keys, f"{prefix}{sub}encoder.layers.")
            role = {768: "clip-l", 1280: "clip-g"}.get(width, "")
            if not role:
                role = "clip-g" if re.search(r"clip[_-]?g|bigg", low) else (
                    "clip-l" if re.search(r"clip[_-]?l", low) else ""
                )
            found = TextEncoder("clip", width, projection, layers, role, prefix + sub)
            break
    if found is None and has("transformer.resblocks.0.attn.in_proj_weight") and has(
        "token_embedding.weight"
    ):
        raise ModelError(
            "text_encoder_unsupported",
            "This CLIP text encoder is in OpenCLIP's layout, which the diffusers pipelines do not "
            "load; use the transformers-format file (ComfyUI's clip_g.safetensors).",
        )
    if found is None and has("encoder.block.0.layer.0.SelfAttention.q.weight"):
        embed = shape("shared.weight") or shape("encoder.embed_tokens.weight")
        width = (embed + [0, 0])[1] if embed else (shape("encoder.block.0.layer.0.SelfAttention.q.weight") + [0, 0])[1]
        if embed and embed[0] > 200_000:
            raise ModelError(
                "text_encoder_unsupported",
                "This is UMT5 (Wan's text encoder), not the T5-XXL the supported families use.",
            )
        layers = _count(keys, prefix + "encoder.block.")
        found = TextEncoder("t5", width, 0, layers, "t5xxl" if width == 4096 or "t5" in low else "", prefix)
    if found is None:
        for sub in ("model.language_model.", "model.", "language_model.model.", ""):
            if has(f"{sub}layers.0.self_attn.q_proj.weight") and has(f"{sub}embed_tokens.weight"):
                width = (shape(f"{sub}embed_tokens.weight") + [0, 0])[1]
                layers = _count(keys, f"{prefix}{sub}layers.")
                vision = any(k.startswith((prefix + "visual.", prefix + "model.visual.")) for k in keys)
                if has(f"{sub}layers.0.self_attn.q_norm.weight") and not vision:
                    role = {2560: "qwen3-4b", 4096: "qwen3-8b"}.get(width, "")
                    if not role:
                        role = "qwen3-8b" if "8b" in low else ("qwen3-4b" if "4b" in low else "")
                    found = TextEncoder("qwen3", width, 0, layers, role, prefix + sub)
                elif has(f"{sub}layers.0.self_attn.q_proj.bias") and vision:
                    role = "qwen2.5-vl-7b" if width == 3584 or "7b" in low else ""
                    found = TextEncoder("qwen25vl", width, 0, layers, role, prefix + sub)
                break
    if found is not None and is_scaled_fp8(keys):
        raise ModelError("text_encoder_unsupported", "This text encoder cannot be used: " + SCALED_FP8_REASON)
    return found


def text_encoder_detail(encoder: TextEncoder) -> dict[str, Any]:
    return {
        "family": encoder.family,
        "role": encoder.role,
        "width": encoder.width,
        "projection": encoder.projection,
        "layers": encoder.layers,
        "prefix": encoder.prefix,
    }


# -- VAEs -------------------------------------------------------------------------------------
VAE_TITLES = {
    "sd3": "the SD 3.5 VAE (sd3_vae.safetensors, or diffusion_pytorch_model.safetensors from its vae/ folder)",
    "flux1": "the FLUX.1 VAE (ae.safetensors)",
    "zimage": "the FLUX.1 VAE (ae.safetensors), which Z-Image uses",
    "flux2": "the FLUX.2 VAE (flux2-vae.safetensors)",
    "qwenimage": "the Qwen-Image VAE (qwen_image_vae.safetensors)",
}


def vae_latent(header: dict[str, Any], keys: list[str], prefix: str, name: str) -> dict[str, Any]:
    """A VAE's latent space: ``latent`` ("sd" | "kl16" | "flux2" | "wan16"), its channels and the
    families it fits (``families``; a 16-channel one by its name: sd3 vs FLUX.1's ae)."""
    present = set(keys)
    conv = shape_of(header, f"{prefix}decoder.conv_in.weight") or shape_of(
        header, f"{prefix}decoder.conv1.weight"
    )
    channels = conv[1] if len(conv) >= 2 else 0
    three_d = len(conv) == 5
    low = name.lower()
    if three_d:
        if channels != 16:
            raise ModelError(
                "vae_unsupported",
                f"This 3D VAE has {channels} latent channels; only Qwen-Image's (16) is supported "
                "(see docs/models.md).",
            )
        return {"latent": "wan16", "channels": 16, "families": ["qwenimage"]}
    if f"{prefix}bn.running_mean" in present:
        return {"latent": "flux2", "channels": channels, "families": ["flux2"]}
    if channels == 4:
        return {"latent": "sd", "channels": 4, "families": ["sd1", "sd2", "sdxl"]}
    if channels == 16:
        if re.search(r"sd3|sd35|sd_3|stable.?diffusion.?3", low):
            families = ["sd3"]
        elif re.search(r"(^|[^a-z])ae([^a-z]|$)|flux|z.?image", low):
            families = ["flux1", "zimage"]
        else:
            families = ["flux1", "zimage", "sd3"]
        return {"latent": "kl16", "channels": 16, "families": families}
    raise ModelError(
        "vae_unsupported",
        f"This VAE has {channels} latent channels, which fits none of the supported model families "
        "(see docs/models.md).",
    )


def wan_vae_prefix(keys: list[str]) -> str | None:
    """Wan's original VAE layout (ComfyUI's qwen_image_vae.safetensors)."""
    present = set(keys)
    for prefix in ("", "vae.", "first_stage_model."):
        if f"{prefix}decoder.middle.0.residual.0.gamma" in present and f"{prefix}conv2.weight" in present:
            return prefix
    return None


# -- pairing ----------------------------------------------------------------------------------
COMPONENTS: dict[str, tuple[str, ...]] = {
    "sd3": ("text_encoder", "text_encoder_2", "text_encoder_3", "vae"),
    "flux1": ("text_encoder", "text_encoder_2", "vae"),
    "flux2": ("text_encoder", "vae"),
    "zimage": ("text_encoder", "vae"),
    "qwenimage": ("text_encoder", "vae"),
}
# The all-in-one checkpoints' prefixes (ComfyUI's saved checkpoints, Stability's *_incl_clips*)
EMBEDDED_TEXT = {"clip_l": "text_encoders.clip_l.transformer.",
                 "clip_g": "text_encoders.clip_g.transformer.",
                 "t5xxl": "text_encoders.t5xxl.transformer.",
                 "qwen3_4b": "text_encoders.qwen3_4b.transformer.",
                 "qwen3_8b": "text_encoders.qwen3_8b.transformer.",
                 "qwen25_7b": "text_encoders.qwen25_7b.transformer."}
EMBEDDED_VAE = ("vae.", "first_stage_model.")


@dataclass
class Part:
    """One candidate part found in the library (a text encoder or a VAE)."""

    name: str
    path: Path
    detail: dict[str, Any]


def _required_roles(t: Transformer) -> dict[str, str]:
    """component -> the role named in the missing-part sentence."""
    if t.arch == "sd3":
        return {"text_encoder": "clip-l", "text_encoder_2": "clip-g", "text_encoder_3": "t5xxl"}
    if t.arch == "flux1":
        return {"text_encoder": "clip-l", "text_encoder_2": "t5xxl"}
    if t.arch == "flux2":
        return {"text_encoder": "qwen3-8b" if t.size == "9B" else "qwen3-4b"}
    if t.arch == "zimage":
        return {"text_encoder": "qwen3-4b"}
    return {"text_encoder": "qwen2.5-vl-7b"}


def _fits_encoder(t: Transformer, component: str, d: dict[str, Any]) -> bool:
    family, width = d.get("family"), int(d.get("width", 0))
    if t.arch == "sd3":
        if component == "text_encoder_3":
            return family == "t5" and width == t.needs.get("context")
        return family == "clip"  # the pair is checked together (widths add up)
    if t.arch == "flux1":
        if component == "text_encoder":
            return family == "clip" and width == t.needs.get("pooled") and d.get("role") != "clip-g"
        return family == "t5" and width == t.needs.get("context")
    if t.arch == "flux2":
        return family == "qwen3" and 3 * width == t.needs.get("context")
    if t.arch == "zimage":
        return family == "qwen3" and width == t.needs.get("caption")
    return family == "qwen25vl" and width == t.needs.get("context")


def _fits_vae(t: Transformer, d: dict[str, Any]) -> bool:
    want = {"flux2": "flux2", "qwenimage": "wan16"}.get(t.arch, "kl16")
    if t.arch not in (d.get("families") or [t.arch]):
        return False  # FLUX.1's ae and SD 3.5's VAE have one shape: a name for the other family
    return d.get("latent") == want and int(d.get("channels", 0)) == t.latent_channels


def _rank(t: Transformer, transformer_name: str, part: Part, vae: bool) -> tuple[int, int, str]:
    """Lower sorts first: names the family, then shares more words, then by name."""
    family_named = 0
    if vae:
        fams = part.detail.get("families") or []
        family_named = 0 if (t.arch in fams and len(fams) <= 2) else 1
    shared = len(words(part.name) & words(transformer_name))
    return (family_named, -shared, part.name.lower())


def pair(
    t: Transformer,
    transformer_name: str,
    encoders: list[Part],
    vaes: list[Part],
    embedded: dict[str, Part],
) -> tuple[dict[str, Part], list[str]]:
    """(chosen part per component, roles/"vae" still missing)."""
    chosen: dict[str, Part] = {}
    missing: list[str] = []
    roles = _required_roles(t)
    for component, part in embedded.items():
        chosen[component] = part
    if t.arch == "sd3" and not ({"text_encoder", "text_encoder_2"} <= chosen.keys()):
        clips = sorted(
            (p for p in encoders if p.detail.get("family") == "clip"),
            key=lambda p: _rank(t, transformer_name, p, False),
        )
        best: tuple[Part, Part] | None = None
        for small in clips:
            for big in clips:
                if small is big or small.detail.get("role") == "clip-g" or big.detail.get("role") == "clip-l":
                    continue
                ps, pb = int(small.detail.get("projection", 0)), int(big.detail.get("projection", 0))
                if ps + pb == t.needs.get("pooled") and ps < pb:
                    best = (small, big)
                    break
            if best:
                break
        if best:
            chosen.setdefault("text_encoder", best[0])
            chosen.setdefault("text_encoder_2", best[1])
    for component in COMPONENTS[t.arch]:
        if component in chosen:
            continue
        if component == "vae":
            fits = [p for p in vaes if _fits_vae(t, p.detail)]
            if fits:
                chosen["vae"] = min(fits, key=lambda p: _rank(t, transformer_name, p, True))
            else:
                missing.append("vae")
            continue
        fits = [p for p in encoders if _fits_encoder(t, component, p.detail)]
        if t.arch == "sd3" and component in ("text_encoder", "text_encoder_2"):
            fits = []
        if fits:
            chosen[component] = min(fits, key=lambda p: _rank(t, transformer_name, p, False))
        else:
            missing.append(roles[component])
    return chosen, missing


def missing_sentence(t: Transformer, missing: list[str], text_folder: str, vae_folder: str) -> str:
    """One sentence naming each missing part and where it goes."""
    encoders = [TEXT_ENCODER_TITLES[m] for m in missing if m != "vae"]
    pieces = []
    if encoders:
        joined = encoders[0] if len(encoders) == 1 else ", ".join(encoders[:-1]) + " and " + encoders[-1]
        pieces.append(f"{joined} in {text_folder}")
    if "vae" in missing:
        pieces.append(f"{VAE_TITLES.get(t.arch, 'its VAE')} in {vae_folder}")
    return f"{t.title} needs {' and '.join(pieces)} (see docs/models.md)."


# -- transformer config from the header -------------------------------------------------------
def derive_transformer_config(header: dict[str, Any], arch: str, layout: str, prefix: str) -> dict[str, Any]:
    """The transformer config values a header's shapes settle (layer counts, widths, heads,
    channels, guidance embedding), under diffusers' config names. Laid over the shipped config
    they make a pruned or resized model (and the tiny test models) load as they are; what shapes
    cannot tell (rope axes, theta, mlp ratio) stays the shipped value."""
    keys = {k for k in header if k != "__metadata__"}

    def shape(key: str) -> list[int]:
        return shape_of(header, prefix + key)

    def first(*names: str) -> list[int]:
        for name in names:
            found = shape(name)
            if found:
                return found
        return []

    def count(sub: str) -> int:
        return len(_blocks(keys, prefix + sub))

    out: dict[str, Any] = {}
    if arch in ("flux1", "flux2"):
        original = layout == "original"
        embed = shape("img_in.weight" if original else "x_embedder.weight")
        head = first("double_blocks.0.img_attn.norm.key_norm.scale", "transformer_blocks.0.attn.norm_k.weight")
        if len(embed) == 2:
            out["in_channels"] = embed[1]
            if head:
                out["attention_head_dim"] = head[0]
                out["num_attention_heads"] = embed[0] // head[0]
        out["num_layers"] = count("double_blocks." if original else "transformer_blocks.")
        out["num_single_layers"] = count("single_blocks." if original else "single_transformer_blocks.")
        final = shape("final_layer.linear.weight" if original else "proj_out.weight")
        if final:
            out["out_channels"] = final[0]
        context = shape("txt_in.weight" if original else "context_embedder.weight")
        if len(context) == 2:
            out["joint_attention_dim"] = context[1]
        guided = any(
            prefix + k in keys
            for k in ("guidance_in.in_layer.weight", "time_text_embed.guidance_embedder.linear_1.weight",
                      "time_guidance_embed.guidance_embedder.linear_1.weight")
        )
        out["guidance_embeds"] = guided
        if arch == "flux1":
            pooled = shape("vector_in.in_layer.weight" if original else "time_text_embed.text_embedder.linear_1.weight")
            if len(pooled) == 2:
                out["pooled_projection_dim"] = pooled[1]
    elif arch == "sd3":
        original = layout == "original"
        embed = shape("x_embedder.proj.weight" if original else "pos_embed.proj.weight")
        blocks = "joint_blocks." if original else "transformer_blocks."
        numbers = _blocks(keys, prefix + blocks)
        out["num_layers"] = len(numbers)
        head = first("joint_blocks.0.x_block.attn.ln_q.weight", "transformer_blocks.0.attn.norm_q.weight")
        head_dim = head[0] if head else 64
        if len(embed) == 4:
            out["in_channels"], out["patch_size"] = embed[1], embed[2]
            out["attention_head_dim"] = head_dim
            out["num_attention_heads"] = embed[0] // head_dim
        context = shape("context_embedder.weight")
        if len(context) == 2:
            out["caption_projection_dim"], out["joint_attention_dim"] = context
        pooled = shape("y_embedder.mlp.0.weight" if original else "time_text_embed.text_embedder.linear_1.weight")
        if len(pooled) == 2:
            out["pooled_projection_dim"] = pooled[1]
        pos = shape("pos_embed" if original else "pos_embed.pos_embed")
        if len(pos) == 3:
            side = round(pos[1] ** 0.5)
            if side * side == pos[1]:
                out["pos_embed_max_size"] = side
        attn2 = ".x_block.attn2.qkv.weight" if original else ".attn2.to_q.weight"
        out["dual_attention_layers"] = sorted(
            i for i in numbers if f"{prefix}{blocks}{i}{attn2}" in keys
        )
        out["qk_norm"] = "rms_norm" if head else None
        final = shape("final_layer.linear.weight" if original else "proj_out.weight")
        if final and out.get("patch_size"):
            out["out_channels"] = final[0] // (out["patch_size"] ** 2)
    elif arch == "zimage":
        original = layout == "original"
        embed = shape("x_embedder.weight" if original else "all_x_embedder.2-1.weight")
        out["n_layers"] = count("layers.")
        out["n_refiner_layers"] = count("noise_refiner.")
        head = first("layers.0.attention.k_norm.weight", "layers.0.attention.norm_k.weight")
        if len(embed) == 2:
            out["dim"] = embed[0]
            out["in_channels"] = embed[1] // 4  # 2 x 2 patches, one frame
            if head:
                out["n_heads"] = embed[0] // head[0]
                keys_rows = shape("layers.0.attention.to_k.weight")
                qkv = shape("layers.0.attention.qkv.weight")
                if keys_rows:
                    out["n_kv_heads"] = keys_rows[0] // head[0]
                elif qkv:
                    out["n_kv_heads"] = (qkv[0] // head[0] - out["n_heads"]) // 2
        caption = shape("cap_embedder.1.weight")
        if len(caption) == 2:
            out["cap_feat_dim"] = caption[1]
    elif arch == "qwenimage":
        embed = shape("img_in.weight")
        out["num_layers"] = count("transformer_blocks.")
        head = shape("transformer_blocks.0.attn.norm_k.weight")
        if len(embed) == 2:
            out["in_channels"] = embed[1]
            if head:
                out["attention_head_dim"] = head[0]
                out["num_attention_heads"] = embed[0] // head[0]
        context = shape("txt_in.weight")
        if len(context) == 2:
            out["joint_attention_dim"] = context[1]
        final = shape("proj_out.weight")
        if final:
            out["out_channels"] = final[0] // 4
    return {k: v for k, v in out.items() if not (type(v) is int and v == 0)}
