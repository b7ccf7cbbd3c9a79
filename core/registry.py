"""The model registry: what models are in the models folder, and which ones are refused.

Two checkpoint formats are accepted, both local only:
- a diffusers folder (has ``model_index.json``) whose weights are all ``.safetensors``;
- a single ``.safetensors`` checkpoint, whose architecture is read from its tensor names.

Pickle formats (``.ckpt``, ``.pt``, ``.pth``, ``.bin``, ``.pkl``) are refused and never opened:
unpickling runs whatever code the file carries. Only the safetensors header (JSON) is read here;
no weights are loaded until a job needs the model. Where checkpoints are looked for (also an
AUTOMATIC1111 or ComfyUI models folder), and every other kind of model file, is core/library.py.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import InputError, ModelError

log = logging.getLogger("obscura.core")

PICKLE_SUFFIXES = {".ckpt", ".pt", ".pt2", ".pth", ".bin", ".pkl", ".pickle"}
CONVERT_HINT = (
    "convert it with `obscura models convert FILE` (see docs/models.md) or download the "
    ".safetensors version"
)
MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class ArchSpec:
    """Size limits and defaults for one architecture."""

    default_size: int
    min_size: int
    max_size: int
    default_steps: int
    default_guidance: float
    default_sampler: str


# The transformer ("flow") families default to "Euler": the flow-matching Euler sampler (Forge and
# ComfyUI call it Euler + Simple). Their defaults are the model cards' / diffusers docs' values.
ARCH_SPECS: dict[str, ArchSpec] = {
    "sd1": ArchSpec(512, 64, 2048, 25, 7.0, "DPM++ 2M Karras"),
    "sd2": ArchSpec(768, 64, 2048, 25, 7.0, "DPM++ 2M Karras"),
    "sdxl": ArchSpec(1024, 64, 2048, 30, 6.0, "DPM++ 2M Karras"),
    "sd3": ArchSpec(1024, 64, 2048, 28, 7.0, "Euler"),
    "flux1": ArchSpec(1024, 64, 2048, 28, 3.5, "Euler"),
    "flux2": ArchSpec(1024, 64, 2048, 4, 1.0, "Euler"),
    "zimage": ArchSpec(1024, 64, 2048, 9, 0.0, "Euler"),
    "qwenimage": ArchSpec(1024, 64, 2048, 50, 4.0, "Euler"),
}
# Variants whose defaults differ from their family's (distilled vs base models).
VARIANT_SPECS: dict[tuple[str, str], ArchSpec] = {
    ("sd3", "medium"): ArchSpec(1024, 64, 2048, 40, 4.5, "Euler"),  # SD 3.5 Medium card
    ("sd3", "large"): ArchSpec(1024, 64, 2048, 28, 3.5, "Euler"),  # SD 3.5 Large card
    ("sd3", "large-turbo"): ArchSpec(1024, 64, 2048, 4, 0.0, "Euler"),
    ("flux1", "schnell"): ArchSpec(1024, 64, 2048, 4, 0.0, "Euler"),
    ("flux1", "dev"): ArchSpec(1024, 64, 2048, 28, 3.5, "Euler"),
    ("flux1", "fill"): ArchSpec(1024, 64, 2048, 50, 30.0, "Euler"),  # FluxFillPipeline docs
    ("flux1", "kontext"): ArchSpec(1024, 64, 2048, 28, 2.5, "Euler"),  # FluxKontext docs
    ("flux2", "klein"): ArchSpec(1024, 64, 2048, 4, 1.0, "Euler"),  # distilled: 4 steps
    ("flux2", "klein-base"): ArchSpec(1024, 64, 2048, 50, 4.0, "Euler"),
    ("flux2", "dev"): ArchSpec(1024, 64, 2048, 50, 4.0, "Euler"),
    ("zimage", "turbo"): ArchSpec(1024, 64, 2048, 9, 0.0, "Euler"),  # Z-Image-Turbo card
    ("zimage", "base"): ArchSpec(1024, 64, 2048, 50, 4.0, "Euler"),
    ("qwenimage", "base"): ArchSpec(1024, 64, 2048, 50, 4.0, "Euler"),  # true_cfg_scale 4
    ("qwenimage", "edit"): ArchSpec(1024, 64, 2048, 50, 4.0, "Euler"),
    ("qwenimage", "edit-plus"): ArchSpec(1024, 64, 2048, 40, 4.0, "Euler"),
}
TURBO_SPEC = ArchSpec(512, 64, 1024, 4, 0.0, "Euler a")
DEMO_SPEC = ArchSpec(256, 64, 512, 8, 5.0, "Euler a")
ARCH_TITLES = {
    "sd1": "Stable Diffusion 1.x",
    "sd2": "Stable Diffusion 2.x",
    "sdxl": "SDXL",
    "sd3": "Stable Diffusion 3.5",
    "flux1": "FLUX.1",
    "flux2": "FLUX.2",
    "zimage": "Z-Image",
    "qwenimage": "Qwen-Image",
}
# The label of each variant after the family's title ("FLUX.1 [schnell]").
VARIANT_TITLES = {
    "inpaint": " inpainting",
    "turbo": " Turbo",
    "medium": " Medium",
    "large": " Large",
    "large-turbo": " Large Turbo",
    "schnell": " [schnell]",
    "dev": " [dev]",
    "fill": " Fill [dev]",
    "kontext": " Kontext [dev]",
    "klein": " [klein]",
    "klein-base": " [klein] Base",
    "edit": " Edit",
    "edit-plus": " Edit Plus",
}
FLOW_ARCHS = ("sd3", "flux1", "flux2", "zimage", "qwenimage")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: Path
    arch: str  # sd1 | sd2 | sdxl | sd3 | flux1 | flux2 | zimage | qwenimage
    # sd1/sd2/sdxl: base | inpaint | turbo; sd3: medium | large | large-turbo;
    # flux1: schnell | dev | fill | kontext; flux2: klein | klein-base | dev;
    # zimage: turbo | base; qwenimage: base | edit | edit-plus
    variant: str
    # diffusers | single-file | parts (a transformer file + text encoder(s) + VAE found
    # separately, ComfyUI/Forge style) | gguf (a GGUF transformer + parts)
    format: str
    is_demo: bool = False
    # (component name as in the diffusers model_index: "transformer", "text_encoder",
    # "text_encoder_2", "text_encoder_3", "vae") -> absolute path of its file or folder.
    parts: tuple[tuple[str, str], ...] = ()
    # FLUX.2 [klein]: "4B" | "9B" (read from the transformer's widths); "" where one size exists
    size: str = ""
    # Transformer config values the file's shapes settle (core/family_detect.py
    # derive_transformer_config), as (key, value) pairs, lists as tuples; lay them over the
    # shipped config's (transformer_config) to load a file of another depth or width.
    derived_config: tuple[tuple[str, Any], ...] = ()

    @property
    def transformer_config(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.derived_config}

    @property
    def config_name(self) -> str:
        """The shipped config folder (core/configs/<name>) for this model's family and size."""
        name = f"{self.arch}-{self.variant}"
        return f"{name}-{self.size.lower()}" if self.size and self.size != "4B" else name

    @property
    def spec(self) -> ArchSpec:
        if self.is_demo:
            return DEMO_SPEC
        if self.arch in ("sd1", "sd2", "sdxl") and self.variant == "turbo":
            return TURBO_SPEC
        return VARIANT_SPECS.get((self.arch, self.variant)) or ARCH_SPECS[self.arch]

    @property
    def is_flow(self) -> bool:
        """A transformer (flow-matching) family, not a Stable Diffusion UNet."""
        return self.arch in FLOW_ARCHS

    def part(self, component: str) -> Path | None:
        """The path chosen for one component ("vae", "text_encoder", ...), if any."""
        for name, path in self.parts:
            if name == component:
                return Path(path)
        return None

    @property
    def label(self) -> str:
        if self.is_demo:
            return f"{self.name} (demo: random weights, draws noise; see docs/models.md)"
        kind = VARIANT_TITLES.get(self.variant, "")
        return f"{self.name} ({ARCH_TITLES.get(self.arch, self.arch)}{kind})"


