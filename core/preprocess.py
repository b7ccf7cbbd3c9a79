"""ControlNet preprocessors that need no weights: the picture a ControlNet unit is given.

Module names are AUTOMATIC1111's ControlNet extension's (what ``/controlnet/module_list`` lists
and API clients send):

``none``       the picture as it is (an uploaded, already made map).
``canny``      OpenCV's Canny edge detector, white edges on black; ``threshold_a`` is the low and
               ``threshold_b`` the high hysteresis threshold (1..255).
``pyracanny``  Fooocus' "PyraCanny": Canny on each colour channel at nine scales of the picture
               (20 % .. 100 %), blended from the smallest up, summed over the channels and
               stretched to 0..255 between the 1st and 99th percentile. It finds structure at
               every resolution, where plain Canny misses what is too fine or too coarse at one.
``invert``     A1111's "invert (from white bg & black line)": a drawing's black lines on white
               become white lines on black, as line-art ControlNets expect.

Sizes follow A1111: ``canny`` and ``pyracanny`` first resize the picture so that its shorter side
is ``processor_res`` pixels (area filter to shrink, cubic to enlarge; the picture is padded by edge
replication to a multiple of 64 for the detector and the padding cut off again), so the map keeps
the picture's proportions at ``processor_res``. ``none`` and ``invert`` keep the picture's size.
The engine then fits the map to the job's size with the unit's resize mode.

Every number is bounded before any work (:data:`MIN_PROCESSOR_RES` .. :data:`MAX_PROCESSOR_RES`,
thresholds :data:`MIN_THRESHOLD` .. :data:`MAX_THRESHOLD`, a map's longer side at most
:data:`MAX_MAP_SIDE`). Nothing here writes a file or logs.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from core.errors import InputError

MODULES = ("none", "canny", "pyracanny", "invert")
MIN_PROCESSOR_RES, MAX_PROCESSOR_RES = 64, 2048
MIN_THRESHOLD, MAX_THRESHOLD = 1, 255
MAX_MAP_SIDE = 4096  # a very long, thin picture: its map's longer side is capped here
PYRAMID_SCALES = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_PAD_MULTIPLE = 64


def check(module: str, processor_res: int, threshold_a: float, threshold_b: float) -> None:
    """Raise InputError for a module or number that cannot be used (before any work)."""
    if module not in MODULES:
        raise InputError(
            "unknown_control_module",
            "That ControlNet preprocessor is not one Obscura has; /controlnet/module_list lists "
            "them.",
        )
    if module in ("canny", "pyracanny"):
        if not (
            isinstance(processor_res, int)
            and MIN_PROCESSOR_RES <= processor_res <= MAX_PROCESSOR_RES
        ):
            raise InputError(
                "control_res_out_of_range",
                "The preprocessor resolution must be a whole number from {low} to {high}.",
                low=MIN_PROCESSOR_RES,
                high=MAX_PROCESSOR_RES,
            )
        for value in (threshold_a, threshold_b):
            if not (
                isinstance(value, (int, float))
                and math.isfinite(value)
                and MIN_THRESHOLD <= value <= MAX_THRESHOLD
            ):
                raise InputError(
                    "control_threshold_out_of_range",
                    "The Canny thresholds must be numbers from {low} to {high}.",
                    low=MIN_THRESHOLD,
                    high=MAX_THRESHOLD,
                )


def _rgb_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def resize_short_side(pixels: np.ndarray, resolution: int) -> np.ndarray:
    """A1111's resize for a preprocessor: the shorter side becomes ``resolution`` pixels."""
    import cv2

    height, width = pixels.shape[:2]
    k = resolution / min(height, width)
    k = min(k, MAX_MAP_SIDE / max(height, width))
    target = (max(1, round(width * k)), max(1, round(height * k)))
    if target == (width, height):
        return pixels
    interpolation = cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA
    return cv2.resize(pixels, target, interpolation=interpolation)


def _padded(pixels: np.ndarray) -> np.ndarray:
    height, width = pixels.shape[:2]
    pad_h = -height % _PAD_MULTIPLE
    pad_w = -width % _PAD_MULTIPLE
    if not pad_h and not pad_w:
        return pixels
    return np.pad(pixels, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def canny(pixels: np.ndarray, low: float, high: float) -> np.ndarray:
    """White Canny edges on black (uint8, one channel) of an RGB or grey array."""
    import cv2

    return cv2.Canny(pixels, int(low), int(high))


def pyramid_canny(pixels: np.ndarray, low: float, high: float) -> np.ndarray:
    """Fooocus' PyraCanny of an RGB array (uint8, one channel): see the module docstring."""
    import cv2

    height, width = pixels.shape[:2]
    blended: np.ndarray | None = None
    for scale in PYRAMID_SCALES:
        size = (max(1, int(width * scale)), max(1, int(height * scale)))
        small = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
        edges = np.stack(
            [canny(np.ascontiguousarray(small[..., c]), low, high) for c in range(3)], axis=2
        ).astype(np.float32) / 255.0
        if blended is None:
            blended = edges
        else:  # the coarser scales so far, brought up to this scale, weigh three quarters
            blended = cv2.resize(blended, size, interpolation=cv2.INTER_LINEAR)
            blended = blended * 0.75 + edges * 0.25
    assert blended is not None
    summed = blended.sum(axis=2)
    low_value, high_value = np.percentile(summed, 1), np.percentile(summed, 99)
    spread = high_value - low_value
    if spread <= 0:  # no edges anywhere (a flat picture): a black map, not a division by 0
        return np.zeros(summed.shape, dtype=np.uint8)
    stretched = (summed - low_value) / spread * 255.0
    return np.clip(stretched, 0, 255).astype(np.uint8)


def preprocess(
    module: str,
    image: Image.Image,
    processor_res: int = 512,
    threshold_a: float = 100.0,
    threshold_b: float = 200.0,
) -> Image.Image:
    """The control map for ``image`` by A1111 module name (an RGB picture); see the module
    docstring for the sizes. Raises InputError (unknown_control_module, ...) before any work."""
    check(module, processor_res, threshold_a, threshold_b)
    if module == "none":
        return image.convert("RGB")
    if module == "invert":
        return Image.fromarray(255 - _rgb_array(image), "RGB")
    pixels = resize_short_side(_rgb_array(image), processor_res)
    height, width = pixels.shape[:2]
    padded = _padded(pixels)
    if module == "canny":
        edges = canny(padded, threshold_a, threshold_b)
    else:
        edges = pyramid_canny(padded, threshold_a, threshold_b)
    edges = np.ascontiguousarray(edges[:height, :width])
    return Image.fromarray(np.stack([edges] * 3, axis=2), "RGB")
