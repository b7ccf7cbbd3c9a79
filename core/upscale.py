"""Upscaling by AUTOMATIC1111's names: latent modes, plain pixel resizes and upscaler models.

Three kinds of upscaler, chosen by name exactly as AUTOMATIC1111 lists them:

* **latent modes** (:data:`LATENT_MODES`, A1111's ``shared.latent_upscale_modes``): the hires fix
  resizes the first pass's latents with :func:`torch.nn.functional.interpolate` before the second
  pass; there is no picture in between.
* **pixel upscalers** (:data:`PIXEL_UPSCALERS`): ``None`` (a plain Lanczos resize, as A1111 does
  when no upscaler is chosen), ``Lanczos`` and ``Nearest``.
* **upscaler models** (ESRGAN, RealESRGAN/Compact, SwinIR, DAT, HAT, SPAN, ...): the
  ``upscaler`` items of the model library (:mod:`core.library`), loaded with spandrel from
  ``.safetensors`` only — a pickle is never opened.

spandrel without torchvision. ``import spandrel`` runs ``spandrel/__init__.py``, which imports
its main registry, which imports every architecture; two of them (LaMa, an inpainter, and
RestoreFormer, a face restorer — neither an upscaler) import ``torchvision`` at import time, and
no torchvision wheel that works with the CPU build of torch is reachable (shared/FINDINGS.md).
:func:`load_spandrel` therefore creates the ``spandrel`` package without running its
``__init__`` and imports only the super-resolution architectures it needs, in the main
registry's detection order, into a registry of its own (spandrel's public ``ArchRegistry``).
This is the one path on every install, CPU or CUDA, so the CPU tests cover what the GPU runs;
it depends on spandrel's package layout, hence the pin ``spandrel>=0.4.2,<0.5`` (Makefile).

Bounds: every size is checked before any work (:func:`check_output_size`); an upscaler model
runs on tiles of :data:`TILE` pixels, so its memory does not grow with the picture, and a
cancelled job stops between two tiles.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from core.errors import InputError, JobCancelled, ModelError

log = logging.getLogger("obscura.core")

# AUTOMATIC1111's shared.latent_upscale_modes: name → (interpolate mode, antialias).
LATENT_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
DEFAULT_LATENT_MODE = "Latent"
# AUTOMATIC1111's built-in pixel upscalers ("None" resizes with Lanczos, as A1111's resize_image).
PIXEL_UPSCALERS: dict[str, Image.Resampling] = {
    "None": Image.Resampling.LANCZOS,
    "Lanczos": Image.Resampling.LANCZOS,
    "Nearest": Image.Resampling.NEAREST,
}
# The largest picture an upscale may make (either way: hires fix or extras).
MAX_OUTPUT_SIDE = 8192
MAX_OUTPUT_PIXELS = 4096 * 4096
# Extras' upscaling_resize (A1111's slider goes to 8).
MAX_EXTRAS_SCALE = 8.0
# An upscaler model runs on tiles this big (plus TILE_PAD on each side to hide the seams).
TILE = 192
TILE_PAD = 16
# A1111 runs a model at most three times to reach the target (a 2x model for 8x).
MAX_MODEL_PASSES = 3

# spandrel's architectures that upscale pictures, in its main registry's detection order
# (some detections are looser than others, so the order matters). LaMa and RestoreFormer are
# left out: they import torchvision and are not upscalers.
SPANDREL_ARCHITECTURES = (
    "Compact", "SwiftSRGAN", "HAT", "GRL", "Swin2SR", "SwinIR", "OmniSR", "RGT", "DAT",
    "DITN", "SPAN", "RealCUGAN", "SAFMN", "SAFMNBCIE", "DCTLSA", "ATD", "DRCT", "ESRGAN",
    "PLKSR", "SeemoRe", "MoSR", "MoESR", "RCAN", "FDAT",
)
SPANDREL_MISSING = (
    "Upscaler models need the spandrel package, which this install lacks; run `make` again "
    "(it installs spandrel), or choose Lanczos."
)

StepCallback = Callable[[int, int], None]
ShouldStop = Callable[[], bool]


def is_latent_mode(name: str) -> bool:
    return name in LATENT_MODES


def builtin_names() -> list[str]:
    """The names every install has: A1111's ``None``/``Lanczos``/``Nearest`` + latent modes."""
    return [*PIXEL_UPSCALERS, *LATENT_MODES]


