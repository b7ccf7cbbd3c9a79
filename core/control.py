"""ControlNet and IP-Adapter units of one job (SD 1.x and SDXL), in the shape of AUTOMATIC1111's
ControlNet extension.

A request carries at most :data:`MAX_UNITS` :class:`ControlUnit` and :class:`IPAdapterUnit`
each. :func:`check_request` bounds every number and finds every model before any work (called
from ``Engine.validate``); :func:`applied` is entered by ``Engine.generate`` for the job and
gives the pipeline to call plus its extra keyword arguments. Everything it puts on the model
(the ControlNets, the CLIP image encoder, the IP-Adapter attention processors and image
projection) is taken off again when it exits, however it exits; the model's pipelines never
hold any of it.

ControlNet
    The job's pipeline is diffusers' ControlNet pipeline for the mode (txt2img, img2img,
    inpaint; SD 1.x, SDXL, SDXL ControlNet-Union) made with ``from_pipe`` from the model's own,
    so it shares the model's weights. Each unit's picture (or the job's photo) goes through
    :mod:`core.preprocess` and is fitted to the job's size by the unit's resize mode, as A1111
    does: "Just Resize" stretches, "Crop and Resize" fills the frame and cuts the overflow,
    "Resize and Fill" fits inside and fills the border with the map's median edge colour.
    Weight, start and end are diffusers' ``controlnet_conditioning_scale`` and
    ``control_guidance_start/end`` (one value per unit).

    Control modes, as sd-webui-controlnet implements them: "Balanced" adds the ControlNet's
    residuals at the unit's weight; "My prompt is more important" is its *soft injection*: SD
    1.5's 13 residuals are scaled by ``weight * 0.825 ** (12 - i)`` (shallow ones weaker; on
    SDXL diffusers spreads the same 0.1 .. 1 over its 10);
    "ControlNet is more important" is soft injection plus *CFG injection*: the ControlNet acts
    on the prompt's half of the classifier-free-guidance batch only. diffusers' ``guess_mode``
    is exactly the latter (its ``logspace(-1, 0, 13)`` scales are A1111's 0.825 ** k, as 0.825 =
    10 ** (-1/12)), but it is one switch for all units; here every unit keeps its own mode (one
    :class:`_Units` wrapper runs each ControlNet with its mode), so the pipeline's
    ``guess_mode`` stays off.

    ControlNet-Union (xinsir's controlnet-union-sdxl-1.0 and ProMax) takes the control type as
    ``control_mode`` (:data:`UNION_TYPES`); a unit's ``union_type``, else the one its module
    makes (canny → "canny", invert → "lineart").

IP-Adapter
    Plain, Plus and Plus-Face (SD 1.x, SDXL). The CLIP image encoder of the models folder's
    ``clip_vision`` kind that fits the adapters (ViT-H or ViT-bigG) and a ``CLIPImageProcessor``
    built in code are the job pipeline's ``image_encoder`` / ``feature_extractor``; the
    adapters' weights go in with diffusers' ``load_ip_adapter`` from state dicts. Several
    reference pictures of one unit are handed to diffusers as one list: their image tokens are
    put side by side (diffusers concatenates them; attention weighs them), not averaged. The
    scale is set per attention layer: ``weight`` everywhere, or with ``style_weight`` the
    InstantStyle layers (:func:`style_layers`: SDXL's ``down_blocks.2.attentions.1`` for layout
    and ``up_blocks.0.attentions.1`` for style, the same positions on SD 1.x) get
    ``style_weight`` and every other layer ``weight``. A scale of 0 skips the adapter's
    attention, so weight 0 on every adapter gives the very pixels of no adapter. Start/end set
    the scale to 0 outside the unit's part of the steps (a pre-hook on the UNet).
    ``crop_face`` crops each reference to its face first (:mod:`core.faces`); with no face the
    job is refused with one sentence (``no_face_found``), or with ``allow_no_face`` goes on
    without that unit and ``extras["face_found"]`` is False.

Biometric data: face crops, CLIP image embeddings and control maps are local to the job: never
logged, cached or returned. Their lists are emptied when the job ends and the locals of a
failed job's traceback frames are cleared, so not even an exception kept by a caller holds
them. Only model weights are kept between jobs (:class:`_Cache`, keyed by file path, size and
mtime, like core/networks.py's LoRAs). ``extras`` gets the units' settings and model names (for
the infotext) and ``face_found`` yes/no, nothing else derived from a picture.

The hires fix is refused with units (its second pass would run without them).
"""

from __future__ import annotations

import json
import logging
import math
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from core.errors import InputError, ModelError
from core.registry import ARCH_TITLES

log = logging.getLogger("obscura.core")

MAX_UNITS = 4  # ControlNet units per job, and IP-Adapter units per job
MIN_WEIGHT, MAX_WEIGHT = 0.0, 2.0
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 1.0
MIN_PROCESSOR_RES, MAX_PROCESSOR_RES = 64, 2048
# Canny's thresholds (core/preprocess.py checks 1..255 for the modules that use them); any unit
# may send A1111's -1 ("the module's default") for a module that has no thresholds.
MIN_THRESHOLD, MAX_THRESHOLD = -1.0, 255.0
MAX_REFERENCES = 4  # reference pictures per IP-Adapter unit
MAX_NAME_CHARS = 255

