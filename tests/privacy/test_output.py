"""Output files: only the AI-generated label, unless the user opted in to parameters."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from privacy.output import GENERATED, PHOTO_BASED, encode_picture

# Keys Pillow reports that are file structure, not metadata a person could be identified by.
STRUCTURAL = {
    "png": set(),
    "jpeg": {"jfif", "jfif_version", "jfif_unit", "jfif_density"},
    "webp": {"loop", "background"},
}
FORMATS = ["png", "webp", "jpeg"]


def picture_with_baggage() -> Image.Image:
    image = Image.new("RGB", (16, 8), (10, 200, 30))
    # What a pipeline or loader may have attached; none of it must reach the file.
    image.info.update(
        {
            "parameters": "SECRET-PROMPT",
            "exif": b"Exif\x00\x00SECRET",
            "comment": b"SECRET",
            "icc_profile": b"SECRET-ICC",
            "dpi": (300, 300),
        }
    )
    return image


def reopen(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def xmp_of(image: Image.Image) -> bytes:
    xmp = image.info["xmp"]
    return xmp if isinstance(xmp, bytes) else xmp.encode()


@pytest.mark.parametrize("fmt", FORMATS)
def test_only_the_ai_label_is_present_by_default(fmt: str) -> None:
    data = encode_picture(picture_with_baggage(), fmt, photo_based=False)  # type: ignore[arg-type]
    reopened = reopen(data)
    assert reopened.format == fmt.upper()
    extra = set(reopened.info) - STRUCTURAL[fmt] - {"xmp", "XML:com.adobe.xmp"}
    assert extra == set(), extra
    assert not reopened.getexif()
    assert b"SECRET" not in data
    xmp = xmp_of(reopened)
    assert b"<Iptc4xmpExt:DigitalSourceType>" + GENERATED.encode() in xmp
    assert b"composite" not in xmp
    # Nothing else in the label: no tool name, date, creator or description.
    for word in (b"CreatorTool", b"CreateDate", b"dc:creator", b"description", b"Obscura"):
        assert word not in xmp


@pytest.mark.parametrize("fmt", FORMATS)
def test_photo_based_pictures_say_composite(fmt: str) -> None:
    reopened = reopen(encode_picture(picture_with_baggage(), fmt, photo_based=True))  # type: ignore[arg-type]
    assert PHOTO_BASED.encode() in xmp_of(reopened)


@pytest.mark.parametrize("fmt", FORMATS)
def test_parameters_are_embedded_only_when_given(fmt: str) -> None:
    text = "a lighthouse at dusk\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42"
    with_parameters = encode_picture(
        Image.new("RGB", (8, 8)),
        fmt,
        photo_based=False,  # type: ignore[arg-type]
        parameters=text,
    )
    without = encode_picture(Image.new("RGB", (8, 8)), fmt, photo_based=False)  # type: ignore[arg-type]
    assert b"lighthouse" not in without
    reopened = reopen(with_parameters)
    if fmt == "png":
        assert reopened.info["parameters"] == text
    else:
        comment = reopened.getexif().get_ifd(0x8769)[0x9286]
        assert comment.startswith(b"UNICODE\x00")
        assert comment[8:].decode("utf-16-be") == text


@pytest.mark.parametrize("fmt", FORMATS)
def test_pixels_survive(fmt: str) -> None:
    reopened = reopen(encode_picture(picture_with_baggage(), fmt, photo_based=False)).convert("RGB")  # type: ignore[arg-type]
    assert reopened.size == (16, 8)
    r, g, b = reopened.getpixel((4, 4))  # type: ignore[misc]
    assert abs(r - 10) < 8 and abs(g - 200) < 8 and abs(b - 30) < 8


def test_png_keeps_transparency_and_jpeg_drops_it() -> None:
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert reopen(encode_picture(image, "png", photo_based=False)).mode == "RGBA"
    assert reopen(encode_picture(image, "jpeg", photo_based=False)).mode == "RGB"


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError):
        encode_picture(Image.new("RGB", (4, 4)), "gif", photo_based=False)  # type: ignore[arg-type]
