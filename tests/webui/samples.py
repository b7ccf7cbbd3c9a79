"""Sample inputs and constants shared by the web tests."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

PASSWORD = "correct horse battery staple"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def tiny_photo(color=(200, 40, 40), size=(64, 64), exif_gps: bool = True) -> bytes:
    """A JPEG with a GPS EXIF block and a camera model: what phones send."""
    image = Image.new("RGB", size, color)
    exif = Image.Exif()
    exif[0x0110] = "CanaryCam 3000"  # Model
    if exif_gps:
        exif.get_ifd(0x8825)[2] = (48.0, 51.0, 30.0)  # GPSLatitude
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif, comment=b"CANARY-COMMENT")
    return buffer.getvalue()