BALANCED, PROMPT_MORE, CONTROL_MORE = (
    "Balanced",
    "My prompt is more important",
    "ControlNet is more important",
)
CONTROL_MODES = (BALANCED, PROMPT_MORE, CONTROL_MORE)
RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
MODULES = ("none", "canny", "pyracanny", "invert")
# ControlNet-Union (xinsir's controlnet-union-sdxl-1.0; ProMax adds tile and repaint): control
# type → the model's control_mode index.
UNION_TYPES = {
    "openpose": 0,
    "depth": 1,
    "hed": 2,
    "pidi": 2,
    "scribble": 2,
    "ted": 2,
    "canny": 3,
    "lineart": 3,
    "anime_lineart": 3,
    "mlsd": 3,
    "normal": 4,
    "segment": 5,
    "seg": 5,
    "tile": 6,
    "repaint": 7,
}
_MODULE_UNION_TYPE = {"canny": "canny", "pyracanny": "canny", "invert": "lineart"}
ARCHES = ("sd1", "sdxl")

CONTROLNET_CACHE = 2  # ControlNets kept loaded between jobs
ENCODER_CACHE = 1  # CLIP image encoders kept loaded
ADAPTER_CACHE = 2  # IP-Adapter state dicts kept (CPU)

_PIPELINES = {
    ("sd1", "txt2img"): "StableDiffusionControlNetPipeline",
    ("sd1", "img2img"): "StableDiffusionControlNetImg2ImgPipeline",
    ("sd1", "inpaint"): "StableDiffusionControlNetInpaintPipeline",
    ("sdxl", "txt2img"): "StableDiffusionXLControlNetPipeline",
    ("sdxl", "img2img"): "StableDiffusionXLControlNetImg2ImgPipeline",
    ("sdxl", "inpaint"): "StableDiffusionXLControlNetInpaintPipeline",
    ("union", "txt2img"): "StableDiffusionXLControlNetUnionPipeline",
    ("union", "img2img"): "StableDiffusionXLControlNetUnionImg2ImgPipeline",
    ("union", "inpaint"): "StableDiffusionXLControlNetUnionInpaintPipeline",
}


@dataclass
class ControlUnit:
    """One ControlNet unit (A1111's ControlNet extension unit)."""

    model: str  # library name, kind "controlnet"
    image: Image.Image | None = None  # the unit's picture (None: the job's photo)
    module: str = "none"  # preprocessor: "none", "canny", "pyracanny", "invert" (core/preprocess.py)
    weight: float = 1.0  # 0..2
    guidance_start: float = 0.0  # 0..1
    guidance_end: float = 1.0  # 0..1, >= start
    control_mode: str = BALANCED  # one of CONTROL_MODES
    resize_mode: str = "Crop and Resize"  # one of RESIZE_MODES
    processor_res: int = 512  # 64..2048
    threshold_a: float = 100.0  # canny low
    threshold_b: float = 200.0  # canny high
    union_type: str | None = None  # ControlNet-Union control type ("canny", "depth", ...)


@dataclass
class IPAdapterUnit:
    """One IP-Adapter (plain, Plus, Plus-Face) with its reference pictures."""

    model: str  # library name, kind "ipadapter"
    images: list[Image.Image] = field(default_factory=list)  # references (empty: the job's photo)
    weight: float = 1.0  # 0..2; 0 = bit-identical to no adapter
    style_weight: float | None = None  # InstantStyle's layout/style layers; None = weight everywhere
    crop_face: bool = False  # crop the face (core/faces.py) from each reference before encoding
    allow_no_face: bool = False  # no face found: go on without this unit (else no_face_found)
    guidance_start: float = 0.0
    guidance_end: float = 1.0


@dataclass
class Applied:
    """What :func:`applied` gives the engine: the pipeline to call, its extra keyword arguments
    and the result's extras (settings, model names, ``face_found``; nothing face-derived)."""

    pipe: Any
    kwargs: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


# -- checks -----------------------------------------------------------------------------------
def _title(arch: str | None) -> str:
    return ARCH_TITLES.get(arch or "", "another kind of model")


