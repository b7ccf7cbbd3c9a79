"""Turning untrusted upload bytes into a clean picture that carries nothing but pixels.

Order matters: the byte limit is checked before anything is parsed, the format is recognised by
its first bytes, and the pixel count is read from the header before any pixel is decoded, so a
small file that declares a huge picture (a decompression bomb) is refused at once.

What comes out is a brand-new image built from the decoded pixels alone: EXIF (with GPS, camera
serial numbers, thumbnails), XMP, ICC profiles, comments and PNG text chunks never reach it.
EXIF orientation is applied first, so a phone photo stands the right way up.
"""

from __future__ import annotations

import io
from typing import Literal

from PIL import Image, ImageOps

from privacy.errors import ScrubError

ACCEPTED = "Only PNG, JPEG and WebP pictures are accepted."
_PILLOW_FORMATS = ["PNG", "JPEG", "WEBP"]

Mode = Literal["RGB", "L"]


def detect_format(data: bytes) -> str | None:
    """``"png"``, ``"jpeg"`` or ``"webp"`` from the first bytes, else ``None``."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def scrub(
    data: bytes,
    *,
    max_bytes: int = 20_000_000,
    max_pixels: int = 40_000_000,
    mode: Mode = "RGB",
) -> Image.Image:
    """Decode ``data`` into a fresh image with no metadata (``mode`` "RGB", or "L" for masks).

    Raises :class:`ScrubError` with one sentence when the upload is refused.
    """
    if mode not in ("RGB", "L"):
        raise ValueError("mode must be 'RGB' or 'L'")
    if len(data) > max_bytes:
        raise ScrubError(
            "upload_too_large",
            "The picture is larger than {megabytes} MB; send a smaller file.",
            megabytes=f"{max_bytes / 1_000_000:g}",
        )
    if detect_format(data) is None:
        raise ScrubError("upload_format", ACCEPTED)
    try:
        # Reads the header only. Pillow refuses > 2x its own MAX_IMAGE_PIXELS here; our limit
        # below is the one that decides. (No warnings.catch_warnings: it is not thread-safe.)
        source = Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS)
    except Image.DecompressionBombError:
        raise _too_many_pixels(max_pixels) from None
    except (OSError, SyntaxError, ValueError):
        raise ScrubError(
            "upload_damaged", f"The picture could not be read; it may be damaged. {ACCEPTED}"
        ) from None
    with source:
        width, height = source.size
        if width <= 0 or height <= 0 or width * height > max_pixels:
            raise _too_many_pixels(max_pixels)
        try:
            source.seek(0)  # animated PNG/WebP, MPO (phone cameras): the first frame only
            source.load()
            upright = ImageOps.exif_transpose(source)
            pixels = _to_mode(upright, mode)
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
            raise ScrubError(
                "upload_damaged", "The picture could not be read; it may be damaged or cut short."
            ) from None
    # A brand-new image from raw pixel bytes: no info dict, no palette, no profile survives.
    clean = Image.frombytes(mode, pixels.size, pixels.tobytes())
    return clean


def scrub_mask(
    data: bytes, *, max_bytes: int = 20_000_000, max_pixels: int = 40_000_000
) -> Image.Image:
    """Like :func:`scrub` for an inpainting mask: one grey channel ("L")."""
    return scrub(data, max_bytes=max_bytes, max_pixels=max_pixels, mode="L")


def _to_mode(image: Image.Image, mode: Mode) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        # Transparent areas become white for photos (what a viewer shows) and black for masks
        # (transparent = not painted = keep).
        background = (255, 255, 255, 255) if mode == "RGB" else (0, 0, 0, 255)
        flat = Image.new("RGBA", rgba.size, background)
        flat.alpha_composite(rgba)
        return flat.convert(mode)
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # 16-bit and float greys: scale to 8 bits instead of clipping to white.
        image = image.point(lambda value: value / 256).convert("L")
    return image.convert(mode)


def _too_many_pixels(max_pixels: int) -> ScrubError:
    return ScrubError(
        "upload_too_many_pixels",
        "The picture has more than {megapixels} megapixels; send a smaller one.",
        megapixels=f"{max_pixels / 1_000_000:g}",
    )