def latent_upscale(latents: torch.Tensor, width: int, height: int, mode: str) -> torch.Tensor:
    """Latents (B, C, h, w) resized for a ``width`` x ``height`` picture (A1111's hires fix)."""
    interpolation, antialias = LATENT_MODES[mode]
    return torch.nn.functional.interpolate(
        latents, size=(height // 8, width // 8), mode=interpolation, antialias=antialias
    )


def check_output_size(width: int, height: int) -> None:
    """One sentence for a picture an upscale may not make (before any work is done)."""
    if not (1 <= width <= MAX_OUTPUT_SIDE and 1 <= height <= MAX_OUTPUT_SIDE) or (
        width * height > MAX_OUTPUT_PIXELS
    ):
        raise InputError(
            "upscale_too_large",
            "The upscaled picture would be too large; keep it within {side} pixels a side and "
            "{megapixels} megapixels.",
            side=MAX_OUTPUT_SIDE,
            megapixels=MAX_OUTPUT_PIXELS // 1_000_000,
        )


# -- spandrel -------------------------------------------------------------------------------
_spandrel_lock = threading.Lock()
_spandrel_registry: Any = None


def spandrel_available() -> bool:
    return importlib.util.find_spec("spandrel") is not None


def load_spandrel() -> Any:
    """spandrel's ``ArchRegistry`` holding :data:`SPANDREL_ARCHITECTURES` (see the module
    docstring for why the package's ``__init__`` is not run). ``ModelError`` when missing."""
    global _spandrel_registry
    with _spandrel_lock:
        if _spandrel_registry is not None:
            return _spandrel_registry
        spec = importlib.util.find_spec("spandrel")
        if spec is None or spec.submodule_search_locations is None:
            raise ModelError("upscaler_unavailable", SPANDREL_MISSING)
        if "spandrel" not in sys.modules:
            # The package object only: its __init__ (which imports every architecture) is not
            # run; the submodules below are imported from the package's folder as usual.
            sys.modules["spandrel"] = importlib.util.module_from_spec(spec)
        registry_module = importlib.import_module("spandrel.__helpers.registry")
        registry = registry_module.ArchRegistry()
        for name in SPANDREL_ARCHITECTURES:
            module = importlib.import_module(f"spandrel.architectures.{name}")
            architecture = getattr(module, f"{name}Arch")()
            registry.add(registry_module.ArchSupport.from_architecture(architecture))
        _spandrel_registry = registry
        return registry


# -- upscaler models ------------------------------------------------------------------------
LOAD_FAILED = (
    "The upscaler model could not be loaded: the file is damaged or not a picture upscaler "
    "spandrel knows; choose another upscaler."
)


@dataclass
class _Loaded:
    key: tuple[str, int, int]
    model: Any  # spandrel ImageModelDescriptor
    scale: int


class UpscalerModels:
    """Loads upscaler models from ``.safetensors`` and runs them; keeps the last one loaded."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self._loaded: _Loaded | None = None
        self._lock = threading.Lock()

    def load(self, path: Path) -> _Loaded:
        if path.suffix.lower() != ".safetensors":
            # The library refuses pickles unopened; this is the last line of that rule.
            raise ModelError("upscaler_refused", "Upscaler models must be .safetensors files.")
        try:
            stat = path.stat()
        except OSError:
            raise ModelError(
                "upscaler_missing",
                "The upscaler model's file was removed from the models folder; choose another "
                "upscaler.",
            ) from None
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if self._loaded is not None and self._loaded.key == key:
            return self._loaded
        registry = load_spandrel()
        self._loaded = None  # one upscaler model in memory at a time
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
            model = registry.load(state)
        except Exception as exc:  # a damaged file and an unknown layout alike: one sentence
            log.warning("upscaler load failed: %s", type(exc).__name__)
            raise ModelError("upscaler_load_failed", LOAD_FAILED) from None
        if (
            getattr(model, "purpose", None) != "SR"
            or getattr(model, "input_channels", 3) != 3
            or getattr(model, "output_channels", 3) != 3
            or int(getattr(model, "scale", 1)) < 2
        ):
            raise ModelError(
                "upscaler_not_upscaler",
                "The chosen model is not a picture upscaler (it restores faces, removes noise "
                "or works on other channels); choose another upscaler.",
            )
        model.to(torch.device(self.device)).eval()
        self._loaded = _Loaded(key, model, int(model.scale))
        return self._loaded

    def upscale(
        self,
        path: Path,
        image: Image.Image,
        width: int,
        height: int,
        should_stop: ShouldStop | None = None,
        on_tile: StepCallback | None = None,
    ) -> Image.Image:
        """``image`` upscaled by the model at ``path`` to exactly ``width`` x ``height``
        (A1111: run the model until the picture is at least that big, then Lanczos)."""
        check_output_size(width, height)
        with self._lock:
            loaded = self.load(path)
            picture = image.convert("RGB")
            for _ in range(MAX_MODEL_PASSES):
                if picture.width >= width and picture.height >= height:
                    break
                if picture.width * loaded.scale * picture.height * loaded.scale > (
                    4 * MAX_OUTPUT_PIXELS
                ):
                    break  # one more pass would only be thrown away by the resize
                picture = self._run(loaded, picture, should_stop, on_tile)
        if picture.size != (width, height):
            picture = picture.resize((width, height), Image.Resampling.LANCZOS)
        return picture

    def _run(
        self,
        loaded: _Loaded,
        image: Image.Image,
        should_stop: ShouldStop | None,
        on_tile: StepCallback | None,
    ) -> Image.Image:
        scale = loaded.scale
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
        source = pixels.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        _, _, height, width = source.shape
        out = np.empty((height * scale, width * scale, 3), dtype=np.uint8)
        rows, cols = math.ceil(height / TILE), math.ceil(width / TILE)
        device = torch.device(self.device)
        done = 0
        for row in range(rows):
            for col in range(cols):
                if should_stop is not None and should_stop():
                    raise JobCancelled()
                y0, x0 = row * TILE, col * TILE
                y1, x1 = min(y0 + TILE, height), min(x0 + TILE, width)
                py0, px0 = max(0, y0 - TILE_PAD), max(0, x0 - TILE_PAD)
                py1, px1 = min(height, y1 + TILE_PAD), min(width, x1 + TILE_PAD)
                piece = source[:, :, py0:py1, px0:px1].to(device)
                with torch.inference_mode():
                    result = loaded.model(piece).float().clamp_(0.0, 1.0).cpu()
                oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
                tile = result[0, :, oy : oy + (y1 - y0) * scale, ox : ox + (x1 - x0) * scale]
                out[y0 * scale : y1 * scale, x0 * scale : x1 * scale] = (
                    tile.mul(255.0).round_().to(torch.uint8).permute(1, 2, 0).numpy()
                )
                done += 1
                if on_tile is not None:
                    on_tile(done, rows * cols)
        return Image.fromarray(out, "RGB")


def resize_pixels(image: Image.Image, width: int, height: int, name: str) -> Image.Image:
    """A built-in pixel upscaler (``None``, ``Lanczos``, ``Nearest``)."""
    picture = image.convert("RGB")
    if picture.size == (width, height):
        return picture
    return picture.resize((width, height), PIXEL_UPSCALERS[name])