def _bounded(value: Any, low: float, high: float, error: Callable[[], InputError]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error()
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise error()
    return number


def _weight_error() -> InputError:
    return InputError(
        "control_weight_out_of_range",
        "A ControlNet or IP-Adapter weight must be a number from {low} to {high}.",
        low=MIN_WEIGHT,
        high=MAX_WEIGHT,
    )


def _guidance_error() -> InputError:
    return InputError(
        "control_guidance_out_of_range",
        "A unit's start and end must be numbers from 0 to 1, the start no later than the end.",
    )


def _check_window(start: Any, end: Any) -> None:
    low = _bounded(start, MIN_GUIDANCE, MAX_GUIDANCE, _guidance_error)
    high = _bounded(end, MIN_GUIDANCE, MAX_GUIDANCE, _guidance_error)
    if low > high:
        raise _guidance_error()


def _not_an_image() -> InputError:
    return InputError(
        "control_not_an_image",
        "A ControlNet or IP-Adapter picture is not an image; use a PNG, JPEG or WebP file.",
    )


def _check_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_CHARS:
        raise InputError(
            "control_bad_model",
            "A ControlNet or IP-Adapter unit must name a model of the models folder.",
        )
    return value


def _find(library: Any, kind: str, name: str) -> Any:
    if library is None:
        from core.library import _not_found

        raise _not_found(kind)
    return library.find(kind, name)


def _wrong_arch(kind: str, index: int, unit_arch: str | None, model_arch: str) -> InputError:
    if kind == "controlnet":
        return InputError(
            "controlnet_wrong_arch",
            "ControlNet unit {index} is made for {unit_arch} models, but the checkpoint is "
            "{model_arch}; pick a ControlNet made for {model_arch}.",
            index=index,
            unit_arch=_title(unit_arch),
            model_arch=_title(model_arch),
        )
    return InputError(
        "ipadapter_wrong_arch",
        "IP-Adapter unit {index} is made for {unit_arch} models, but the checkpoint is "
        "{model_arch}; pick an IP-Adapter made for {model_arch}.",
        index=index,
        unit_arch=_title(unit_arch),
        model_arch=_title(model_arch),
    )


def _item_arch(item: Any) -> str | None:
    arch = getattr(item, "arch", None)
    if arch is None:
        arch = (getattr(item, "detail", None) or {}).get("arch")
    return arch if isinstance(arch, str) else None


def _check_control_unit(unit: Any, index: int, request: Any, library: Any, info: Any) -> Any:
    if not isinstance(unit, ControlUnit):
        raise InputError("control_units_invalid", "ControlNet and IP-Adapter units must be lists of units.")
    name = _check_name(unit.model)
    if unit.image is not None and not isinstance(unit.image, Image.Image):
        raise _not_an_image()
    if unit.image is None and request.image is None:
        raise InputError(
            "control_image_missing",
            "ControlNet unit {index} has no picture; add one, or add a photo to the job.",
            index=index,
        )
    _bounded(unit.weight, MIN_WEIGHT, MAX_WEIGHT, _weight_error)
    _check_window(unit.guidance_start, unit.guidance_end)
    if unit.control_mode not in CONTROL_MODES:
        raise InputError(
            "unknown_control_mode",
            "The control mode must be Balanced, My prompt is more important, or ControlNet is "
            "more important.",
        )
    if unit.resize_mode not in RESIZE_MODES:
        raise InputError(
            "unknown_control_resize_mode",
            "The resize mode must be Just Resize, Crop and Resize, or Resize and Fill.",
        )
    res = unit.processor_res
    if (
        isinstance(res, bool)
        or not isinstance(res, (int, float))
        or not math.isfinite(res)
        or res != int(res)
        or not MIN_PROCESSOR_RES <= res <= MAX_PROCESSOR_RES
    ):
        raise InputError(
            "control_res_out_of_range",
            "The preprocessor resolution must be a whole number from {low} to {high}.",
            low=MIN_PROCESSOR_RES,
            high=MAX_PROCESSOR_RES,
        )

    def threshold_error() -> InputError:
        return InputError(
            "control_threshold_out_of_range",
            "The Canny thresholds must be numbers from {low} to {high}.",
            low=1,
            high=int(MAX_THRESHOLD),
        )

    for value in (unit.threshold_a, unit.threshold_b):
        _bounded(value, MIN_THRESHOLD, MAX_THRESHOLD, threshold_error)
    from core import preprocess

    preprocess.check(
        unit.module, int(res), float(unit.threshold_a), float(unit.threshold_b)
    )
    if unit.union_type is not None and unit.union_type not in UNION_TYPES:
        raise InputError(
            "unknown_union_type",
            "That ControlNet-Union control type is not one Obscura knows; "
            "/controlnet/control_types lists them.",
        )
    item = _find(library, "controlnet", name)
    arch = _item_arch(item)
    if arch is not None and arch != info.arch:
        raise _wrong_arch("controlnet", index, arch, info.arch)
    return item


def _check_ip_unit(unit: Any, index: int, request: Any, library: Any, info: Any) -> Any:
    if not isinstance(unit, IPAdapterUnit):
        raise InputError("control_units_invalid", "ControlNet and IP-Adapter units must be lists of units.")
    name = _check_name(unit.model)
    if not isinstance(unit.images, list):
        raise _not_an_image()
    if len(unit.images) > MAX_REFERENCES:
        raise InputError(
            "too_many_ip_references",
            "An IP-Adapter unit takes at most {max} reference pictures.",
            max=MAX_REFERENCES,
        )
    if any(not isinstance(image, Image.Image) for image in unit.images):
        raise _not_an_image()
    if not unit.images and request.image is None:
        raise InputError(
            "reference_image_missing",
            "IP-Adapter unit {index} has no reference picture; add one, or add a photo to the job.",
            index=index,
        )
    _bounded(unit.weight, MIN_WEIGHT, MAX_WEIGHT, _weight_error)
    if unit.style_weight is not None:
        _bounded(unit.style_weight, MIN_WEIGHT, MAX_WEIGHT, _weight_error)
    _check_window(unit.guidance_start, unit.guidance_end)
    if not isinstance(unit.crop_face, bool) or not isinstance(unit.allow_no_face, bool):
        raise InputError(
            "control_bad_flag", "Face cropping and going on without a face must be true or false."
        )
    item = _find(library, "ipadapter", name)
    arch = _item_arch(item)
    if arch is not None and arch != info.arch:
        raise _wrong_arch("ipadapter", index, arch, info.arch)
    return item


def check_request(request: Any, library: Any, info: Any) -> None:
    """Raise :class:`~core.errors.InputError` for any unit the engine cannot run (before any work:
    numbers bounded, modules and modes known, models found and of the checkpoint's architecture)."""
    controlnets = getattr(request, "controlnets", None)
    adapters = getattr(request, "ip_adapters", None)
    if controlnets is None:
        controlnets = []
    if adapters is None:
        adapters = []
    if not isinstance(controlnets, list) or not isinstance(adapters, list):
        raise InputError("control_units_invalid", "ControlNet and IP-Adapter units must be lists of units.")
    if not controlnets and not adapters:
        return
    if getattr(request, "upscale", None) is not None:
        return  # an extras upscale paints nothing: the units do not apply
    if info.arch not in ARCHES:
        raise InputError(
            "control_wrong_family",
            "ControlNet and IP-Adapter work with SD 1.x and SDXL models; choose one of those or "
            "remove the units.",
        )
    if len(controlnets) > MAX_UNITS or len(adapters) > MAX_UNITS:
        raise InputError(
            "too_many_control_units",
            "A job takes at most {max} ControlNet units and {max} IP-Adapter units.",
            max=MAX_UNITS,
        )
    if getattr(request, "hires", None) is not None:
        raise InputError(
            "control_with_hires",
            "ControlNet and IP-Adapter units do not work with the hires fix yet; turn one of them off.",
        )
    for index, unit in enumerate(controlnets):
        _check_control_unit(unit, index, request, library, info)
    for index, ip_unit in enumerate(adapters):
        _check_ip_unit(ip_unit, index, request, library, info)
    if adapters and not _clip_vision_items(library):
        raise _encoder_missing()


def _encoder_missing() -> InputError:
    return InputError(
        "clip_vision_missing",
        "The IP-Adapter needs the CLIP image encoder it was trained with (ViT-H or ViT-bigG) in "
        "the models folder's clip_vision folder; docs/models.md says which file.",
    )


def _clip_vision_items(library: Any) -> list[Any]:
    try:
        return list(library.items("clip_vision")) if library is not None else []
    except Exception:  # a library without the kind
        return []


# -- control maps -------------------------------------------------------------------------------
def fit_map(image: Image.Image, width: int, height: int, resize_mode: str) -> Image.Image:
    """A control map fitted to the job's size by A1111's resize modes (see the module docstring)."""
    image = image.convert("RGB")
    if image.size == (width, height):
        return image
    if resize_mode == "Just Resize":
        return image.resize((width, height), Image.Resampling.LANCZOS)
    scale_x, scale_y = width / image.width, height / image.height
    if resize_mode == "Crop and Resize":
        scale = max(scale_x, scale_y)
        size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
        resized = image.resize(size, Image.Resampling.LANCZOS)
        left, top = (size[0] - width) // 2, (size[1] - height) // 2
        return resized.crop((left, top, left + width, top + height))
    # Resize and Fill: fit inside, the border filled with the median colour of the map's edges
    import numpy as np

    scale = min(scale_x, scale_y)
    size = (
        max(1, min(width, round(image.width * scale))),
        max(1, min(height, round(image.height * scale))),
    )
    resized = image.resize(size, Image.Resampling.LANCZOS)
    pixels = np.asarray(resized)
    edges = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]], axis=0)
    colour = tuple(int(c) for c in np.median(edges, axis=0))
    canvas = Image.new("RGB", (width, height), colour)
    canvas.paste(resized, ((width - size[0]) // 2, (height - size[1]) // 2))
    return canvas


def control_map(unit: ControlUnit, photo: Image.Image | None, width: int, height: int) -> Image.Image:
    """The unit's picture (or the job's photo) through its preprocessor, fitted to the job."""
    from core import preprocess

    picture = unit.image if unit.image is not None else photo
    assert picture is not None  # check_request refused a unit with no picture at all
    made = preprocess.preprocess(
        unit.module,
        picture,
        int(unit.processor_res),
        float(unit.threshold_a),
        float(unit.threshold_b),
    )
    return fit_map(made, width, height, unit.resize_mode)


# -- IP-Adapter scales ------------------------------------------------------------------------
def style_layers(unet: Any) -> tuple[str, str]:
    """InstantStyle's layout and style attention modules (name prefixes of the UNet's processors):
    the last attention of the deepest down block with attention, and the middle one of the
    deepest up block with attention (SDXL: ``down_blocks.2.attentions.1``,
    ``up_blocks.0.attentions.1``; SD 1.x: ``down_blocks.2.attentions.1``,
    ``up_blocks.1.attentions.1``)."""
    down = [i for i, block in enumerate(unet.down_blocks) if hasattr(block, "attentions")]
    up = [i for i, block in enumerate(unet.up_blocks) if hasattr(block, "attentions")]
    layout = style = ""
    if down:
        count = len(unet.down_blocks[down[-1]].attentions)
        layout = f"down_blocks.{down[-1]}.attentions.{count - 1}."
    if up:
        count = len(unet.up_blocks[up[0]].attentions)
        style = f"up_blocks.{up[0]}.attentions.{min(1, count - 1)}."
    return layout, style


def _ip_processors(unet: Any) -> list[tuple[str, Any]]:
    from diffusers.models.attention_processor import (
        IPAdapterAttnProcessor,
        IPAdapterAttnProcessor2_0,
        IPAdapterXFormersAttnProcessor,
    )

    kinds = (IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0, IPAdapterXFormersAttnProcessor)
    return [(name, p) for name, p in unet.attn_processors.items() if isinstance(p, kinds)]


def _layer_scales(unet: Any, units: list[IPAdapterUnit]) -> list[tuple[Any, list[float]]]:
    """Each IP-Adapter processor with its scale per adapter (``weight``, or ``style_weight`` on
    InstantStyle's layers)."""
    layout, style = style_layers(unet)
    table = []
    for name, processor in _ip_processors(unet):
        on_style = bool(layout and name.startswith(layout)) or bool(style and name.startswith(style))
        scales = []
        for unit in units:
            if unit.style_weight is not None and on_style:
                scales.append(float(unit.style_weight))
            else:
                scales.append(float(unit.weight))
        table.append((processor, scales))
    return table


def _active(step: int, steps: int, start: float, end: float) -> bool:
    """diffusers' rule for a ControlNet's start/end (``controlnet_keep``), used for adapters too."""
    steps = max(1, steps)
    return not (step / steps < start or (step + 1) / steps > end)


# -- ControlNet wrappers --------------------------------------------------------------------------
def _cfg_only(
    down: list[torch.Tensor], mid: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Residuals for the prompt's half of a CFG batch only (diffusers puts the unconditional half
    first)."""
    half = mid.shape[0] // 2
    down = [torch.cat([torch.zeros_like(d[:half]), d[half:]]) for d in down]
    mid = torch.cat([torch.zeros_like(mid[:half]), mid[half:]])
    return down, mid


def _units_class(union: bool) -> type:
    """A Multi-ControlNet that runs each ControlNet with its unit's control mode."""
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel
    from diffusers.models.controlnets.multicontrolnet_union import MultiControlNetUnionModel

    base: type = MultiControlNetUnionModel if union else MultiControlNetModel

    class _Units(base):
        def __init__(self, nets: list[Any], modes: list[str], cfg: Callable[[], bool]) -> None:
            super().__init__(nets)
            self.modes = list(modes)
            self.cfg = cfg

        def forward(self, sample: Any, timestep: Any, encoder_hidden_states: Any,
                    controlnet_cond: list[Any], *args: Any, **kwargs: Any) -> Any:
            if union:
                control_type, control_type_idx, conditioning_scale = args[:3] if args else (
                    kwargs.pop("control_type"), kwargs.pop("control_type_idx"),
                    kwargs.pop("conditioning_scale"))
            else:
                conditioning_scale = args[0] if args else kwargs.pop("conditioning_scale")
            kwargs.pop("guess_mode", None)
            kwargs["return_dict"] = False
            down: Any = None
            mid: Any = None
            for i, (net, mode) in enumerate(zip(self.nets, self.modes, strict=True)):
                extra = (
                    {"control_type": control_type[i], "control_type_idx": control_type_idx[i],
                     "from_multi": True}
                    if union else {}
                )
                d, m = net(
                    sample=sample,
                    timestep=timestep,
                    encoder_hidden_states=encoder_hidden_states,
                    controlnet_cond=controlnet_cond[i],
                    conditioning_scale=conditioning_scale[i],
                    guess_mode=mode != BALANCED,  # soft injection
                    **extra,
                    **kwargs,
                )
                if mode == CONTROL_MORE and self.cfg():
                    d, m = _cfg_only(list(d), m)
                if down is None:
                    down, mid = list(d), m
                else:
                    down = [a + b for a, b in zip(down, d, strict=True)]
                    mid = mid + m
            return down, mid

    return _Units


# -- weights kept between jobs --------------------------------------------------------------------
def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return (str(path), stat.st_size, stat.st_mtime_ns)


def _item_key(item: Any) -> tuple[str, int, int]:
    path = Path(item.path)
    if path.is_dir():
        files = sorted(path.rglob("*"))
        size = sum(f.stat().st_size for f in files if f.is_file())
        mtime = max([f.stat().st_mtime_ns for f in files if f.is_file()] or [0])
        return (str(path), size, mtime)
    return _file_key(path)


class _Cache:
    """Model weights only (never anything made from a picture), least recently used out."""

    def __init__(self) -> None:
        self.controlnets: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self.encoders: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self.adapters: OrderedDict[tuple[Any, ...], dict[str, dict[str, torch.Tensor]]] = OrderedDict()
        self.loads = 0  # files read, for tests

    def clear(self) -> None:
        self.controlnets.clear()
        self.encoders.clear()
        self.adapters.clear()

    def _get(self, table: OrderedDict[Any, Any], key: Any, size: int, make: Callable[[], Any]) -> Any:
        if key in table:
            table.move_to_end(key)
            return table[key]
        try:
            value = make()
        except (MemoryError, torch.OutOfMemoryError):
            # what was kept goes, so the next job has the memory back
            self.clear()
            import gc

            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise InputError(
                "control_out_of_memory",
                "The ControlNet and IP-Adapter models do not fit in this device's free memory "
                "beside the checkpoint; use fewer units or a memory mode that offloads.",
            ) from None
        table[key] = value
        while len(table) > size:
            table.popitem(last=False)
        return value

    def controlnet(self, item: Any, dtype: torch.dtype, device: Any) -> Any:
        def make() -> Any:
            self.loads += 1
            return _load_unit_model("controlnet", item, dtype).to(device)

        return self._get(self.controlnets, (_item_key(item), dtype, str(device)),
                         CONTROLNET_CACHE, make)

    def encoder(self, item: Any, dtype: torch.dtype, device: Any) -> Any:
        def make() -> Any:
            self.loads += 1
            return _load_unit_model("clip_vision", item, dtype).to(device)

        return self._get(self.encoders, (_item_key(item), dtype, str(device)), ENCODER_CACHE, make)

    def adapter(self, item: Any) -> dict[str, dict[str, torch.Tensor]]:
        def make() -> Any:
            self.loads += 1
            return _ipadapter_state(item)

        return self._get(self.adapters, (_item_key(item),), ADAPTER_CACHE, make)


_caches: weakref.WeakKeyDictionary[Any, _Cache] = weakref.WeakKeyDictionary()


def cache_for(engine: Any) -> _Cache:
    """The weights kept for one engine."""
    cache = _caches.get(engine)
    if cache is None:
        cache = _caches[engine] = _Cache()
    return cache


def _load_failed(kind: str) -> ModelError:
    if kind == "controlnet":
        return ModelError(
            "controlnet_load_failed",
            "A ControlNet could not be loaded: the file is damaged or is not a ControlNet; "
            "download it again or pick another.",
        )
    if kind == "ipadapter":
        return ModelError(
            "ipadapter_load_failed",
            "An IP-Adapter could not be loaded: the file is damaged or does not fit the checkpoint "
            "or its image encoder; download it again or pick another.",
        )
    return ModelError(
        "clip_vision_load_failed",
        "The CLIP image encoder could not be loaded: the file is damaged or is not a CLIP vision "
        "model; download it again.",
    )


def _load_unit_model(kind: str, item: Any, dtype: torch.dtype) -> Any:
    """A ControlNet (``kind`` "controlnet") or CLIP image encoder ("clip_vision") from its
    library file (core/control_files.py), ready for inference; one sentence when it cannot load."""
    from core import control_files

    loader = control_files.load_controlnet if kind == "controlnet" else control_files.load_clip_vision
    try:
        model = loader(item, dtype)
    except InputError:
        raise
    except (MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as exc:
        log.info("%s refused: %s", kind.replace("_", " "), type(exc).__name__)
        raise _load_failed(kind) from None
    model.requires_grad_(False)
    return model.eval()


def _ipadapter_state(item: Any) -> dict[str, dict[str, torch.Tensor]]:
    try:
        from core.control_files import ipadapter_state

        state = ipadapter_state(item)
    except InputError:
        raise
    except (MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as exc:
        log.info("ip-adapter refused: %s", type(exc).__name__)
        raise _load_failed("ipadapter") from None
    if not state.get("image_proj") or not state.get("ip_adapter"):
        raise _load_failed("ipadapter")
    return state


def encoder_need(state: dict[str, dict[str, torch.Tensor]]) -> tuple[str, int]:
    """What an adapter needs of its CLIP image encoder: ("projection", width) for a plain adapter
    (the image embedding) or ("hidden", width) for Plus/Plus-Face/Full (the penultimate layer)."""
    proj = state["image_proj"]
    if "proj.weight" in proj:
        return ("projection", int(proj["proj.weight"].shape[-1]))
    if "proj_in.weight" in proj:
        return ("hidden", int(proj["proj_in.weight"].shape[-1]))
    if "proj.0.weight" in proj:
        return ("hidden", int(proj["proj.0.weight"].shape[-1]))
    raise _load_failed("ipadapter")


def _encoder_dims(item: Any) -> tuple[int | None, int | None]:
    """(hidden width, projection width) of a clip_vision item, from its detail or config."""
    detail = getattr(item, "detail", None) or {}
    hidden = detail.get("hidden_size", detail.get("width"))
    projection = detail.get("projection_dim", detail.get("projection"))
    path = Path(item.path)
    if (hidden is None or projection is None) and path.is_dir() and (path / "config.json").is_file():
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
            config = config.get("vision_config", config)
            hidden = hidden if hidden is not None else config.get("hidden_size")
            projection = projection if projection is not None else config.get("projection_dim")
        except (OSError, ValueError):
            pass
    return (int(hidden) if hidden is not None else None,
            int(projection) if projection is not None else None)


def _pick_encoder(library: Any, needs: list[tuple[str, int]]) -> Any:
    """The first clip_vision item that fits every adapter of the job (one pipeline has one
    image encoder)."""
    items = _clip_vision_items(library)

    def fits(item: Any, need: tuple[str, int]) -> bool:
        hidden, projection = _encoder_dims(item)
        have = hidden if need[0] == "hidden" else projection
        return have is None or have == need[1]

    for item in items:
        if all(fits(item, need) for need in needs):
            return item
    if all(any(fits(item, need) for item in items) for need in needs):
        # e.g. an SDXL ViT-H Plus-Face with a ViT-bigG plain adapter
        raise InputError(
            "ipadapter_mixed_encoders",
            "The IP-Adapters of one job must use the same CLIP image encoder; use adapters made "
            "for the same encoder (ViT-H or ViT-bigG).",
        )
    raise _encoder_missing()


def _image_processor(encoder: Any) -> Any:
    from transformers import CLIPImageProcessor

    size = int(encoder.config.image_size)
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


# -- the job -------------------------------------------------------------------------------------
class _UnetState:
    """What loading IP-Adapters changes on the shared UNet, to put back exactly."""

    def __init__(self, unet: Any) -> None:
        self.unet = unet
        self.processors = dict(unet.attn_processors)
        self.hid_proj = unet.encoder_hid_proj
        self.hid_type = unet.config.encoder_hid_dim_type
        self.had_text_proj = hasattr(unet, "text_encoder_hid_proj")

    def restore(self) -> None:
        unet = self.unet
        # first: a Plus adapter's Resampler has attention layers of its own, counted as the
        # UNet's while it is there
        unet.encoder_hid_proj = self.hid_proj
        unet.set_attn_processor(dict(self.processors))
        # diffusers sets this field of the (frozen) config directly too
        unet.config.encoder_hid_dim_type = self.hid_type
        if not self.had_text_proj and hasattr(unet, "text_encoder_hid_proj"):
            del unet.text_encoder_hid_proj


def _photo(request: Any) -> Image.Image | None:
    image = getattr(request, "image", None)
    return image if isinstance(image, Image.Image) else None


def _references(unit: IPAdapterUnit, photo: Image.Image | None) -> list[Image.Image] | None:
    """The unit's reference pictures (face crops with ``crop_face``); None when no face was found."""
    pictures = list(unit.images) if unit.images else ([photo] if photo is not None else [])
    if not unit.crop_face:
        return [p.convert("RGB") for p in pictures]
    from core import faces

    crops = []
    for picture in pictures:
        crop = faces.crop_face(picture)
        if crop is not None:
            crops.append(crop)
    return crops or None


def _wipe(value: Any) -> None:
    """Empty the job's lists of pictures in place (a caller's reference to them dies too)."""
    if isinstance(value, list):
        for inner in value:
            _wipe(inner)
        value.clear()


def _pipeline_class(info: Any, mode: str, union: bool) -> Any:
    import diffusers

    mode = "inpaint" if info.variant == "inpaint" else mode
    family = "union" if union else info.arch
    return getattr(diffusers, _PIPELINES[(family, mode)])


def _control_extras(unit: ControlUnit) -> dict[str, Any]:
    # A1111's infotext fields of a unit ("ControlNet 0: Module: canny, Model: ..., ...").
    return {
        "module": unit.module,
        "model": unit.model,
        "weight": float(unit.weight),
        "resize_mode": unit.resize_mode,
        "processor_res": int(unit.processor_res),
        "threshold_a": float(unit.threshold_a),
        "threshold_b": float(unit.threshold_b),
        "guidance_start": float(unit.guidance_start),
        "guidance_end": float(unit.guidance_end),
        "control_mode": unit.control_mode,
        **({"union_type": unit.union_type} if unit.union_type else {}),
    }


def _ip_extras(unit: IPAdapterUnit) -> dict[str, Any]:
    return {
        "model": unit.model,
        "weight": float(unit.weight),
        **({"style_weight": float(unit.style_weight)} if unit.style_weight is not None else {}),
        "guidance_start": float(unit.guidance_start),
        "guidance_end": float(unit.guidance_end),
        "crop_face": bool(unit.crop_face),
    }


@contextmanager
def applied(engine: Any, request: Any, info: Any, pipe: Any = None) -> Iterator[Applied]:
    """The job's units on ``pipe`` (default: the engine's pipeline for the request's mode):
    yields an :class:`Applied`; everything is taken off the model when the block ends, however
    it ends (see the module docstring)."""
    if pipe is None:
        pipe = engine._pipeline(info, request.mode)
    controlnets = list(getattr(request, "controlnets", None) or [])
    adapters = list(getattr(request, "ip_adapters", None) or [])
    if not controlnets and not adapters:
        yield Applied(pipe)
        return
    library = engine.registry.library
    cache = cache_for(engine)
    unet = pipe.unet
    dtype, device = unet.dtype, unet.device
    plan = getattr(engine, "plan", None)
    offloaded = plan is not None and plan.memory_mode != "none"
    if offloaded or device.type == "meta":  # the plan places them (core/pipelines.place)
        device = torch.device("cpu")
    width, height = engine._size(request, info)
    photo = _photo(request)
    saved = _UnetState(unet)
    used = Applied(pipe)
    handles: list[Any] = []
    maps: list[Image.Image] = []
    references: list[list[Image.Image]] = []
    job_pipe: Any = None
    try:
        components: dict[str, Any] = {}
        union = False
        if controlnets:
            nets = [cache.controlnet(library.find("controlnet", u.model), dtype, device)
                    for u in controlnets]
            from diffusers import ControlNetUnionModel

            for index, net in enumerate(nets):
                # a file whose header told no architecture is checked against the UNet here
                if int(net.config.cross_attention_dim) != int(unet.config.cross_attention_dim) or (
                    tuple(net.config.block_out_channels) != tuple(unet.config.block_out_channels)
                ):
                    raise InputError(
                        "controlnet_mismatch",
                        "ControlNet unit {index} does not fit this checkpoint; pick a ControlNet "
                        "made for {model_arch}.",
                        index=index,
                        model_arch=_title(info.arch),
                    )
            kinds = {isinstance(net, ControlNetUnionModel) for net in nets}
            if len(kinds) > 1:
                raise InputError(
                    "union_mixed",
                    "ControlNet-Union models cannot be mixed with other ControlNets in one job; "
                    "use only Union units or only other ones.",
                )
            union = kinds == {True}
            modes_idx = []
            for index, (unit, net) in enumerate(zip(controlnets, nets, strict=True)):
                if union:
                    modes_idx.append(_union_index(unit, net, index))
                elif unit.union_type is not None:
                    raise InputError(
                        "union_type_not_union",
                        "ControlNet unit {index} names a control type, but its model is not a "
                        "ControlNet-Union model; remove the control type or pick a Union model.",
                        index=index,
                    )
            maps.extend(control_map(u, photo, width, height) for u in controlnets)

            def cfg() -> bool:
                return bool(getattr(job_pipe, "do_classifier_free_guidance", False))

            components["controlnet"] = _units_class(union)(
                nets, [u.control_mode for u in controlnets], cfg
            )
            # diffusers wants start < end; a unit with start == end acts on no step: weight 0
            empty = [float(u.guidance_start) >= float(u.guidance_end) for u in controlnets]
            used.kwargs.update({
                "controlnet_conditioning_scale": [
                    0.0 if e else float(u.weight) for u, e in zip(controlnets, empty, strict=True)
                ],
                "control_guidance_start": [
                    0.0 if e else float(u.guidance_start)
                    for u, e in zip(controlnets, empty, strict=True)
                ],
                "control_guidance_end": [
                    1.0 if e else float(u.guidance_end) for u, e in zip(controlnets, empty, strict=True)
                ],
            })
            mode = "inpaint" if info.variant == "inpaint" else request.mode
            key = "image" if mode == "txt2img" and not union else "control_image"
            used.kwargs[key] = maps
            if union:
                used.kwargs["control_mode"] = modes_idx
            used.extras["controlnet"] = [_control_extras(u) for u in controlnets]

        kept: list[IPAdapterUnit] = []
        if adapters:
            face_found: bool | None = None
            for ip_unit in adapters:
                pictures = _references(ip_unit, photo)
                if ip_unit.crop_face:
                    face_found = (face_found is not False) and pictures is not None
                if pictures is None:
                    if not ip_unit.allow_no_face:
                        raise InputError(
                            "no_face_found",
                            "No face was found in the reference photo; use a photo where the face "
                            "is clearly visible, or turn off face cropping.",
                        )
                    continue
                kept.append(ip_unit)
                references.append(pictures)
            if face_found is not None:
                used.extras["face_found"] = face_found
        if kept:
            states = [cache.adapter(library.find("ipadapter", u.model)) for u in kept]
            needs = [encoder_need(state) for state in states]
            encoder = cache.encoder(_pick_encoder(library, needs), dtype, device)
            for kind, width_needed in needs:
                have = encoder.config.hidden_size if kind == "hidden" else encoder.config.projection_dim
                if have != width_needed:
                    raise _encoder_missing()
            components["image_encoder"] = encoder
            components["feature_extractor"] = _image_processor(encoder)
            used.kwargs["ip_adapter_image"] = references
            used.extras["ip_adapter"] = [_ip_extras(u) for u in kept]

        cls = _pipeline_class(info, request.mode, union) if controlnets else type(pipe)
        job_pipe = cls.from_pipe(pipe, **components)
        job_pipe.set_progress_bar_config(disable=True)
        if offloaded and plan is not None:  # as the engine places the pipelines it derives
            from core import pipelines

            pipelines.place(job_pipe, plan)
        if kept:
            try:
                job_pipe.load_ip_adapter(
                    [dict(state) for state in states],
                    subfolder=[""] * len(states),
                    weight_name=[""] * len(states),
                    image_encoder_folder=None,
                )
            except InputError:
                raise
            except (MemoryError, torch.OutOfMemoryError):
                raise
            except Exception as exc:
                log.info("ip-adapter refused: %s", type(exc).__name__)
                raise _load_failed("ipadapter") from None
            table = _layer_scales(unet, kept)
            windows = [(float(u.guidance_start), float(u.guidance_end)) for u in kept]

            def set_scales(step: int | None, steps: int) -> None:
                for processor, scales in table:
                    processor.scale = [
                        s if step is None or _active(step, steps, *window) else 0.0
                        for s, window in zip(scales, windows, strict=True)
                    ]

            set_scales(None, 1)
            if any(window != (0.0, 1.0) for window in windows):
                calls = [0]

                def before_step(module: Any, args: Any) -> None:
                    steps = int(getattr(job_pipe, "_num_timesteps", 0) or 1)
                    set_scales(calls[0], steps)
                    calls[0] += 1

                handles.append(unet.register_forward_pre_hook(before_step))
        used.pipe = job_pipe
        yield used
    except BaseException as exc:
        # A failed job's frames (the pipeline's, with its image embeddings) must not keep
        # anything made from a picture alive in an exception a caller holds on to.
        _forget(exc.__traceback__)
        raise
    finally:
        for handle in handles:
            handle.remove()
        _wipe(maps)
        _wipe(references)
        _wipe(used.kwargs.get("ip_adapter_image"))
        used.kwargs.clear()
        used.pipe = pipe
        try:
            saved.restore()
        except Exception as exc:  # the model may still carry this job's adapters: reload it
            log.error("ip-adapter tear-down failed: %s", type(exc).__name__)
            networks = getattr(engine, "_networks", None)
            if networks is not None:
                networks.broken = True
        job_pipe = None  # the job's pipeline (encoder, ControlNet wrapper) goes with the job
        if offloaded and plan is not None and plan.memory_mode == "model-offload":
            # Model offload hooks the shared UNet/VAE/text encoders into the job pipeline's chain
            # (with its ControlNet and image encoder); hook them back into the model's own.
            from core import pipelines

            try:
                pipelines.place(pipe, plan)
            except Exception as exc:  # the next job's placement retries; say it, nothing else
                log.warning("re-placing the model after a unit job failed: %s", type(exc).__name__)


def _forget(tb: Any) -> None:
    """Clear the locals of a traceback's finished frames (``traceback.clear_frames``), and the
    dict a frame's ``locals()`` made: diffusers' pipelines call ``locals()`` every step, and
    Python 3.11 keeps that dict after ``frame.clear()`` until it is synced with the frame again
    (reading ``f_locals`` of the cleared frame empties it)."""
    while tb is not None:
        frame = tb.tb_frame
        try:
            frame.clear()
            _ = frame.f_locals
        except RuntimeError:  # still executing (the engine's own frame): it ends soon anyway
            pass
        tb = tb.tb_next


def _union_index(unit: ControlUnit, net: Any, index: int) -> int:
    kind = unit.union_type or _MODULE_UNION_TYPE.get(unit.module)
    if kind is None:
        raise InputError(
            "union_type_needed",
            "ControlNet unit {index} uses a ControlNet-Union model; say which control type "
            "(canny, depth, openpose, ...) its picture is.",
            index=index,
        )
    number = UNION_TYPES[kind]
    if number >= int(getattr(net.config, "num_control_type", 6)):
        raise InputError(
            "union_type_unsupported",
            "The ControlNet-Union model of unit {index} does not know that control type; pick "
            "another.",
            index=index,
        )
    return number
