"""ControlNet and IP-Adapter units of one job (SD 1.x and SDXL), AUTOMATIC1111's ControlNet
extension shape.

A request carries at most :data:`MAX_UNITS` :class:`ControlUnit` and :class:`IPAdapterUnit`
each. :func:`check_request` bounds every number before any work (called from
``Engine.validate``); :func:`applied` is entered by ``Engine.generate`` for the job and gives the
pipeline to call plus its extra keyword arguments. Everything it loads onto the pipeline
(ControlNets, the CLIP image encoder, IP-Adapter attention processors) is taken off again when
it exits, however it exits.

Biometric data: face crops, CLIP image embeddings and preprocessed maps are local variables of
the job only, never logged, never cached, never returned. Only model weights are kept between
jobs (keyed by their library path, like core/networks.py's LoRAs). ``extras`` says
``face_found`` yes/no and the model names, nothing else derived from a picture.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

MAX_UNITS = 4
MIN_WEIGHT, MAX_WEIGHT = 0.0, 2.0
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 1.0
MIN_PROCESSOR_RES, MAX_PROCESSOR_RES = 64, 2048
MIN_THRESHOLD, MAX_THRESHOLD = 0.0, 255.0
MAX_REFERENCES = 4  # reference pictures per IP-Adapter unit

CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
MODULES = ("none", "canny", "pyracanny", "invert")
# ControlNet-Union (xinsir's controlnet-union-sdxl-1.0 / ProMax): control type → control_mode index.
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
    "seg": 5,
    "tile": 6,
    "repaint": 7,
}
ARCHES = ("sd1", "sdxl")


@dataclass
class ControlUnit:
    """One ControlNet unit (A1111's ControlNet extension unit)."""

    model: str  # library name, kind "controlnet"
    image: Image.Image | None = None  # the unit's picture (None: the job's photo)
    module: str = "none"  # preprocessor: "none", "canny", "pyracanny", "invert" (core/preprocess.py)
    weight: float = 1.0  # 0..2
    guidance_start: float = 0.0  # 0..1
    guidance_end: float = 1.0  # 0..1, >= start
    control_mode: str = "Balanced"  # one of CONTROL_MODES
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
    style_weight: float | None = None  # InstantStyle's layout/style blocks; None = weight everywhere
    crop_face: bool = False  # crop the face (core/faces.py) from each reference before encoding
    allow_no_face: bool = False  # no face found: go on without this unit (else no_face_found)
    guidance_start: float = 0.0
    guidance_end: float = 1.0


def check_request(request: Any, library: Any, info: Any) -> None:
    """Raise :class:`~core.errors.InputError` for any unit the engine cannot run."""


@contextmanager
def applied(engine: Any, request: Any, info: Any, pipe: Any = None) -> Iterator[Applied]:
    """The job's units on ``pipe`` (default: the engine's pipeline for the request's mode):
    yields an :class:`Applied` (the pipeline to call + extra kwargs)."""
    if pipe is None:
        pipe = engine._pipeline(info, request.mode)
    yield Applied(pipe, {}, {})


@dataclass
class Applied:
    """What :func:`applied` gives the engine: the pipeline to call, its extra keyword arguments
    and the result's extras (model names, ``face_found``; nothing face-derived)."""

    pipe: Any
    kwargs: dict[str, Any]
    extras: dict[str, Any]
