"""AUTOMATIC1111's hires fix, the arithmetic and the checks (the passes run in core/engine.py).

The hires fix paints at the request's size, upscales, then repaints the upscaled picture with the
image-to-image pipeline at ``denoising_strength``. The numbers follow A1111's
``StableDiffusionProcessingTxt2Img`` (modules/processing.py):

* **target size** (:func:`hires_target`): ``hr_resize_x``/``hr_resize_y`` both 0 → the first
  pass's size times ``hr_scale`` (``int``, truncated); one of them 0 → the other keeps the
  proportions; both set → scale to cover that box, then crop the overflow in latent units
  (``truncate_x``/``truncate_y``, half on each side). The picture returned is a multiple of 8.
  A target equal to the first pass's size turns the hires fix off, as in A1111.
* **steps** (:func:`second_pass_schedule`): ``hr_second_pass_steps`` 0 means the first pass's
  steps. A1111 runs exactly that many steps in the second pass, on a schedule of
  ``int(steps / min(denoising, 0.999))`` steps started part-way; diffusers' img2img does the same
  when given that schedule and a strength that makes it run ``steps`` of them.
* **upscalers**: a latent mode (``Latent``, ``Latent (bicubic antialiased)``, ...) resizes the
  latents before the second pass; ``None``/``Lanczos``/``Nearest`` and upscaler models decode
  the picture, upscale it and hand it to the second pass, which encodes it again.

``denoising_strength`` 0 skips the second pass: the upscaled picture is returned as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.errors import InputError

if TYPE_CHECKING:
    from core.engine import HiresFix

MAX_HIRES_SCALE = 4.0
LATENT_FACTOR = 8  # A1111's opt_f: pixels per latent cell


@dataclass(frozen=True)
class HiresTarget:
    upscale_width: int  # hr_upscale_to_x: the size the upscaler makes
    upscale_height: int
    truncate_x: int  # latent cells cropped off (half each side)
    truncate_y: int

    @property
    def width(self) -> int:
        """The returned picture's width (a multiple of 8)."""
        return (self.upscale_width // LATENT_FACTOR - self.truncate_x) * LATENT_FACTOR

    @property
    def height(self) -> int:
        return (self.upscale_height // LATENT_FACTOR - self.truncate_y) * LATENT_FACTOR

    def crop_box(self) -> tuple[int, int, int, int]:
        """The part of the upscaled picture (pixels) that is kept."""
        left = self.truncate_x // 2 * LATENT_FACTOR
        top = self.truncate_y // 2 * LATENT_FACTOR
        return left, top, left + self.width, top + self.height


def hires_target(width: int, height: int, hires: HiresFix) -> HiresTarget:
    """A1111's ``calculate_target_resolution`` for a first pass of ``width`` x ``height``."""
    resize_x, resize_y = int(hires.resize_x), int(hires.resize_y)
    if resize_x == 0 and resize_y == 0:
        return HiresTarget(int(width * hires.scale), int(height * hires.scale), 0, 0)
    if resize_y == 0:
        return HiresTarget(resize_x, resize_x * height // width, 0, 0)
    if resize_x == 0:
        return HiresTarget(resize_y * width // height, resize_y, 0, 0)
    if width / height < resize_x / resize_y:
        up_x, up_y = resize_x, resize_x * height // width
    else:
        up_x, up_y = resize_y * width // height, resize_y
    return HiresTarget(
        up_x, up_y, (up_x - resize_x) // LATENT_FACTOR, (up_y - resize_y) // LATENT_FACTOR
    )


def second_pass_steps(first_pass_steps: int, hires: HiresFix) -> int:
    """The steps the second pass runs (A1111: ``hr_second_pass_steps or steps``)."""
    return int(hires.second_pass_steps) or first_pass_steps


def second_pass_schedule(steps: int, denoising: float) -> tuple[int, float]:
    """``(num_inference_steps, strength)`` for diffusers' img2img so that it runs exactly
    ``steps`` steps from where A1111 starts (A1111's ``setup_img2img_steps`` with steps given)."""
    schedule = max(steps, int(steps / min(denoising, 0.999)))
    # diffusers runs int(schedule * strength) steps; the half step keeps rounding off it.
    return schedule, min(1.0, (steps + 0.5) / schedule)


def _number(value: Any, kind: type, code: str, message: str, **params: Any) -> Any:
    if isinstance(value, bool):
        raise InputError(code, message, **params)
    try:
        number = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(code, message, **params) from None
    if number != number or (kind is int and isinstance(value, float) and not value.is_integer()):
        raise InputError(code, message, **params)
    return number


def check_hires(
    hires: HiresFix, width: int, height: int, min_size: int, max_size: int, max_steps: int
) -> HiresTarget:
    """One sentence for any hires field the engine cannot run; the target size otherwise."""
    scale = _number(hires.scale, float, "hires_scale_out_of_range",
                    "Hires fix upscale must be between 1 and {max}.", max=MAX_HIRES_SCALE)
    if not 1.0 <= scale <= MAX_HIRES_SCALE:
        raise InputError("hires_scale_out_of_range",
                         "Hires fix upscale must be between 1 and {max}.", max=MAX_HIRES_SCALE)
    for value in (hires.resize_x, hires.resize_y):
        side = _number(value, int, "hires_size_out_of_range",
                       "Hires fix resize width and height must be 0 or between {min} and {max} "
                       "for this model.", min=min_size, max=max_size)
        if side != 0 and not min_size <= side <= max_size:
            raise InputError("hires_size_out_of_range",
                             "Hires fix resize width and height must be 0 or between {min} and "
                             "{max} for this model.", min=min_size, max=max_size)
    steps = _number(hires.second_pass_steps, int, "hires_steps_out_of_range",
                    "Hires steps must be between 0 (the same as the first pass) and {max}.",
                    max=max_steps)
    if not 0 <= steps <= max_steps:
        raise InputError("hires_steps_out_of_range",
                         "Hires steps must be between 0 (the same as the first pass) and {max}.",
                         max=max_steps)
    denoising = _number(hires.denoising_strength, float, "hires_denoising_out_of_range",
                        "Hires fix denoising strength must be between 0 and 1.")
    if not 0.0 <= denoising <= 1.0:
        raise InputError("hires_denoising_out_of_range",
                         "Hires fix denoising strength must be between 0 and 1.")
    target = hires_target(width, height, hires)
    if not (min_size <= target.width <= max_size and min_size <= target.height <= max_size):
        raise InputError(
            "hires_target_too_large",
            "The hires fix would make a {width}x{height} picture; this model paints between "
            "{min} and {max} pixels a side: lower the upscale or the resize size.",
            width=target.width, height=target.height, min=min_size, max=max_size,
        )
    return target
