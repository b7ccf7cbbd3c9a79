"""Pictures in and out of the API, all in memory.

In: a base64 string (plain or a ``data:`` URL) is size-checked before it is decoded, decoded
strictly, then rebuilt by :func:`privacy.scrub.scrub` from its pixels alone (no EXIF/GPS, XMP,
ICC, text). Out: :func:`privacy.output.encode_picture` (the AI label, plus the settings only
when the account opted in), base64-encoded. Nothing here touches a file.
"""

from __future__ import annotations

import base64
import binascii
import io

from PIL import Image, ImageFilter, ImageOps

from privacy.errors import PrivacyError
from privacy.output import encode_picture
from privacy.scrub import scrub, scrub_mask
from webui.api.problems import ApiError, input_problem


def decode_base64(text: object, field: str, max_bytes: int) -> bytes:
    """The bytes of a base64 picture; a 422 naming ``field`` when it is not base64."""
    if not isinstance(text, str) or not text.strip():
        raise ApiError(422, "bad_base64", f"{field}: expected a base64-encoded picture.", field)
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    if len(text) > (max_bytes // 3 + 1) * 4 + 1024:
        megabytes = f"{max_bytes / 1_000_000:g}"
        raise ApiError(
            413, "upload_too_large",
            f"{field}: the picture is larger than {megabytes} MB; send a smaller file.", field,
        )
    compact = "".join(text.split())
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            422, "bad_base64", f"{field}: this is not valid base64; send a base64-encoded PNG, "
            "JPEG or WebP picture.", field,
        ) from None


def clean_picture(
    text: object, field: str, *, max_bytes: int, max_pixels: int, mask: bool = False
) -> Image.Image:
    """A decoded, scrubbed picture (RGB, or L for a mask)."""
    data = decode_base64(text, field, max_bytes)
    try:
        if mask:
            return scrub_mask(data, max_bytes=max_bytes, max_pixels=max_pixels)
        return scrub(data, max_bytes=max_bytes, max_pixels=max_pixels)
    except PrivacyError as err:
        raise input_problem(err, field) from None
    finally:
        del data


def prepare_mask(mask: Image.Image, size: tuple[int, int], invert: bool) -> Image.Image:
    """The mask as AUTOMATIC1111 reads it: white = repaint; the photo's size; inverted on request."""
    grey = mask.convert("L")
    if grey.size != size:
        grey = grey.resize(size, Image.Resampling.NEAREST)
    return ImageOps.invert(grey) if invert else grey


def overlay(
    generated: Image.Image, original: Image.Image, mask: Image.Image, blur: int
) -> Image.Image:
    """Keep the original outside the (blurred) mask, as AUTOMATIC1111 does after inpainting."""
    size = generated.size
    base = original.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    alpha = mask.convert("L").resize(size, Image.Resampling.NEAREST)
    if blur > 0:
        alpha = alpha.filter(ImageFilter.GaussianBlur(blur))
    return Image.composite(generated.convert("RGB"), base, alpha)


def png_bytes(image: Image.Image) -> bytes:
    """A plain PNG for the spool (the picture is already scrubbed). Compression level 1: a
    third of the default's time on photos, about as small (bench/api.py)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def open_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data), formats=["PNG"])
    image.load()
    return image


def encode_base64_png(image: Image.Image, *, photo_based: bool, parameters: str | None) -> str:
    png = encode_picture(image, "png", photo_based=photo_based, parameters=parameters)
    return base64.b64encode(png).decode("ascii")
