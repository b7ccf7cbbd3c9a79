"""Pictures in and out of the API, all in memory.

In: a base64 string (plain or a ``data:`` URL) is size-checked before it is decoded and decoded
strictly; the bytes go to the run (:mod:`webui.run`), which scrubs them. Out (progress
previews): :func:`privacy.output.encode_picture` (the AI label only), base64-encoded. Nothing
here touches a file.
"""

from __future__ import annotations

import base64
import binascii

from PIL import Image

from privacy.output import encode_picture
from webui.api.problems import ApiError


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


def encode_base64_png(image: Image.Image, *, photo_based: bool, parameters: str | None) -> str:
    png = encode_picture(image, "png", photo_based=photo_based, parameters=parameters)
    return base64.b64encode(png).decode("ascii")