@dataclass(frozen=True)
class RefusedModel:
    name: str
    reason: str


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, after checking the file is complete."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ModelError(
                "model_truncated", "The model file is empty or truncated; download it again."
            )
        (length,) = struct.unpack("<Q", prefix)
        if length <= 0 or length > MAX_HEADER_BYTES or 8 + length > size:
            raise ModelError(
                "model_corrupt",
                "The model file is not a valid safetensors file; download it again.",
            )
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ModelError(
                "model_corrupt",
                "The model file is not a valid safetensors file; download it again.",
            ) from None
    if not isinstance(header, dict):
        raise ModelError(
            "model_corrupt", "The model file is not a valid safetensors file; download it again."
        )
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            end = max(end, int(entry["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise ModelError(
                "model_corrupt",
                "The model file is not a valid safetensors file; download it again.",
            ) from None
    if 8 + length + end > size:
        raise ModelError(
            "model_truncated",
            "The model file is truncated (incomplete download); download it again.",
        )
    return header


def tensor_keys(header: dict[str, Any]) -> list[str]:
    """The tensor names of a safetensors header (without its ``__metadata__``)."""
    return [key for key in header if key != "__metadata__"]


def tensor_shape(header: dict[str, Any], key: str) -> list[int]:
    """A tensor's shape from a safetensors header; [] when the key or its shape is not there."""
    entry = header.get(key)
    if isinstance(entry, dict) and isinstance(entry.get("shape"), list):
        return [int(n) for n in entry["shape"] if isinstance(n, int)]
    return []


def _shape(header: dict[str, Any], key: str) -> list[int] | None:
    entry = header.get(key)
    shape = entry.get("shape") if isinstance(entry, dict) else None
    if not isinstance(shape, list) or not all(isinstance(n, int) for n in shape):
        return None
    return shape


def detect_checkpoint(header: dict[str, Any], name: str) -> tuple[str, str]:
    """(arch, variant) of an original-format (LDM) Stable Diffusion checkpoint from its tensor names."""
    first_conv = _shape(header, "model.diffusion_model.input_blocks.0.0.weight")
    if first_conv is None:
        raise ModelError(
            "unknown_arch",
            "This file is not a Stable Diffusion 1.x, 2.x or SDXL checkpoint (no UNet found); "
            "see docs/models.md for the supported models.",
        )
    inpaint = len(first_conv) > 1 and first_conv[1] == 9
    if "conditioner.embedders.0.model.ln_final.weight" in header:
        raise ModelError(
            "unknown_arch",
            "SDXL refiner checkpoints are not supported; use an SDXL base model (see docs/models.md).",
        )
    if "conditioner.embedders.1.model.ln_final.weight" in header:
        arch = "sdxl"
    elif "cond_stage_model.model.ln_final.weight" in header:
        arch = "sd2"
    elif any(k.startswith("cond_stage_model.transformer.") for k in header):
        arch = "sd1"
    else:
        raise ModelError(
            "unknown_arch",
            "This checkpoint's architecture is not supported (not SD 1.x, 2.x or SDXL); "
            "see docs/models.md.",
        )
    variant = (
        "inpaint"
        if inpaint
        else ("turbo" if arch == "sdxl" and "turbo" in name.lower() else "base")
    )
    return arch, variant


def detect_diffusers_folder(folder: Path) -> tuple[str, str]:
    try:
        index: Any = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        class_name = str(index.get("_class_name", ""))
    except (OSError, json.JSONDecodeError, AttributeError):
        raise ModelError(
            "model_corrupt",
            "The model folder's model_index.json is unreadable; download the model again.",
        ) from None
    from core.family_detect import FAMILY_LIST, FLOW_PIPELINES, diffusers_family

    flow = class_name in FLOW_PIPELINES
    if flow:
        arch, variant = diffusers_family(folder, class_name, index if isinstance(index, dict) else {})
    elif class_name.startswith("StableDiffusionXL"):
        arch = "sdxl"
    elif class_name.startswith("StableDiffusion") and not class_name.startswith("StableDiffusion3"):
        try:
            text = json.loads((folder / "text_encoder" / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise ModelError(
                "model_corrupt",
                "The model folder has no readable text_encoder/config.json; download it again.",
            ) from None
        arch = "sd2" if int(text.get("hidden_size", 768)) == 1024 else "sd1"
    else:
        raise ModelError(
            "unknown_arch",
            "This model's pipeline type is not supported (only " + FAMILY_LIST + "); "
            "see docs/models.md.",
        )
    if not flow:
        in_channels = 4
        try:
            in_channels = int(
                json.loads((folder / "unet" / "config.json").read_text("utf-8")).get("in_channels", 4)
            )
        except (OSError, json.JSONDecodeError, ValueError, AttributeError):
            raise ModelError(
                "model_corrupt",
                "The model folder has no readable unet/config.json; download it again.",
            ) from None
        if "Inpaint" in class_name or in_channels == 9:
            variant = "inpaint"
        elif arch == "sdxl" and "turbo" in folder.name.lower():
            variant = "turbo"
        else:
            variant = "base"
    pickles = sorted(p for p in folder.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise ModelError(
            "pickle_refused",
            "This model folder holds pickle weight files (.bin/.ckpt/.pt), which can run code when "
            "opened, so Obscura refuses them; keep only the .safetensors weights or "
            + CONVERT_HINT
            + ".",
        )
    weights = [p for p in folder.rglob("*.safetensors")]
    if not weights:
        raise ModelError(
            "model_no_weights", "This model folder has no .safetensors weights; download them."
        )
    unet: dict[str, Any] = {}
    for weight in weights:
        header = read_safetensors_header(weight)
        if not flow and weight.parent.name == "unet":
            unet.update(header)
    if unet:
        _unet_config_fits_weights(folder, unet)
    return arch, variant


def _unet_config_fits_weights(folder: Path, header: dict[str, Any]) -> None:
    """A folder's unet/config.json must say what its weights hold: the number of down blocks
    and of resnets per block. A config claiming 100,000 layers would otherwise pass the scan and
    make the load build them, holding the engine for everybody (core/family_detect.py does the
    same for the transformer families)."""
    import re

    try:
        config = json.loads((folder / "unet" / "config.json").read_text("utf-8"))
        blocks = list(config.get("block_out_channels") or [])
        layers = config.get("layers_per_block", 2)
    except (OSError, ValueError, AttributeError, TypeError):
        return  # the in_channels read above said so already
    found: dict[int, set[int]] = {}
    for key in header:
        match = re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.", key)
        if match:
            found.setdefault(int(match[1]), set()).add(int(match[2]))
    if not found:
        return  # not diffusers' names: from_pretrained refuses it with its own sentence
    per_block = [len(found.get(i, ())) for i in range(max(found) + 1)]
    wanted = layers if isinstance(layers, list) else [layers] * len(blocks)
    if len(blocks) != len(per_block) or wanted != per_block:
        raise ModelError(
            "model_corrupt",
            "The model folder's unet/config.json does not match its weights (layers); download "
            "the model again.",
        )


class ModelRegistry:
    """The checkpoints of one models folder; ``models`` are usable, ``refused`` say why the rest
    are not. ``library`` holds every other kind of file too (LoRA, embedding, VAE, upscaler).

    Checkpoints are found in the folder itself (Obscura's flat layout) and in A1111's
    ``Stable-diffusion/`` and ComfyUI's ``checkpoints/`` and ``diffusers/`` (see core/library.py).
    """

    def __init__(self, models_dir: Path, embeddings_dir: Path | None = None) -> None:
        from core.library import ModelLibrary

        self.models_dir = Path(models_dir)
        self.models: list[ModelInfo] = []
        self.refused: list[RefusedModel] = []
        self.library = ModelLibrary(self.models_dir, embeddings_dir)
        self._collect()

    def scan(self) -> list[ModelInfo]:
        self.library.scan()
        return self._collect()

    def _collect(self) -> list[ModelInfo]:
        models = [
            ModelInfo(
                item.name,
                item.path,
                item.arch or "sd1",
                str(item.detail.get("variant", "base")),
                str(item.detail.get("format", "single-file")),
                bool(item.detail.get("is_demo", False)),
                tuple((str(c), str(p)) for c, p in item.detail.get("parts", ())),
                str(item.detail.get("size", "")),
                tuple(
                    (str(k), tuple(v) if isinstance(v, list) else v)
                    for k, v in sorted((item.detail.get("transformer_config") or {}).items())
                ),
            )
            for item in self.library.items("checkpoint")
        ]
        refused = [
            RefusedModel(self._relative(r.path) if r.path is not None else r.name, r.reason)
            for r in self.library.refused
            if r.kind == "checkpoint"
        ]
        self.models, self.refused = models, refused
        return models

    def _relative(self, path: Path) -> str:
        try:
            return path.relative_to(self.models_dir).as_posix()
        except ValueError:
            return path.name

    def get(self, name: str) -> ModelInfo:
        for info in self.models:
            if info.name == name:
                return info
        for refused in self.refused:
            if refused.name == name or Path(refused.name).stem == name:
                raise InputError(
                    "model_refused", "That model cannot be used: {reason}", reason=refused.reason
                )
        raise InputError(
            "unknown_model",
            "Unknown model; installed models are: {names}.",
            names=", ".join(m.name for m in self.models) or "none",
        )

    def default(self) -> ModelInfo:
        if not self.models:
            raise InputError(
                "no_models",
                "No usable model is installed; put one in the models folder (see docs/models.md) "
                "or run `obscura demo-model`.",
            )
        real = [m for m in self.models if not m.is_demo]
        return (real or self.models)[0]


def ensure_demo_model(models_dir: Path) -> ModelInfo | None:
    """Build the tiny demo model when the models folder holds no usable model; None otherwise.

    Never in an AUTOMATIC1111 or ComfyUI models folder (one with their sub-folders): those are
    read-only to Obscura."""
    from core.demo import DEMO_NAME, save_demo_model

    registry = ModelRegistry(models_dir)
    if registry.models or registry.library.is_external_layout():
        return None  # an A1111/ComfyUI folder is only ever read, never written to
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    save_demo_model(Path(models_dir) / DEMO_NAME["sd"], arch="sd")
    registry.scan()
    return registry.get(DEMO_NAME["sd"])
